"""What a node runs, read once before planning: the data a plan is a pure function of.

One parallel pass over the fleet fills these records (backends.EngineBackend.read, swarm.SwarmFleet.read_states);
`plan.plan_roll` and `plan.plan_rollback` then decide from them alone, so
every planning rule is unit-tested with plain data and no engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dockship.config import Node


@dataclass(frozen=True)
class Running:
    """The container a node runs for a service, as far as a roll cares."""

    id: str
    name: str
    tag: str | None
    digest: str | None
    previous_tag: str | None = None
    previous_digest: str | None = None
    settings: str | None = None     # its settings label (runtime.Runtime.label), if it has one


@dataclass(frozen=True)
class NodeState:
    node: Node
    running: Running | None
    images: frozenset[str] = field(default_factory=frozenset)   # digests asked about and present

    @property
    def name(self) -> str:
        return self.node.name
