"""`dockship status`: what every node runs right now, read from the nodes themselves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dockship.config import Config, Environment, Service
from dockship.container import containers_of, current
from dockship.fleet import Fleet, NodeEngine
from dockship.failures import reason
from dockship.inventory import nodes_for
from dockship.probe import probe_once
from dockship.swarm import SwarmFleet
from dockship.swarmspec import running_task, task_state


@dataclass(frozen=True)
class NodeStatus:
    name: str
    zone: str | None
    address: str
    tag: str | None
    digest: str | None
    health: str
    since: str | None
    deploy_id: str | None
    previous: str | None
    retained: tuple[str, ...]
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Runs the service and answers its health check: what `status` exits 0 for."""
        return self.error is None and self.health == "healthy"

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "zone": self.zone, "address": self.address, "tag": self.tag,
                "digest": self.digest, "health": self.health, "since": self.since,
                "deploy_id": self.deploy_id, "previous": self.previous,
                "retained": list(self.retained), **({"error": self.error} if self.error else {})}


@dataclass(frozen=True)
class ServiceStatus:
    env: str
    service: str
    nodes: tuple[NodeStatus, ...]

    @property
    def tags(self) -> list[str]:
        return sorted({n.tag for n in self.nodes if n.tag})

    def to_json(self) -> dict[str, Any]:
        return {"env": self.env, "service": self.service, "tags": self.tags,
                "split": len(self.tags) > 1, "nodes": [n.to_json() for n in self.nodes]}


def node_status(engine: NodeEngine, service: Service) -> NodeStatus:
    try:
        containers = containers_of(engine.client, service.name)
    except Exception as exc:  # noqa: BLE001 - one unreachable node must not hide the others
        return NodeStatus(engine.name, engine.node.zone, engine.address, None, None,
                          "unknown", None, None, None, (), error=reason(exc))
    cur = current(containers)
    retained = tuple(c.tag or "?" for c in containers if c is not cur and not c.running)
    if cur is None:
        return NodeStatus(engine.name, engine.node.zone, engine.address, None, None,
                          "not running", None, None, None, retained)
    health = cur.status if cur.status != "running" else probe_once(
        service.publish.reach(engine.address), service.host_port, service.health)
    return NodeStatus(engine.name, engine.node.zone, engine.address, cur.tag, cur.digest, health,
                      cur.started_at, cur.deploy_id, cur.previous_tag, retained)


def status(config: Config, env_name: str, service: str | None = None) -> list[ServiceStatus]:
    from dockship.roll import services_for

    env = config.environment(env_name)
    out = []
    for svc in services_for(config, env, service):
        if env.swarm is not None:
            out.append(ServiceStatus(env.name, svc.name, swarm_rows(env, svc)))
            continue
        with Fleet(nodes_for(env, svc), env) as fleet:
            rows = fleet.each(lambda e: node_status(e, svc))
            out.append(ServiceStatus(env.name, svc.name, tuple(
                value if value is not None else NodeStatus(engine.name, engine.node.zone,
                                                           engine.address, None, None, "unknown",
                                                           None, None, None, (), error=reason(exc))
                for engine, value, exc in rows)))
    return out


def swarm_rows(env: Environment, service: Service) -> tuple[NodeStatus, ...]:
    """What each swarm node runs: the revision its label names, that revision's task on it,
    and the answer of its published port. The node's previous revision is what it retains."""
    with SwarmFleet(env, service) as fleet:
        infos = fleet.infos()
        revisions = {r.name: r for r in fleet.revisions()}
        rows = []
        for info in infos:
            address = service.publish.reach(info.address)
            rev = revisions.get(info.labels.get(fleet.cursor, ""))
            prev = revisions.get(info.labels.get(fleet.previous, ""))
            if rev is None:
                rows.append(NodeStatus(info.name, info.zone, address, None, None, "not running",
                                       None, None, None, (prev.tag or "?",) if prev else ()))
                continue
            tasks = fleet.tasks(rev.name, info.id)
            task = running_task(tasks)
            if task is None:
                newest = max(tasks, key=lambda t: str(t.get("CreatedAt") or ""), default=None)
                health = task_state(newest)[1] if newest else "not running"
                since = None
            else:
                health = probe_once(address, service.host_port, service.health)
                since = (task.get("Status") or {}).get("Timestamp")
            rows.append(NodeStatus(info.name, info.zone, address, rev.tag, rev.digest, health,
                                   since, rev.deploy_id, prev.tag if prev else None,
                                   (prev.tag or "?",) if prev else ()))
        return tuple(rows)
