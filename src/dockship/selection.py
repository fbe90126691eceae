"""What a fleet command (`logs`, `exec`) acts on: a service's running container on chosen nodes.

`--node` narrows to one node by name; a name that is not a node of the
service is bad input (exit 2) listing the ones that are, before any engine
is contacted.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from dockship.config import Config, Node, Service
from dockship.errors import UsageError
from dockship.fleet import Fleet
from dockship.inventory import nodes_for


@dataclass(frozen=True)
class Selection:
    env: str
    service: Service
    nodes: tuple[Node, ...]


def select(config: Config, env_name: str, service: str | None, node: str | None) -> list[Selection]:
    """Each service of the environment (or the one named) with its nodes (or the one named)."""
    from dockship.roll import services_for

    env = config.environment(env_name)
    out = []
    for svc in services_for(config, env, service):
        nodes = nodes_for(env, svc)
        if node is not None:
            nodes = tuple(n for n in nodes if n.name == node)
            if not nodes:
                if service is not None or len(config.services) == 1:
                    names = ", ".join(n.name for n in nodes_for(env, svc))
                    raise UsageError(f"node '{node}' does not run service '{svc.name}' in "
                                     f"environment '{env.name}'; its nodes: {names}")
                continue
        out.append(Selection(env.name, svc, nodes))
    if not out:
        raise UsageError(f"node '{node}' runs no service of environment '{env_name}'")
    return out


@contextmanager
def fleet_of(config: Config, chosen: Selection) -> Iterator[Fleet]:
    with Fleet(chosen.nodes, config.environment(chosen.env)) as fleet:
        yield fleet
