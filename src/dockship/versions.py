"""`dockship versions SERVICE`: the tags the registry holds, newest first, and where each runs.

The question before a roll or a rollback is "what can I roll, and what runs
where now?". The registry answers the first; the nodes of every environment
that runs the service answer the second, read from their containers as
`status` does. A node that cannot be read is listed, never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dockship.config import Config
from dockship.container import containers_of, current
from dockship.credentials import registry_credentials
from dockship.errors import UsageError
from dockship.failures import reason
from dockship.fleet import Fleet, NodeEngine
from dockship.inventory import nodes_for
from dockship.registry import RegistryClient
from dockship.status import swarm_rows
from dockship.tags import version_for


@dataclass(frozen=True)
class Placement:
    env: str
    node: str

    def __str__(self) -> str:
        return f"{self.env}/{self.node}"


@dataclass(frozen=True)
class VersionRow:
    tag: str
    release: bool                         # a version tag (§4), not e.g. `latest`
    running: tuple[Placement, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"tag": self.tag, "release": self.release,
                "running": [{"env": p.env, "node": p.node} for p in self.running]}


@dataclass(frozen=True)
class Versions:
    service: str
    repository: str
    rows: tuple[VersionRow, ...]
    unread: tuple[str, ...] = ()          # "env/node: why" for nodes that could not be read

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service, "repository": self.repository,
                "versions": [r.to_json() for r in self.rows], "unread": list(self.unread)}


def releases_and_others(tags: list[str]) -> tuple[list[str], list[str]]:
    """Version tags newest first (PEP 440 order), and any other tag by name."""
    releases, others = [], []
    for tag in tags:
        try:
            releases.append((version_for(tag), tag))
        except ValueError:
            others.append(tag)
    return [t for _, t in sorted(releases, reverse=True)], sorted(others)


def ordered(tags: list[str]) -> list[str]:
    """Version tags newest first (PEP 440 order), then any other tag by name."""
    releases, others = releases_and_others(tags)
    return releases + others


def _running_tag(engine: NodeEngine, service: str) -> str | None:
    found = current(containers_of(engine.client, service))
    return found.tag if found is not None else None


def versions(config: Config, service: str) -> Versions:
    svc = config.service(service)
    with RegistryClient(config.registry, credentials=registry_credentials(config.registry)) as reg:
        tags = ordered(reg.tags(svc.image))
    where: dict[str, list[Placement]] = {}
    unread: list[str] = []
    for env in config.environments.values():
        if env.swarm is not None:
            for row in swarm_rows(env, config.service_for(env.name, svc.name)):
                if row.tag is not None:
                    where.setdefault(row.tag, []).append(Placement(env.name, row.name))
            continue
        try:
            nodes = nodes_for(env, svc)
        except UsageError:       # this environment has no node for the service
            continue
        with Fleet(nodes, env) as fleet:
            for engine, tag, exc in fleet.each(lambda e: _running_tag(e, svc.name)):
                if exc is not None:
                    unread.append(f"{env.name}/{engine.name}: {reason(exc)}")
                elif tag is not None:
                    where.setdefault(tag, []).append(Placement(env.name, engine.name))
    known = set(tags)
    release = set(releases_and_others(tags + list(where))[0])
    rows = [VersionRow(t, t in release, tuple(where.get(t, ()))) for t in tags]
    # A tag running somewhere but gone from the registry still matters: it cannot be rolled back to.
    rows += [VersionRow(t, t in release, tuple(p)) for t, p in where.items() if t not in known]
    return Versions(svc.name, f"{config.registry}/{svc.image}", tuple(rows), tuple(unread))
