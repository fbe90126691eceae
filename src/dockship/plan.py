"""The roll plan: computed whole before any node is touched, then walked.

A plan is a value (frozen records, an enum for the action): `--dry-run`
prints it, the executor walks it, and the rollback of a failed roll walks the
steps already done in reverse. Batch sizes follow the semantics operators
know from Ansible's `serial`: canary nodes first, alone; then batches given
as counts or percentages of the whole fleet (rounded down, never below 1), a
list's last entry repeating.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from dockship.config import Node


class StepAction(enum.Enum):
    DEPLOY = "deploy"        # start the target, prove it healthy, stop the old one
    UNCHANGED = "unchanged"  # the node already runs the target digest, healthy
    HELD = "held"            # left on its version: outside this --canary-only or --zone roll


@dataclass(frozen=True)
class Target:
    service: str
    tag: str
    digest: str
    repository: str          # {registry}/{image}

    @property
    def ref(self) -> str:
        """What nodes pull and run: the digest, never the mutable tag."""
        return f"{self.repository}@{self.digest}"


@dataclass(frozen=True)
class NodeStep:
    node: Node
    action: StepAction
    from_tag: str | None
    from_digest: str | None
    to_tag: str              # a rollback sends each node to its own previous tag
    to_digest: str
    pull: bool = True        # False: the image is already on the node (rollback)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.node.name, "zone": self.node.zone, "from": self.from_tag,
                "to": self.to_tag, "action": self.action.value}


@dataclass(frozen=True)
class Batch:
    number: int              # 0 for the canary batch, then 1, 2, ...
    canary: bool
    steps: tuple[NodeStep, ...]
    zone: str | None = None  # set when rolling zone by zone

    @property
    def label(self) -> str:
        name = "canary" if self.canary else f"batch {self.number}"
        return f"zone {self.zone}: {name}" if self.zone is not None else name


@dataclass(frozen=True)
class RollPlan:
    env: str
    service: str
    target: Target
    batches: tuple[Batch, ...]
    deploy_id: str
    rollback: bool = False   # a rollback to each node's previous tag
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def steps(self) -> tuple[NodeStep, ...]:
        return tuple(s for b in self.batches for s in b.steps)

    def to_json(self) -> dict[str, Any]:
        return {"env": self.env, "service": self.service, "tag": self.target.tag,
                "digest": self.target.digest, "deploy_id": self.deploy_id,
                "batches": [{"name": b.label, "nodes": [s.to_json() for s in b.steps]}
                            for b in self.batches]}


def batch_sizes(total: int, canary: int, spec: Sequence[int | str]) -> list[int]:
    """Sizes of the canary batch (if any) and the batches after it; they add up to total."""
    if total <= 0:
        return []
    sizes: list[int] = []
    left = total
    if canary > 0:
        sizes.append(min(canary, left))
        left -= sizes[-1]
    entries = list(spec) or [1]
    i = 0
    while left > 0:
        entry = entries[min(i, len(entries) - 1)]
        size = _size(entry, total)
        sizes.append(min(size, left))
        left -= sizes[-1]
        i += 1
    return sizes


def _size(entry: int | str, total: int) -> int:
    if isinstance(entry, str) and entry.endswith("%"):
        return max(1, math.floor(total * float(entry[:-1]) / 100 + 1e-9))
    return max(1, int(entry))


def zone_order(steps: Sequence[NodeStep], explicit: Sequence[str] = ()) -> list[str | None]:
    """Zones in the configured order, then the others alphabetically, nodes without a zone last."""
    present = {s.node.zone for s in steps}
    ordered: list[str | None] = [z for z in explicit if z in present]
    ordered += sorted(z for z in present if z is not None and z not in ordered)
    if None in present:
        ordered.append(None)
    return ordered


def make_batches(steps: Sequence[NodeStep], canary: int, spec: Sequence[int | str], *,
                 by_zone: bool = False, zones: Sequence[str] = ()) -> tuple[Batch, ...]:
    """Cut the node steps (in order) into canary + batches, zone after zone if asked.

    Nodes that need no change are not counted for the canary: the canary must
    be a node that actually receives the new version. Zone by zone, the
    canary comes from the first zone, and batch percentages are of each zone.
    """
    todo = [s for s in steps if s.action is StepAction.DEPLOY]
    rest = [s for s in steps if s.action is not StepAction.DEPLOY]
    groups: list[tuple[str | None, list[NodeStep]]]
    if by_zone:
        groups = [(z, [s for s in todo if s.node.zone == z]) for z in zone_order(todo, zones)]
    else:
        groups = [(None, todo)]
    batches: list[Batch] = []
    number = 0 if canary > 0 else 1
    canary_left = canary
    for zone, members in groups:
        start = 0
        for n, size in enumerate(batch_sizes(len(members), canary_left, spec)):
            is_canary = canary_left > 0 and n == 0
            batches.append(Batch(0 if is_canary else number, is_canary,
                                 tuple(members[start:start + size]), zone if by_zone else None))
            start += size
            if not is_canary:
                number += 1
            elif canary > 0:
                number = max(number, 1)
        canary_left = 0
    if rest:
        batches.append(Batch(number, False, tuple(rest)))
    return tuple(batches)
