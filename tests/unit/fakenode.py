"""An in-memory node for the roll's state machine: NodeOps without an engine.

Each fake keeps containers (created / running / exited) and images, and a
*behaviour* per image digest that decides how a container of it does under
the health gate: "healthy", "crash" (exits at once), "503" (answers badly
until the timeout), "slow" (never answers in time), "sickens" (healthy at
first, unhealthy on any later look). Faults are injected per verb, and an
engine can be lost from a given call on. Every verb is logged, so tests
assert on what happened to the node, never on timing.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from dockship.config import (Bake, Environment, HealthCheck, Node, Rollout, Service, SSHSettings,
                             TLSSettings)
from dockship.health import State, Verdict
from dockship.nodeops import Launch
from dockship.nodestate import NodeState, Running
from dockship.plan import RollPlan, Target, plan_roll

REPO = "registry.test:5000/hello"
_ids = itertools.count(1)


def digest(tag: str) -> str:
    return "sha256:" + tag.replace(".", "").ljust(64, "0")[:64]


class EngineLost(ConnectionError):
    """What a call to an engine that stopped answering raises."""


@dataclass
class Box:
    """One container on a fake node."""

    id: str
    tag: str
    digest: str
    state: str = "created"            # created, running, exited, removed
    previous_tag: str | None = None
    previous_digest: str | None = None
    probes: int = 0
    settings: str | None = None       # the settings label it was created with
    environment: dict = field(default_factory=dict)


@dataclass
class Fault:
    verb: str
    error: BaseException
    when: Callable[["FakeNode", tuple], bool] = lambda node, args: True
    times: int = 1


class FakeNode:
    def __init__(self, name: str, *, zone: str | None = None, running: str | None = None,
                 behaviour: dict[str, str] | None = None):
        self.name = name
        self.zone = zone
        self.address = f"10.0.0.{name[-1] if name[-1].isdigit() else 9}"
        self.boxes: dict[str, Box] = {}
        self.images: set[str] = set()
        self.behaviour = dict(behaviour or {})
        self.faults: list[Fault] = []
        self.lost_from: str | None = None      # the verb from which on the engine is gone
        self.lost = False
        self.log: list[tuple[str, ...]] = []
        self.on_verb: Callable[[str, tuple], None] | None = None
        self._guard = threading.Lock()
        if running is not None:
            box = self._box(running)
            box.state = "running"
            self.images.add(f"{REPO}@{digest(running)}")

    # -- set-up --------------------------------------------------------------------------

    def _box(self, tag: str, previous: Running | None = None, runtime=None) -> Box:
        box = Box(f"{self.name}-c{next(_ids)}", tag, digest(tag),
                  previous_tag=previous.tag if previous else None,
                  previous_digest=previous.digest if previous else None,
                  settings=runtime.label() if runtime is not None else None,
                  environment=runtime.environment() if runtime is not None else {})
        self.boxes[box.id] = box
        return box

    def fail(self, verb: str, error: BaseException | None = None, *, times: int = 1,
             when: Callable[["FakeNode", tuple], bool] = lambda node, args: True) -> None:
        self.faults.append(Fault(verb, error or RuntimeError(f"{verb} refused"), when, times))

    def lose_engine(self, at_verb: str) -> None:
        """From the next call of `at_verb` on, every call raises EngineLost."""
        self.lost_from = at_verb

    def state(self) -> NodeState:
        return NodeState(Node(self.name, f"ssh://root@{self.address}", self.zone,
                              address=self.address), self.current(),
                         frozenset(i.split("@")[1] for i in self.images))

    # -- what tests look at ----------------------------------------------------------

    @property
    def serving(self) -> str | None:
        """The tag of the running container, or None."""
        running = [b for b in self.boxes.values() if b.state == "running"]
        assert len(running) <= 1, f"{self.name} runs {len(running)} containers"
        return running[0].tag if running else None

    def verbs(self) -> list[str]:
        return [entry[0] for entry in self.log]

    # -- NodeOps -----------------------------------------------------------------------

    def _call(self, verb: str, *args) -> None:
        with self._guard:
            self.log.append((verb, *map(str, args)))
            if self.lost_from == verb:
                self.lost = True
            if self.lost:
                raise EngineLost(f"connection to {self.address} lost")
            for fault in self.faults:
                if fault.verb == verb and fault.times > 0 and fault.when(self, args):
                    fault.times -= 1
                    raise fault.error
        if self.on_verb is not None:
            self.on_verb(verb, args)

    def current(self) -> Running | None:
        self._call("current")
        for box in reversed(list(self.boxes.values())):
            if box.state == "running":
                return Running(box.id, box.id, box.tag, box.digest, box.previous_tag,
                               box.previous_digest, box.settings)
        return None

    def has_image(self, ref: str) -> bool:
        self._call("has_image", ref)
        return ref in self.images

    def pull(self, ref: str, progress: Callable[[str], None]) -> None:
        self._call("pull", ref)
        progress("1.0/1.0 MB")
        self.images.add(ref)

    def create(self, launch: Launch) -> str:
        self._call("create", launch.tag)
        assert launch.ref in self.images, f"create of {launch.ref} before it was pulled"
        return self._box(launch.tag, launch.previous, launch.runtime).id

    def start(self, cid: str) -> None:
        self._call("start", self.boxes[cid].tag)
        box = self.boxes[cid]
        assert box.state != "removed"
        box.state = "running"
        box.probes = 0

    def stop(self, cid: str, timeout: float) -> None:
        self._call("stop", self.boxes[cid].tag)
        if self.boxes[cid].state == "removed":
            raise RuntimeError(f"No such container: {cid}")   # as an engine answers 404
        if self.boxes[cid].state == "running":
            self.boxes[cid].state = "exited"

    def remove(self, cid: str) -> None:
        self._call("remove", self.boxes[cid].tag)
        if self.boxes[cid].state == "removed":
            raise RuntimeError(f"No such container: {cid}")
        assert self.boxes[cid].state != "running", "removed a running container"
        self.boxes[cid].state = "removed"

    def probe(self, cid: str, check: HealthCheck, *, cancel: threading.Event | None = None,
              on_update=None) -> Verdict:
        box = self.boxes[cid]
        self._call("probe", box.tag)
        box.probes += 1
        if box.state != "running":
            return Verdict(State.FAILED, f"container is {box.state}")
        how = self.behaviour.get(box.tag, "healthy")
        if cancel is not None and cancel.is_set():
            return Verdict(State.FAILED, "interrupted before it was proven healthy")
        if how == "crash":
            box.state = "exited"
            return Verdict(State.FAILED, "container exited with code 1 after 0.2s")
        if how == "503":
            return Verdict(State.FAILED, f"not healthy within {check.timeout:g}s: "
                                         f"GET {check.path} answered 503 (expected 200)")
        if how == "slow":
            return Verdict(State.FAILED, f"not healthy within {check.timeout:g}s: "
                                         f"GET {check.path} got no answer (connection refused)")
        if how == "sickens" and box.probes > 1:
            return Verdict(State.FAILED, f"GET {check.path} answered 500 (expected 200)")
        return Verdict(State.HEALTHY, "healthy after 0.3s")

    def logs(self, cid: str, lines: int = 20) -> list[str]:
        self._call("logs", self.boxes[cid].tag)
        return [f"{self.boxes[cid].tag}: last words"]

    def prune(self, keep: int, protect: set[str]) -> list[str]:
        self._call("prune")
        return []


class Recorder:
    """An observer that keeps every event; can trip a halt when a node reaches a phase."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, str]] = []
        self.notes: list[str] = []
        self.report = None
        self.triggers: list[tuple[str, str, Callable[[], None]]] = []
        self._guard = threading.Lock()

    def when(self, node: str, phase: str, action: Callable[[], None]) -> None:
        self.triggers.append((node, phase, action))

    def planned(self, plan) -> None:
        pass

    def node(self, name: str, phase, detail: str = "") -> None:
        with self._guard:
            self.events.append((name, str(phase), detail))
            fire = [t for t in self.triggers if t[0] == name and t[1] == str(phase)]
            for t in fire:
                self.triggers.remove(t)
        for _, _, action in fire:
            action()

    def phases(self, node: str) -> list[str]:
        return [p for n, p, _ in self.events if n == node]

    def note(self, text: str) -> None:
        self.notes.append(text)

    def finished(self, report) -> None:
        self.report = report


class FakeBalancer:
    """A balancer that records drains and readies and refuses on demand."""

    def __init__(self, refuse_drain: set[str] = frozenset(), refuse_ready: set[str] = frozenset(),
                 refuse_check: bool = False):
        self.refuse_drain, self.refuse_ready = set(refuse_drain), set(refuse_ready)
        self.refuse_check = refuse_check
        self.log: list[tuple[str, str]] = []
        self.out: set[str] = set()

    def check(self, nodes) -> None:
        from dockship.errors import DockshipError
        if self.refuse_check:
            raise DockshipError("backend hello not found")

    def drain(self, ctx, cancel=None) -> str:
        from dockship.errors import DockshipError
        self.log.append(("drain", ctx.node))
        if ctx.node in self.refuse_drain:
            raise DockshipError(f"server {ctx.node} did not drain")
        self.out.add(ctx.node)
        return "0 sessions"

    def ready(self, ctx, cancel=None) -> str:
        from dockship.errors import DockshipError
        self.log.append(("ready", ctx.node))
        if ctx.node in self.refuse_ready:
            raise DockshipError(f"server {ctx.node} stays DOWN")
        self.out.discard(ctx.node)
        return "UP"


def service(**health) -> Service:
    check = HealthCheck(**{"timeout": 5.0, "min_healthy": 1.0, **health})
    return Service("hello", "hello-svc", "hello", 8000, None, (), {}, check, stop_timeout=1.0)


def environment(*, hooks: dict | None = None, **rollout) -> Environment:
    settings = {"canary": 1, "batch": (1,), **rollout}
    if isinstance(settings.get("bake"), (int, float)):
        settings["bake"] = Bake(seconds=float(settings["bake"]))
    return Environment("stage", (), None, SSHSettings(), TLSSettings(), Rollout(**settings),
                       {k: tuple(v) for k, v in (hooks or {}).items()})


def fleet(n: int = 3, *, running: str | None = "1.0.0", zones: str | None = None,
          behaviour: dict[str, str] | None = None) -> dict[str, FakeNode]:
    return {f"node{i}": FakeNode(f"node{i}", running=running,
                                 zone=zones[i - 1] if zones else None, behaviour=behaviour)
            for i in range(1, n + 1)}


def plan_for(nodes: dict[str, FakeNode], env: Environment, svc: Service, tag: str = "1.1.0",
             **kw) -> RollPlan:
    target = Target(svc.name, tag, digest(tag), REPO)
    return plan_roll(env, svc, [n.state() for n in nodes.values()], target, deploy_id="d1", **kw)


@dataclass
class Roll:
    """One roll on fake nodes, ready to run."""

    nodes: dict[str, FakeNode]
    env: Environment
    svc: Service
    plan: RollPlan
    recorder: Recorder = field(default_factory=Recorder)
