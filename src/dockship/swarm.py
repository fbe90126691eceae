"""A swarm environment's nodes, driven through one manager (layout: swarmspec.py).

`SwarmFleet` is what a roll, `status` and `history` see of a swarm: its
nodes (the swarm's own, named and zoned by their labels), what each runs,
and `SwarmNode`, the roll's eight node verbs (nodeops.NodeOps) done as
Swarm operations on that node:

    create  ensure the revision service of this deploy exists (no task yet)
    stop    clear the node's cursor label; wait until Swarm has stopped the task
    start   point the cursor at the revision; wait until Swarm runs the task
            (past the container HEALTHCHECK), or say why it failed
    probe   dockship's own health gate on the node's published port, with the
            task's state in place of a container's
    remove  nothing: a revision serves every node that points at it; unused
            ones are pruned after a success, keeping `retain`

So the whole roll engine (canary, batches, zones, bake, drain, put back,
undo in reverse) runs unchanged on a swarm, and only this module knows
that nodes move by labels.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import docker.errors

from dockship.config import Environment, HealthCheck, Node, Service
from dockship.credentials import Credentials
from dockship.errors import DockshipError
from dockship.health import Verdict
from dockship.labels import ENV, SERVICE
from dockship.nodeops import Launch
from dockship.nodestate import NodeState, Running
from dockship.probe import EngineState, watch
from dockship.redact import known
from dockship.runtime import Runtime
from dockship.swarmmanager import SwarmManager
from dockship.swarmspec import (REVISION, Revision, SwarmNodeInfo, container_spec, cursor_label,
                                healthcheck, previous_label, revision_labels, usable_nodes,
                                revision_name, running_task, service_spec, start_problem,
                                stopped, task_state)
from dockship.times import format_time, utc_now

POLL = 0.25              # seconds between looks at a task
PORT_TAKEN = "port is already allocated"   # the old task's container is still going away
PULL_ALLOWANCE = 300.0   # seconds a task may spend pulling its image before it counts as stuck


def port_closed(address: str, port: int) -> bool:
    """Nothing accepts connections on address:port (the old container's binding is gone)."""
    try:
        with socket.create_connection((address, port), timeout=1.0):
            return False
    except OSError:
        return True


class SwarmFleet:
    """The nodes of one service in a swarm environment. Use as a context manager."""

    def __init__(self, env: Environment, service: Service, *,
                 manager: SwarmManager | None = None):
        self.env, self.service = env, service
        self.manager = manager or SwarmManager(env)
        self._revisions: dict[str, Revision | None] = {}
        self._made: set[str] = set()
        self._lock = threading.Lock()
        self._pruned = False
        self._logged_in = False
        self.cursor = cursor_label(env.name, service.name)
        self.previous = previous_label(env.name, service.name)

    def __enter__(self) -> "SwarmFleet":
        self.manager.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.manager.close()

    def call(self, what: str, fn: Callable[[Any], Any]) -> Any:
        return self.manager.call(what, fn)

    # -- the nodes --------------------------------------------------------------------

    def infos(self) -> list[SwarmNodeInfo]:
        """The ready, active swarm nodes that run this service's role (swarmspec.usable_nodes)."""
        raw = self.call("list the swarm's nodes", lambda api: api.nodes())
        return usable_nodes(raw, env=self.env.name, service=self.service.name,
                            role=self.service.role)

    @staticmethod
    def node_record(info: SwarmNodeInfo, manager_url: str) -> Node:
        """The node as planning sees it; its engine is reached through the manager."""
        return Node(name=info.name, docker=manager_url, zone=info.zone, roles=info.roles,
                    address=info.address)

    def labels_of(self, node_id: str) -> tuple[int, dict[str, Any], dict[str, str]]:
        raw = self.call("inspect a swarm node", lambda api: api.inspect_node(node_id))
        spec = dict(raw.get("Spec") or {})
        return int((raw.get("Version") or {}).get("Index") or 0), spec, dict(spec.get("Labels") or {})

    def set_labels(self, node_id: str, changes: Mapping[str, str | None]) -> None:
        """Write node labels (None removes one); a concurrent write of the node is retried."""
        for attempt in range(8):
            version, spec, labels = self.labels_of(node_id)
            for key, value in changes.items():
                if value is None:
                    labels.pop(key, None)
                else:
                    labels[key] = value
            spec["Labels"] = labels
            try:
                self.call("label a swarm node",
                          lambda api: api.update_node(node_id, version, spec))
                return
            except docker.errors.APIError as exc:
                if "out of sequence" not in str(exc) or attempt == 7:
                    raise
                time.sleep(0.05 * (attempt + 1))

    # -- revisions --------------------------------------------------------------------

    def revision(self, name: str | None) -> Revision | None:
        if not name:
            return None
        with self._lock:
            if name in self._revisions:
                return self._revisions[name]
        try:
            raw = self.call("inspect a revision", lambda api: api.inspect_service(name))
            found: Revision | None = Revision.of(raw)
        except docker.errors.NotFound:
            found = None
        with self._lock:
            self._revisions[name] = found
        return found

    def revisions(self) -> list[Revision]:
        """Every revision service of this env/service, oldest first."""
        raw = self.call("list revisions", lambda api: api.services(filters={"label": [
            f"{ENV}={self.env.name}", f"{SERVICE}={self.service.name}", REVISION]}))
        return [Revision.of(r) for r in sorted(raw, key=lambda r: str(r.get("CreatedAt") or ""))]

    def ensure_revision(self, launch: Launch, credentials: Credentials | None) -> str:
        """The revision service of this deploy, made once however many nodes ask."""
        name = revision_name(self.env.name, self.service.name, launch.deploy_id)
        with self._lock:
            if name in self._made:
                return name
            runtime = launch.runtime or Runtime.of(self.service)
            labels = revision_labels(self.env.name, self.service.name, name=name, tag=launch.tag,
                                     digest=launch.digest, deploy_id=launch.deploy_id,
                                     settings=runtime.label(), deployed_at=format_time(utc_now()))
            check = self.service.health
            container = container_spec(ref=launch.ref, command=runtime.command,
                                       env=runtime.environment(), labels=labels,
                                       stop_timeout=self.service.stop_timeout,
                                       health=healthcheck(check, runtime.port))
            spec = service_spec(name=name, env=self.env.name, service=self.service.name,
                                container=container, labels=labels, port=runtime.port,
                                host_port=runtime.host_port, min_healthy=check.min_healthy)
            self._login(credentials, launch.ref.split("/", 1)[0])
            try:
                self.call("create a revision service", lambda api: api.create_service(
                    spec["TaskTemplate"], name=name, labels=spec["Labels"], mode=spec["Mode"],
                    update_config=spec["UpdateConfig"], rollback_config=spec["RollbackConfig"],
                    endpoint_spec=spec["EndpointSpec"]))
            except docker.errors.APIError as exc:
                if exc.status_code != 409:   # made by an earlier attempt of this very deploy
                    raise
            self._made.add(name)
            self._revisions.pop(name, None)
            return name

    def _login(self, credentials: Credentials | None, registry: str) -> None:
        """With registry credentials, log the client in once, so that creating a service sends
        them (X-Registry-Auth) and Swarm passes them to the nodes that pull."""
        if credentials is None or self._logged_in:
            return
        self.call("log in to the registry", lambda api: api.login(
            username=credentials.username, password=credentials.password, registry=registry))
        self._logged_in = True

    def prune(self, keep: int) -> list[str]:
        """Remove revisions no node points at, beyond the newest `keep`; once per roll."""
        with self._lock:
            if self._pruned:
                return []
            self._pruned = True
        raw_nodes = self.call("list the swarm's nodes", lambda api: api.nodes())
        used = {v for n in raw_nodes for k, v in ((n.get("Spec") or {}).get("Labels") or {}).items()
                if k in (self.cursor, self.previous)}
        idle = [r for r in self.revisions() if r.name not in used]
        removed = []
        for r in idle[:max(0, len(idle) - keep)]:
            try:
                self.call("remove an unused revision", lambda api: api.remove_service(r.id))
                removed.append(r.name)
            except docker.errors.NotFound:
                continue
        return removed

    def tasks(self, revision: str, node_id: str) -> list[dict[str, Any]]:
        return self.call("list tasks", lambda api: api.tasks(
            filters={"service": revision, "node": node_id}))

    # -- for the roll -----------------------------------------------------------------

    def ops(self, credentials: Credentials | None = None,
            infos: list[SwarmNodeInfo] | None = None) -> dict[str, "SwarmNode"]:
        return {i.name: SwarmNode(self, i, credentials) for i in infos or self.infos()}

    def read_states(self, infos: list[SwarmNodeInfo], *, rollback: bool = False
                    ) -> list[NodeState]:
        """What every node runs, from one listing of the nodes. A rollback's previous image is
        always there: Swarm's nodes pull it by digest from the registry."""
        out = []
        for info in infos:
            running = SwarmNode(self, info, None).running(info.labels)
            images = frozenset({running.previous_digest}) if (
                rollback and running and running.previous_digest) else frozenset()
            out.append(NodeState(self.node_record(info, self.manager.url), running, images))
        return out


class SwarmNode:
    """NodeOps on one swarm node, for one service (see the module docstring)."""

    def __init__(self, fleet: SwarmFleet, info: SwarmNodeInfo, credentials: Credentials | None):
        self.fleet = fleet
        self.info = info
        self.credentials = credentials
        self.name = info.name
        self.address = fleet.service.publish.reach(info.address)
        self._prev_for: dict[str, str | None] = {}    # revision -> the prev label it runs with
        self._before: dict[str, set[str]] = {}         # revision -> its tasks before start()

    def running(self, labels: Mapping[str, str]) -> Running | None:
        rev = labels.get(self.fleet.cursor)
        found = self.fleet.revision(rev)
        if rev is None or found is None:
            return None
        prev_name = labels.get(self.fleet.previous)
        prev = self.fleet.revision(prev_name)
        self._prev_for.setdefault(rev, prev_name)
        return Running(rev, rev, found.tag, found.digest, prev.tag if prev else None,
                       prev.digest if prev else None, found.settings)

    # -- the verbs --------------------------------------------------------------------

    def current(self) -> Running | None:
        return self.running(self.fleet.labels_of(self.info.id)[2])

    def has_image(self, ref: str) -> bool:
        return True     # the node's engine pulls the revision's image by digest itself

    def pull(self, ref: str, progress: Callable[[str], None]) -> None:
        return None

    def create(self, launch: Launch) -> str:
        name = self.fleet.ensure_revision(launch, self.credentials)
        self._prev_for[name] = launch.previous.id if launch.previous else None
        return name

    def start(self, rev: str) -> None:
        before = {t["ID"] for t in self.fleet.tasks(rev, self.info.id)}
        self._before[rev] = before
        changes: dict[str, str | None] = {self.fleet.cursor: rev}
        if rev in self._prev_for:
            changes[self.fleet.previous] = self._prev_for[rev]
        self.fleet.set_labels(self.info.id, changes)
        limit = self.fleet.service.health.timeout + PULL_ALLOWANCE
        t0 = time.monotonic()
        last = "no task yet"
        while True:
            tasks = [t for t in self.fleet.tasks(rev, self.info.id) if t["ID"] not in before]
            if running_task(tasks, started=True) is not None:
                return      # the container runs; health is the probe's to judge
            problem = start_problem(tasks, "")
            if problem and not (PORT_TAKEN in problem and
                                time.monotonic() - t0 < self.fleet.service.stop_timeout + 10):
                raise DockshipError(f"Swarm could not start {rev} on {self.name}: {problem}")
            if tasks:
                last = task_state(max(tasks, key=lambda t: str(t.get("CreatedAt") or "")))[1]
            if time.monotonic() - t0 > limit:
                raise DockshipError(f"Swarm did not start {rev} on {self.name} within "
                                    f"{limit:g} s (task {last})")
            time.sleep(POLL)

    def stop(self, rev: str, timeout: float) -> None:
        mine = self.fleet.labels_of(self.info.id)[2].get(self.fleet.cursor) == rev
        if mine:
            self.fleet.set_labels(self.info.id, {self.fleet.cursor: None})
        limit = timeout + 30.0
        t0 = time.monotonic()
        # Swarm marks the task rejected ("no longer meets constraints") as soon as the label
        # goes, before the node has stopped its container: the published port tells when it has.
        while not (stopped(self.fleet.tasks(rev, self.info.id))
                   and (not mine or port_closed(self.address, self.fleet.service.host_port))):
            if time.monotonic() - t0 > limit:
                raise DockshipError(f"Swarm did not stop {rev} on {self.name} within {limit:g} s")
            time.sleep(POLL)

    def remove(self, rev: str) -> None:
        return None     # a revision serves every node pointing at it; prune() removes idle ones

    def probe(self, rev: str, check: HealthCheck, *, cancel: threading.Event | None = None,
              on_update: Callable[[Verdict], None] | None = None) -> Verdict:
        return watch(lambda: self._task_state(rev), address=self.address,
                     port=self.fleet.service.host_port, check=check, cancel=cancel,
                     on_update=on_update)

    def _task_state(self, rev: str) -> EngineState:
        tasks = [t for t in self.fleet.tasks(rev, self.info.id)
                 if t["ID"] not in self._before.get(rev, ())]
        if running_task(tasks, started=True) is not None:
            # A task that ran and failed since start() was replaced by Swarm: a crash loop.
            crashed = sum(1 for t in tasks if task_state(t)[1] == "failed"
                          and PORT_TAKEN not in task_state(t)[2])
            return EngineState("running", restarts=crashed)
        newest = max(tasks, key=lambda t: str(t.get("CreatedAt") or ""), default=None)
        if newest is None:
            return EngineState("removed")
        state = task_state(newest)[1]
        if state in ("failed", "rejected"):
            code = ((newest.get("Status") or {}).get("ContainerStatus") or {}).get("ExitCode")
            return EngineState("exited", exit_code=code)
        return EngineState("created" if state != "shutdown" else "exited")

    def logs(self, rev: str, lines: int = 20) -> list[str]:
        """The last lines of this node's task of `rev` (best effort, secrets scrubbed)."""
        try:
            tasks = self.fleet.tasks(rev, self.info.id)
            ids = {t["ID"] for t in tasks}
            raw = self.fleet.call("read task logs", lambda api: api.service_logs(
                rev, details=True, stdout=True, stderr=True, tail=max(lines * 4, 50)))
        except Exception:  # noqa: BLE001 - last words are best effort
            return []
        out = []
        for chunk in raw:
            text = chunk.decode("utf-8", "replace") if isinstance(chunk, bytes) else str(chunk)
            for line in text.splitlines():
                attrs, _, message = line.partition(" ")
                if any(f"com.docker.swarm.task.id={i}" in attrs for i in ids):
                    out.append(message)
        secrets = known()
        return [secrets.scrub(line) for line in out[-lines:]]

    def prune(self, keep: int, protect: set[str]) -> list[str]:
        return self.fleet.prune(keep)
