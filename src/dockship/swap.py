"""One node's swap, as one scope (compose's recreate, pipx's preserve).

    prepare  (ahead of the node's turn: pull, read what runs, create the new container)
    leave    (gates: pre_node hook, balancer drain)          refused: nothing changed
    stop     the old container, *kept*
    start    the new one
    gate     health: it must answer, then stay healthy min_healthy seconds
    join     (gates: balancer ready, post_node hook)
    = UPDATED

Any exit from stop onwards that is not a success puts the node back: the
new container's last log lines are kept, it is removed, the old one is
started again and proven healthy, and the node rejoins. If even that fails
the node is BROKEN and the report names it (exit 4). `undo` is the same
road walked back for a node that succeeded, when a later node fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace

from dockship.config import HealthCheck
from dockship.errors import DockshipError, last_line
from dockship.failures import engine_problem
from dockship.gates import GateRefused, Gates
from dockship.halt import Halt
from dockship.health import State
from dockship.hooks import HookContext
from dockship.nodeops import Launch, NodeOps
from dockship.nodestate import Running
from dockship.observer import Phase, RollObserver
from dockship.plan import NodeStep, RollPlan
from dockship.report import NodeOutcome, NodeResult
from dockship.runtime import Runtime


@dataclass(frozen=True)
class Prepared:
    """A node made ready ahead of its turn: what it runs, and the new container (created)."""

    old: Running | None
    new_id: str


@dataclass(frozen=True)
class Swapped:
    """A successful swap, kept to undo it if a later node fails."""

    step: NodeStep
    old_id: str | None
    new_id: str


@dataclass(frozen=True)
class SwapRules:
    """What every node's swap of one roll shares."""

    plan: RollPlan
    check: HealthCheck            # the gate a new container must pass
    restore_check: HealthCheck    # the gate of a container put back
    stop_timeout: float
    gates: Gates
    halt: Halt
    observer: RollObserver
    warn: Callable[[str], None]
    runtime: Runtime | None = None   # what new containers run with (env, secrets, ports)


class NodeSwap:
    """prepare(), then run() once; undo() if a later node fails."""

    def __init__(self, rules: SwapRules, ops: NodeOps, step: NodeStep):
        self.rules = rules
        self.ops = ops
        self.step = step
        self.name = step.node.name

    # -- ahead of the node's turn -----------------------------------------------------

    def prepare(self) -> Prepared:
        """Pull if needed, read what runs, create (not start) the new container."""
        ref = f"{self.rules.plan.target.repository}@{self.step.to_digest}"
        if not self.ops.has_image(ref):
            if not self.step.pull:
                raise DockshipError(f"image {ref} is no longer on the node")
            self.say(Phase.PULLING)
            self.ops.pull(ref, lambda detail: self.say(Phase.PULLING, detail))
        old = self.ops.current()
        plan = self.rules.plan
        try:
            new_id = self.ops.create(Launch(plan.env, ref, self.step.to_tag, self.step.to_digest,
                                            plan.deploy_id, old, self.rules.runtime))
        except Exception as exc:
            raise DockshipError(f"could not create the new container: {_short(exc)}") from exc
        return Prepared(old, new_id)

    # -- the node's turn --------------------------------------------------------------

    def run(self, prepared: Future, check: HealthCheck | None = None
            ) -> tuple[NodeOutcome, Swapped | None]:
        """Swap the node; never raises: a failure is an outcome, the node put back."""
        t0 = time.monotonic()
        try:
            return self._run(prepared, check or self.rules.check, t0)
        except Exception as exc:  # noqa: BLE001 - a bug must not lose the node's outcome
            reason = f"unexpected error: {_short(exc)}; the node's state is unknown, check it"
            self.say(Phase.BROKEN, reason)
            return self.outcome(NodeResult.BROKEN, t0, reason), None

    def _run(self, prepared: Future, check: HealthCheck, t0: float
             ) -> tuple[NodeOutcome, Swapped | None]:
        if not prepared.done():
            self.say(Phase.PULLING)
        try:
            ready: Prepared = prepared.result()
        except Exception as exc:  # noqa: BLE001 - any failure before a change: nothing changed
            self.say(Phase.FAILED, "not prepared")
            return self.outcome(NodeResult.FAILED, t0,
                                f"{_short(exc)}; nothing changed on this node"), None
        halt = self.rules.halt
        if halt.is_set():   # not its turn after all; the roll removes what was prepared
            return self.outcome(NodeResult.NOT_REACHED, t0, halt.reason), None
        ctx = self.context()
        try:
            self.rules.gates.leave(ctx, halt, self.say)
        except GateRefused as exc:
            self.discard(ready.new_id)
            self.say(Phase.FAILED, str(exc))
            return self.outcome(NodeResult.FAILED, t0, f"{exc}; nothing changed on this node"), None
        try:
            reason = self._swap(ready, check, ctx)
        except GateRefused as exc:
            return self._put_back(ready, ctx, str(exc), t0, rejoined=exc.joined), None
        except Exception as exc:  # noqa: BLE001 - whatever broke, the old container goes back
            return self._put_back(ready, ctx, engine_problem(exc, "swap the containers"), t0), None
        if reason is not None:
            return self._put_back(ready, ctx, reason, t0), None
        self.say(Phase.UPDATED, "")
        return (self.outcome(NodeResult.UPDATED, t0),
                Swapped(self.step, ready.old.id if ready.old else None, ready.new_id))

    def _swap(self, ready: Prepared, check: HealthCheck, ctx: HookContext) -> str | None:
        """Stop old, start new, gate, join; the reason it failed, or None."""
        if ready.old is not None:
            self.say(Phase.STOPPING, ready.old.tag or "")
            self.ops.stop(ready.old.id, self.rules.stop_timeout)
        self.say(Phase.STARTING, self.step.to_tag)
        self.ops.start(ready.new_id)
        self.say(Phase.HEALTH, "waiting")
        verdict = self.ops.probe(ready.new_id, check, cancel=self.rules.halt,
                                 on_update=lambda v: self.say(Phase.HEALTH, v.reason))
        if verdict.state is not State.HEALTHY:
            return verdict.reason
        self.rules.gates.join(ctx, self.rules.halt, self.say)
        return None

    def _put_back(self, ready: Prepared, ctx: HookContext, reason: str, t0: float,
                  rejoined=()) -> NodeOutcome:
        """The new version failed here: keep its last words, then start the old one again."""
        try:
            logs = self.ops.logs(ready.new_id)
        except Exception:  # noqa: BLE001 - last words are best effort (the engine may be gone)
            logs = []
        if rejoined:
            self.rules.gates.leave_quietly(ctx, self.say, only=rejoined)
        self.say(Phase.PUTTING_BACK, self.step.from_tag or "")
        self.discard(ready.new_id)
        problem = self._start_old(ready.old.id, ctx) if ready.old is not None else None
        if problem:
            self.say(Phase.BROKEN, problem)
            return self.outcome(NodeResult.BROKEN, t0, f"{reason}; and {problem}", logs)
        self.say(Phase.FAILED, reason)
        return self.outcome(NodeResult.FAILED, t0, reason, logs)

    # -- walking it back --------------------------------------------------------------

    def undo(self, done: Swapped) -> NodeOutcome:
        """Put a swapped node back on its previous container (a later node failed)."""
        t0 = time.monotonic()
        if done.old_id is None:
            self.say(Phase.KEPT, "no previous version to go back to")
            return self.outcome(NodeResult.KEPT, t0,
                                "no previous version to go back to; left on the new one")
        self.say(Phase.ROLLING_BACK, self.step.from_tag or "")
        ctx = self.context(back=True)
        try:
            self.rules.gates.leave_quietly(ctx, self.say)
            self.ops.stop(done.new_id, self.rules.stop_timeout)
        except Exception as exc:  # noqa: BLE001 - the node keeps the new version, reported
            problem = engine_problem(exc, "stop the new container")
            self.say(Phase.BROKEN, problem)
            return self.outcome(NodeResult.BROKEN, t0, problem)
        problem = self._start_old(done.old_id, ctx)
        if problem:
            self._restart_new(done.new_id, ctx)   # the new version beats nothing at all
            self.say(Phase.BROKEN, problem)
            return self.outcome(NodeResult.BROKEN, t0, problem)
        self.say(Phase.ROLLED_BACK, self.step.from_tag or "")
        return self.outcome(NodeResult.ROLLED_BACK, t0, f"put back on {self.step.from_tag}")

    def _start_old(self, old_id: str, ctx: HookContext) -> str | None:
        """Start the previous container, prove it healthy, rejoin; a problem, or None."""
        try:
            self.ops.start(old_id)
            verdict = self.ops.probe(old_id, self.rules.restore_check)
        except Exception as exc:  # noqa: BLE001 - reported as the node's problem
            return (f"the previous container could not be started: "
                    f"{engine_problem(exc, 'start it')}")
        if verdict.state is not State.HEALTHY:
            return f"the previous container is not healthy again: {verdict.reason}"
        self.rules.gates.join_quietly(ctx, self.say)
        return None

    def _restart_new(self, new_id: str, ctx: HookContext) -> None:
        try:
            self.ops.start(new_id)
        except Exception:  # noqa: BLE001 - already BROKEN; this was a last try
            return
        self.rules.gates.join_quietly(ctx, self.say)

    def discard(self, new_id: str) -> None:
        """Stop and remove a new container that will not serve (never raises)."""
        try:
            self.ops.stop(new_id, 1)
            self.ops.remove(new_id)
        except Exception as exc:  # noqa: BLE001 - a leftover is pruned by the next roll
            self.rules.warn(f"{self.name}: could not remove an unused container: {_short(exc)}")

    # -- helpers ----------------------------------------------------------------------

    def say(self, phase: Phase, detail: str = "") -> None:
        self.rules.observer.node(self.name, phase, detail)

    def context(self, *, back: bool = False) -> HookContext:
        plan, step = self.rules.plan, self.step
        from_tag, to_tag = (step.to_tag, step.from_tag) if back else (step.from_tag, step.to_tag)
        return HookContext(plan.env, plan.service, plan.deploy_id, from_tag=from_tag,
                           to_tag=to_tag, node=self.name, address=self.ops.address,
                           zone=step.node.zone)

    def outcome(self, result: NodeResult, t0: float, reason: str | None = None,
                logs: list[str] | tuple[str, ...] = ()) -> NodeOutcome:
        s = self.step
        return NodeOutcome(self.name, s.node.zone, s.from_tag, s.to_tag, result,
                           time.monotonic() - t0, reason, tuple(logs), s.changed)


def held_window(check: HealthCheck) -> HealthCheck:
    """The gate of a node whose min_healthy window is held in the background (overlap)."""
    return replace(check, min_healthy=0)


def _short(exc: BaseException) -> str:
    return last_line(exc, 300)
