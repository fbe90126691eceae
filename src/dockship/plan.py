"""The roll plan: computed whole before any node is touched, then walked.

A plan is a value (frozen records, an enum for the action), and planning is
a pure function of what the nodes run (nodestate.NodeState, read in one
pass beforehand): `--dry-run` prints it, the executor walks it, and the
rollback of a failed roll walks the steps already done in reverse. Batch sizes follow the semantics operators
know from Ansible's `serial`: canary nodes first, alone; then batches given
as counts or percentages of the whole fleet (rounded down, never below 1), a
list's last entry repeating.
"""

from __future__ import annotations

import enum
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from dockship.config import Environment, Node, Service
from dockship.errors import UsageError
from dockship.nodestate import NodeState
from dockship.runtime import Runtime


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
    # settings keys (env.X, secret.X, command, port, publish; "settings": unrecorded) whose
    # values differ from what the node's container runs: names only, never values
    changed: tuple[str, ...] = ()

    @property
    def why(self) -> str:
        """Why the node is deployed: a new version, or the same one with new settings."""
        if self.action is not StepAction.DEPLOY:
            return self.action.value
        return "settings" if self.from_digest == self.to_digest else "version"

    def to_json(self) -> dict[str, Any]:
        out = {"name": self.node.name, "zone": self.node.zone, "from": self.from_tag,
               "to": self.to_tag, "action": self.action.value}
        if self.action is StepAction.DEPLOY:
            out["why"] = self.why
        if self.changed:
            out["changed"] = list(self.changed)
        return out


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
                            for b in self.batches],
                "policies": list(self.notes)}


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
        batches.append(Batch(max(number, 1), False, tuple(rest)))
    return tuple(batches)


# --- planning: pure functions of the nodes' states -------------------------------------

def plan_roll(env: Environment, service: Service, states: Sequence[NodeState], target: Target,
              *, deploy_id: str, canary_only: bool = False, zone: str | None = None,
              settings: Runtime | None = None) -> RollPlan:
    """Which nodes change, in which batches, under which policies.

    With `settings`, a node on the target digest whose container's settings label differs
    from them (settings drift) is deployed too, naming the keys that changed."""
    if zone is not None:
        zones = sorted({s.node.zone for s in states if s.node.zone})
        if zone not in zones:
            raise UsageError(f"no node of '{service.name}' in environment '{env.name}' is in zone "
                             f"'{zone}'; zones: {', '.join(zones) or 'none (set zone on the nodes)'}")
    if canary_only and env.rollout.canary < 1:
        raise UsageError(f"--canary-only needs a canary: set environments.{env.name}.rollout.canary "
                         "to 1 or more")
    steps = []
    for state in states:
        cur = state.running
        changed = settings.changed(cur.settings) if settings is not None and cur is not None \
            else ()
        action = StepAction.UNCHANGED if cur is not None and cur.digest == target.digest \
            and not changed else StepAction.DEPLOY
        if action is StepAction.DEPLOY and zone is not None and state.node.zone != zone:
            action = StepAction.HELD
        steps.append(NodeStep(state.node, action, cur.tag if cur else None,
                              cur.digest if cur else None, target.tag, target.digest,
                              changed=changed))
    rollout = env.rollout
    batches = make_batches(steps, rollout.canary, rollout.batch, by_zone=rollout.by_zone,
                           zones=rollout.zones)
    if canary_only:
        batches = _canary_only(batches)
    return RollPlan(env.name, service.name, target, batches, deploy_id,
                    notes=policy_notes(env, service))


def _canary_only(batches: tuple[Batch, ...]) -> tuple[Batch, ...]:
    """Keep the canary batch; every other node that would change is held on its version."""
    canary = [b for b in batches if b.canary]
    held = tuple(replace(s, action=StepAction.HELD) if s.action is StepAction.DEPLOY else s
                 for b in batches if not b.canary for s in b.steps)
    return tuple(canary) + ((Batch(1, False, held),) if held else ())


def plan_rollback(env: Environment, service: Service, states: Sequence[NodeState],
                  repository: str, *, deploy_id: str) -> RollPlan:
    """Every node back to the tag it ran before, from what the node itself records.

    `states` must say, for each node, whether the image of its previous
    digest is still there (`images`): a rollback pulls nothing.
    """
    steps = []
    for state in states:
        cur, name = state.running, state.name
        if cur is None:
            raise UsageError(f"node {name} runs no container of '{service.name}'; "
                             "nothing to roll back there (use --tag to roll a version)")
        if not cur.previous_digest:
            raise UsageError(f"node {name} has no earlier version of '{service.name}' "
                             f"recorded (it runs its first deploy, {cur.tag}); use --tag TAG")
        if cur.previous_digest not in state.images:
            raise UsageError(f"node {name} no longer holds the image of {cur.previous_tag}; "
                             f"roll it back with --tag {cur.previous_tag} (that pulls it)")
        steps.append(NodeStep(state.node, StepAction.DEPLOY, cur.tag, cur.digest,
                              cur.previous_tag or "?", cur.previous_digest, pull=False))
    if not steps:
        raise UsageError(f"no node of environment '{env.name}' runs '{service.name}'")
    common = Counter((s.to_tag, s.to_digest) for s in steps).most_common(1)[0][0]
    target = Target(service.name, common[0], common[1], repository)
    batches = make_batches(steps, 0, env.rollout.batch)
    return RollPlan(env.name, service.name, target, batches, deploy_id, rollback=True,
                    notes=policy_notes(env, service, rollback=True))


def policy_notes(env: Environment, service: Service, *, rollback: bool = False) -> tuple[str, ...]:
    """The judgements the roll will apply, in words, for the plan and `--dry-run`."""
    r, health = env.rollout, service.health
    window = health.rollback_min_healthy if rollback else health.min_healthy
    notes = [f"health: GET {health.path} answers {health.status} within {health.timeout:g}s, "
             f"then holds {window:g}s"]
    if r.bake.seconds > 0 and not rollback and r.canary > 0:
        notes.append(f"canary bake: {r.bake.seconds:g}s against the old version "
                     f"(error rate +{r.bake.max_error_increase:g} at most)")
    if r.by_zone:
        notes.append("zones: one after another, each verified healthy before the next")
    if r.overlap_min_healthy and window > 0:
        notes.append("overlap: after the canary, a node's window is held while the next batch goes")
    notes.append("auto rollback: on" if r.auto_rollback else "auto rollback: off")
    return tuple(notes)
