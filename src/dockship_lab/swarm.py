"""The lab nodes as one Docker Swarm, for `dockship lab up --swarm` (design §13).

node1 initialises the swarm on its lab address; node2 and node3 join as
managers, so the swarm keeps its quorum when one manager is killed mid-roll
(the failure tests do exactly that); any further node joins as a worker.
Swarm's traffic between nodes (2377/tcp, 7946/tcp+udp, 4789/udp) crosses
the lab bridge, which the DOCKER-USER accept rule of `network` opens
(design §5): without it the joins time out.

Each swarm node carries labels that dockship's Swarm backend reads:
`dockship.name` (the lab node's name), `dockship.zone` and `dockship.roles`
(comma-separated), the same values as the static `lab` environment. The lab
nodes happen to report distinct hostnames (each has its own UTS namespace
named after it), but engines cloned from one machine image often all report
the same hostname, so the `dockship.name` label, not the hostname, is how
nodes are told apart.

State lives on the engines (their data roots keep the swarm across restarts),
so `swarm_up` first looks: a healthy swarm of exactly the lab nodes, each in
its wanted role, is reused as it is. Leftovers of an interrupted run (a node
that left, a node in another swarm, stale entries of nodes long gone) are
repaired inside the swarm holding most lab nodes, so that its services (a
Swarm test's, running now) survive: the odd nodes `swarm leave --force` and
join again, stale entries are removed. When no manager answers with a
quorum, every node leaves (forced) and the swarm is formed anew. Neither
touches the plain containers already on the engines.

The lab talks to the engines over their local unix sockets, as its other
checks do; the manager URL it reports is the `ssh://` one dockship uses.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import docker
import docker.errors
import requests

from dockship_lab.nodes import LabNode
from dockship_lab.process import LabError

MANAGERS = 3                    # a quorum survives one manager down
SWARM_PORT = 2377
ROLES = ("web",)                # the roles of every lab node, as in the `lab` environment
LABEL_NAME = "dockship.name"
LABEL_ZONE = "dockship.zone"
LABEL_ROLES = "dockship.roles"
# Overlay subnets come from here, not from Docker's default 10.0.0.0/8, which
# also holds the lab's own subnets (10.77.x.0/24).
ADDRESS_POOL = "10.210.0.0/16"
READY_TIMEOUT = 90.0            # seen: a few seconds; generous for a loaded CI machine
# After the engines restart (CI after a session's processes were killed) the
# managers elect a leader before any of them lists the nodes; a swarm is only
# formed anew if none has one by then.
LEADER_WAIT = 30.0
_API_TIMEOUT = 60
_INFO_TIMEOUT = 30


@dataclass(frozen=True)
class SwarmNode:
    """One node as the swarm's manager lists it."""

    id: str
    address: str                # Status.Addr: the node's advertised address
    role: str                   # "manager" | "worker"
    ready: bool                 # Status.State == "ready"
    reachable: bool             # a manager the others reach (workers: True)
    labels: Mapping[str, str]
    version: int                # the spec's version, needed to update its labels


@dataclass(frozen=True)
class LocalState:
    """One engine's own view of its swarm membership (`docker info`'s Swarm)."""

    state: str                  # "inactive", "pending", "active", "error", "locked"
    node_id: str
    is_manager: bool            # ControlAvailable


@dataclass(frozen=True)
class SwarmInfo:
    """What `lab status` reports of the swarm."""

    manager: str                # how dockship reaches a manager answering now (node1 unless
                                # its engine is down): ssh://root@ADDRESS
    managers: tuple[str, ...]   # the managers' addresses
    nodes: int                  # ready nodes
    node_ids: Mapping[str, str]  # lab node name -> swarm node ID

    def to_json(self) -> dict[str, Any]:
        return {"manager": self.manager, "managers": list(self.managers), "nodes": self.nodes,
                "node_ids": dict(self.node_ids)}


# -- what the swarm should be (pure) -------------------------------------------------


def wanted_role(position: int) -> str:
    """The role of the lab's node at `position` (0-based): the first three manage."""
    return "manager" if position < MANAGERS else "worker"


def node_labels(n: LabNode, roles: Sequence[str] = ROLES) -> dict[str, str]:
    return {LABEL_NAME: n.name, LABEL_ZONE: n.zone, LABEL_ROLES: ",".join(roles)}


@dataclass(frozen=True)
class Repair:
    """How a swarm a manager lists becomes exactly the lab's nodes, keeping its services."""

    rejoin: tuple[str, ...]         # lab nodes to leave (forced) and join again in their role
    remove: tuple[SwarmNode, ...]   # listed entries that are no lab node's membership now

    @property
    def nothing(self) -> bool:
        return not self.rejoin and not self.remove


def repair_plan(listed: Sequence[SwarmNode], local: Mapping[str, LocalState],
                nodes: Sequence[LabNode]) -> Repair:
    """Which lab nodes are not sound members of the listed swarm, and which entries are stale.

    `local`: each lab node's own view, by name. A sound member is listed under
    its address with the node ID the engine itself reports (else the engine
    sits in some other swarm, or left this one), ready, reachable and in its
    wanted role.
    """
    members, rejoin = set(), []
    for position, n in enumerate(nodes):
        own = local.get(n.name)
        seen = next((s for s in listed if own is not None and s.id == own.node_id
                     and s.address == n.address), None)
        if (seen is not None and own is not None and own.state == "active"
                and seen.role == wanted_role(position) and seen.ready and seen.reachable):
            members.add(seen.id)
        else:
            rejoin.append(n.name)
    return Repair(rejoin=tuple(rejoin), remove=tuple(s for s in listed if s.id not in members))


def is_exactly(listed: Sequence[SwarmNode], local: Mapping[str, LocalState],
               nodes: Sequence[LabNode]) -> bool:
    """Is the listed swarm exactly the lab nodes, all ready, each in its role?"""
    return repair_plan(listed, local, nodes).nothing


def labels_update(current: Mapping[str, str], wanted: Mapping[str, str]) -> dict[str, str] | None:
    """The node's new labels (others kept), or None if it already carries the wanted ones."""
    if all(current.get(k) == v for k, v in wanted.items()):
        return None
    return {**current, **wanted}


# -- engines -------------------------------------------------------------------------


@contextlib.contextmanager
def _engine(n: LabNode, timeout: float = _API_TIMEOUT) -> Iterator[docker.APIClient]:
    client = docker.APIClient(base_url=n.docker_unix, timeout=timeout)
    try:
        yield client
    finally:
        client.close()


_UNREACHABLE = (docker.errors.DockerException, requests.RequestException, OSError)


def local_state(n: LabNode) -> LocalState | None:
    """The engine's own swarm state; None if it does not answer."""
    try:
        # `docker info` waits while the managers elect a leader (seen: over 10 s
        # after the leader left), so the timeout is generous.
        with _engine(n, timeout=_INFO_TIMEOUT) as api:
            info = api.info().get("Swarm") or {}
    except _UNREACHABLE:
        return None
    return LocalState(state=str(info.get("LocalNodeState") or "inactive"),
                      node_id=str(info.get("NodeID") or ""),
                      is_manager=bool(info.get("ControlAvailable")))


def _listed(api: docker.APIClient) -> list[SwarmNode]:
    found = []
    for raw in api.nodes():
        manager = raw.get("ManagerStatus")
        spec, status = raw.get("Spec") or {}, raw.get("Status") or {}
        found.append(SwarmNode(
            id=raw["ID"], address=str(status.get("Addr", "")), role=str(spec.get("Role", "")),
            ready=status.get("State") == "ready",
            reachable=manager is None or manager.get("Reachability") == "reachable",
            labels=dict(spec.get("Labels") or {}), version=int(raw["Version"]["Index"])))
    return found


def _control(nodes: Sequence[LabNode]) -> LabNode | None:
    """The first lab node whose engine answers as a swarm manager."""
    for n in nodes:
        own = local_state(n)
        if own is not None and own.state == "active" and own.is_manager:
            return n
    return None


def _manager_listing(nodes: Sequence[LabNode]) -> tuple[LabNode, list[SwarmNode]] | None:
    """The first manager among `nodes` and its list of the swarm's nodes; None if none answers."""
    manager = _control(nodes)
    if manager is None:
        return None
    try:
        with _engine(manager) as api:
            return manager, _listed(api)
    except _UNREACHABLE:
        return None


def listed_nodes(nodes: Sequence[LabNode]) -> list[SwarmNode] | None:
    """The swarm's nodes as a manager among `nodes` lists them; None if none answers."""
    found = _manager_listing(nodes)
    return None if found is None else found[1]


def info(nodes: Sequence[LabNode]) -> SwarmInfo | None:
    """The swarm the lab nodes form, as a manager among them reports it; None if there is none."""
    found = _manager_listing(nodes)
    if found is None:
        return None
    manager, listed = found
    names = {n.address: n.name for n in nodes}
    return SwarmInfo(manager=manager.docker,
                     managers=tuple(sorted(s.address for s in listed if s.role == "manager")),
                     nodes=sum(s.ready for s in listed),
                     node_ids={names[s.address]: s.id for s in listed if s.address in names})


# -- forming and leaving -----------------------------------------------------------------


def swarm_up(nodes: Sequence[LabNode], report: Callable[[str], None] = lambda text: None) -> SwarmInfo:
    """Make the lab nodes one swarm (reusing an exact one) and label its nodes."""
    if not nodes:
        raise LabError("a swarm needs at least one lab node")
    local = {n.name: s for n in nodes if (s := local_state(n)) is not None}
    down = [n.name for n in nodes if n.name not in local]
    if down:
        raise LabError(f"the engines of {', '.join(down)} do not answer; run `dockship lab up` "
                       "to repair them, then form the swarm")
    found_swarm = _best_swarm_waiting(nodes, local)
    if found_swarm is not None and found_swarm[1].nothing:
        report(f"reusing the swarm of {len(nodes)} node(s)")
    elif found_swarm is not None and _repaired(nodes, *found_swarm, report):
        pass
    else:
        leave(nodes, report)
        _form(nodes, report)
        _wait_ready(nodes)
    _label(nodes)
    found = info(nodes)
    if found is None:
        raise LabError(f"the swarm formed on {nodes[0].name} does not answer as a manager; "
                       f"see its engine's log under /var/lib/dockship-lab/nodes/{nodes[0].name}")
    return found


def _best_swarm(nodes: Sequence[LabNode], local: Mapping[str, LocalState]
                ) -> tuple[LabNode, Repair] | None:
    """The swarm (one of its managers, and its repair) holding the most lab nodes soundly.

    Only a manager that answers with its node list counts: a swarm that lost
    its quorum cannot list (or change) its nodes, and is formed again.
    """
    best: tuple[LabNode, Repair] | None = None
    for n in nodes:
        own = local[n.name]
        if own.state != "active" or not own.is_manager:
            continue
        try:
            with _engine(n, timeout=10) as api:
                plan = repair_plan(_listed(api), local, nodes)
        except _UNREACHABLE:
            continue
        if best is None or len(plan.rejoin) < len(best[1].rejoin):
            best = (n, plan)
    return best


def _best_swarm_waiting(nodes: Sequence[LabNode], local: Mapping[str, LocalState],
                        wait: float = LEADER_WAIT) -> tuple[LabNode, Repair] | None:
    """`_best_swarm`, giving managers that cannot list their nodes yet time to elect a leader."""
    deadline = time.monotonic() + wait
    while True:
        found = _best_swarm(nodes, local)
        managers = [n for n in nodes if local[n.name].state == "active" and local[n.name].is_manager]
        if found is not None or not managers or time.monotonic() > deadline:
            return found
        time.sleep(1)
        fresh = {n.name: s for n in nodes if (s := local_state(n)) is not None}
        local = fresh if len(fresh) == len(nodes) else local


def _repaired(nodes: Sequence[LabNode], manager: LabNode, plan: Repair,
              report: Callable[[str], None]) -> bool:
    """Bring the odd nodes (back) into the manager's swarm, keeping its services; False
    if that cannot be done and the swarm must be formed anew."""
    if manager.name in plan.rejoin:
        return False
    report(f"repairing the swarm of {manager.name}: "
           + ", ".join([*(f"{name} rejoins" for name in plan.rejoin),
                        *(f"stale entry {s.id[:12]} ({s.address}) goes" for s in plan.remove)]))
    try:
        leave([n for n in nodes if n.name in plan.rejoin], report)
        with _engine(manager) as api:
            for stale in plan.remove:
                _remove_entry(api, stale)
        _join(manager, [(position, n) for position, n in enumerate(nodes) if n.name in plan.rejoin],
              report)
        _wait_ready(nodes)
    except (LabError, *_UNREACHABLE) as exc:
        report(f"repair failed ({exc}); forming the swarm anew")
        return False
    return True


def _remove_entry(api: docker.APIClient, stale: SwarmNode) -> None:
    """Remove a node entry; a manager is demoted first (Swarm refuses to remove one)."""
    if stale.role == "manager":
        spec = api.inspect_node(stale.id)["Spec"]
        api.update_node(stale.id, stale.version, {**spec, "Role": "worker"})
    api.remove_node(stale.id, force=True)


def leave(nodes: Sequence[LabNode], report: Callable[[str], None] = lambda text: None) -> list[str]:
    """`swarm leave --force` on every answering node in a swarm; the names of those that left.

    Workers leave first, so managers never see them go missing.
    """
    left = []
    for n in reversed(nodes):
        own = local_state(n)
        if own is None or own.state == "inactive":
            continue
        report(f"{n.name} leaves its swarm ({own.state})")
        try:
            with _engine(n) as api:
                api.leave_swarm(force=True)
        except docker.errors.APIError as exc:
            raise LabError(f"{n.name} cannot leave its swarm: {exc.explanation or exc}") from None
        left.append(n.name)
    return left


def _form(nodes: Sequence[LabNode], report: Callable[[str], None]) -> None:
    first = nodes[0]
    report(f"swarm init on {first.name} ({first.address}:{SWARM_PORT})")
    with _engine(first) as api:
        try:
            api.init_swarm(advertise_addr=first.address,
                           listen_addr=f"{first.address}:{SWARM_PORT}",
                           default_addr_pool=[ADDRESS_POOL], subnet_size=24)
        except docker.errors.APIError as exc:
            raise LabError(f"swarm init on {first.name} failed: {exc.explanation or exc}") from None
    _join(first, list(enumerate(nodes))[1:], report)


def _join(manager: LabNode, joining: Sequence[tuple[int, LabNode]],
          report: Callable[[str], None]) -> None:
    """Join each (position, node) to the manager's swarm in the role of its position."""
    with _engine(manager) as api:
        tokens = api.inspect_swarm()["JoinTokens"]
    for position, n in joining:
        role = wanted_role(position)
        report(f"{n.name} joins as a {role}")
        with _engine(n) as api:
            try:
                api.join_swarm([f"{manager.address}:{SWARM_PORT}"], tokens[role.capitalize()],
                               listen_addr=f"{n.address}:{SWARM_PORT}", advertise_addr=n.address)
            except docker.errors.APIError as exc:
                raise LabError(
                    f"{n.name} cannot join the swarm on {manager.address}:{SWARM_PORT}: "
                    f"{exc.explanation or exc}; node-to-node traffic on the lab bridge needs "
                    "the DOCKER-USER accept rule (`iptables -S DOCKER-USER`, design §5)") from None
            except requests.RequestException as exc:
                raise LabError(f"{n.name} did not finish joining the swarm on {manager.address}: "
                               f"{exc}; node-to-node traffic on the lab bridge needs the "
                               "DOCKER-USER accept rule (design §5)") from None


def _wait_ready(nodes: Sequence[LabNode], timeout: float = READY_TIMEOUT) -> None:
    """Until every lab node is listed ready in its role (managers reachable)."""
    deadline = time.monotonic() + timeout
    while True:
        local = {n.name: s for n in nodes if (s := local_state(n)) is not None}
        listed = listed_nodes(nodes)
        if listed is not None and is_exactly(listed, local, nodes):
            return
        if time.monotonic() > deadline:
            shown = ", ".join(f"{s.address} {s.role} {'ready' if s.ready else 'not ready'}"
                              + ("" if s.reachable else " unreachable") for s in listed or [])
            raise LabError(f"the lab swarm is not ready after {timeout:.0f}s "
                           f"(the manager lists: {shown or 'nothing'}); see the node engines' "
                           "dockerd.log under /var/lib/dockship-lab/nodes/")
        time.sleep(0.5)


def _label(nodes: Sequence[LabNode]) -> None:
    manager = _control(nodes)
    if manager is None:
        raise LabError("no lab node answers as a swarm manager; cannot label the swarm's nodes")
    with _engine(manager) as api:
        for _ in range(3):   # a concurrent update bumps the version: read again, retry
            pending = _label_once(api, nodes)
            if not pending:
                return
        raise LabError(f"could not label swarm nodes {', '.join(pending)} (their specs kept "
                       "changing under the update)")


def _label_once(api: docker.APIClient, nodes: Sequence[LabNode]) -> list[str]:
    by_address = {s.address: s for s in _listed(api)}
    pending = []
    for n in nodes:
        seen = by_address[n.address]
        labels = labels_update(seen.labels, node_labels(n))
        if labels is None:
            continue
        spec = api.inspect_node(seen.id)["Spec"]
        try:
            api.update_node(seen.id, seen.version, {**spec, "Labels": labels})
        except docker.errors.APIError as exc:
            if exc.status_code != 500 or "update out of sequence" not in str(exc):
                raise LabError(f"cannot label swarm node {n.name}: {exc.explanation or exc}") from None
            pending.append(n.name)
    return pending


def wait_rejoined(n: LabNode, nodes: Sequence[LabNode], timeout: float = READY_TIMEOUT) -> None:
    """After its engine restarted: until `n` is back in the swarm, ready (and reachable if a manager).

    A node that was in no swarm is left alone.
    """
    own = local_state(n)
    if own is None or own.state == "inactive":
        return
    deadline = time.monotonic() + timeout
    while True:
        own = local_state(n)
        listed = listed_nodes(nodes) if own is not None and own.state == "active" else None
        seen = next((s for s in listed or [] if own is not None and s.id == own.node_id), None)
        if seen is not None and seen.ready and seen.reachable:
            return
        if time.monotonic() > deadline:
            raise LabError(f"{n.name}'s engine restarted but the node is not back in the swarm "
                           f"after {timeout:.0f}s (its state: {own.state if own else 'no answer'})")
        time.sleep(0.5)
