"""What a roll did, node by node: the one vocabulary of outcomes.

The summary, `--json`, the live table and history all speak it: history
stores these records, it does not keep a copy of its own. Failures keep the
results (Fabric's GroupResult habit): a failed roll still reports every
node's outcome, so the output can say precisely what runs where.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any


class NodeResult(enum.StrEnum):
    UPDATED = "updated"              # runs the target, proven healthy
    UNCHANGED = "unchanged"          # already ran the target
    FAILED = "failed"                # the target failed here; the previous container is back
    ROLLED_BACK = "rolled_back"      # was updated, then put back by the automatic rollback
    NOT_REACHED = "not_reached"      # the roll stopped before this node's turn
    KEPT = "kept"                    # had no previous version to go back to; left on the target
    BROKEN = "broken"                # putting the previous container back failed: needs a human
    HELD = "held"                    # outside this roll (--canary-only, --zone): left as it was


class Result(enum.StrEnum):
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"


@dataclass(frozen=True)
class NodeOutcome:
    """What one node went through; JSON keys as in `roll --json` (design §2)."""

    name: str
    zone: str | None
    from_tag: str | None
    to_tag: str | None
    result: NodeResult
    seconds: float
    reason: str | None = None
    logs: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()    # settings keys that differed from the config (names only)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "zone": self.zone, "from": self.from_tag,
                               "to": self.to_tag, "result": self.result.value,
                               "seconds": round(self.seconds, 3)}
        if self.reason:
            out["reason"] = self.reason
        if self.logs:
            out["logs"] = list(self.logs)
        if self.changed:
            out["changed"] = list(self.changed)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "NodeOutcome":
        """Parse one node of a stored report; ValueError if it is not one."""
        seconds = data.get("seconds", 0)
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool):
            raise ValueError(f"nodes[].seconds: expected a number, got {seconds!r}")
        logs = data.get("logs") or []
        if not isinstance(logs, list) or not all(isinstance(x, str) for x in logs):
            raise ValueError("nodes[].logs: expected a list of strings")
        changed = data.get("changed") or []
        if not isinstance(changed, list) or not all(isinstance(x, str) for x in changed):
            raise ValueError("nodes[].changed: expected a list of strings")
        return cls(name=req_str(data.get("name"), "nodes[].name"),
                   zone=opt_str(data.get("zone"), "nodes[].zone"),
                   from_tag=opt_str(data.get("from"), "nodes[].from"),
                   to_tag=opt_str(data.get("to"), "nodes[].to"),
                   result=NodeResult(req_str(data.get("result"), "nodes[].result")),
                   seconds=float(seconds), reason=opt_str(data.get("reason"), "nodes[].reason"),
                   logs=tuple(logs), changed=tuple(changed))


def opt_str(value: Any, key: str) -> str | None:
    """A string or null read back from stored JSON; ValueError naming the key otherwise."""
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"{key}: expected a string or null, got {value!r}")


def req_str(value: Any, key: str) -> str:
    """A string read back from stored JSON; ValueError naming the key otherwise."""
    if isinstance(value, str):
        return value
    raise ValueError(f"{key}: expected a string, got {value!r}")


@dataclass(frozen=True)
class GateOutcome:
    """A check between batches that judged the roll as a whole (canary bake, zone check): CI
    reports show each as a step of its own, beside the nodes."""

    name: str                        # "canary bake", "zone a"
    passed: bool
    reason: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "reason": self.reason,
                "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class RollReport:
    kind: str                        # "roll" or "rollback"
    env: str
    service: str
    tag: str
    digest: str
    result: Result
    deploy_id: str
    nodes: tuple[NodeOutcome, ...]
    started_at: str
    seconds: float
    reason: str | None = None
    failed_node: str | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)
    bake: dict[str, Any] | None = None     # the canary bake's verdict and figures
    gates: tuple[GateOutcome, ...] = ()    # zone checks (the bake's figures are in `bake`)

    @property
    def ok(self) -> bool:
        return self.result is Result.SUCCEEDED

    @property
    def broken(self) -> tuple[str, ...]:
        """Nodes that could not be put back: exit code 4 (design §2)."""
        return tuple(n.name for n in self.nodes if n.result is NodeResult.BROKEN)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"env": self.env, "service": self.service, "tag": self.tag,
                               "digest": self.digest, "result": self.result.value,
                               "nodes": [n.to_json() for n in self.nodes],
                               "kind": self.kind, "deploy_id": self.deploy_id,
                               "started_at": self.started_at, "seconds": round(self.seconds, 3)}
        if self.reason:
            out["reason"] = self.reason
        if self.failed_node:
            out["failed_node"] = self.failed_node
        if self.warnings:
            out["warnings"] = list(self.warnings)
        if self.bake is not None:
            out["bake"] = self.bake
        if self.gates:
            out["gates"] = [g.to_json() for g in self.gates]
        return out

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for n in self.nodes:
            counts[n.result.value] = counts.get(n.result.value, 0) + 1
        parts = ", ".join(f"{v} {k}" for k, v in counts.items())
        head = {Result.SUCCEEDED: f"{self.kind} of {self.service} to {self.tag} in {self.env} succeeded",
                Result.ROLLED_BACK: f"{self.kind} of {self.service} to {self.tag} in {self.env} failed "
                                    "and was rolled back",
                Result.FAILED: f"{self.kind} of {self.service} to {self.tag} in {self.env} failed"}[self.result]
        return f"{head} in {self.seconds:.1f}s ({parts})"


SCHEMA = 1   # the version of every JSON document dockship prints or writes (design §12)


def document(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON document as dockship hands it out: `"schema"` first, then the object's own keys.

    Consumers check `schema` before reading anything else; it changes only when a key
    they may rely on changes meaning or disappears.
    """
    return {"schema": SCHEMA, **obj}


def roll_document(reports: "list[RollReport] | tuple[RollReport, ...]") -> dict[str, Any]:
    """What `roll --json` prints and `--report` writes (design §2): one service's object, or
    `{"services": [...]}` when several services rolled, always with `schema`."""
    data = [r.to_json() for r in reports]
    return document(data[0] if len(data) == 1 else {"services": data})


def overall(reports: "list[RollReport] | tuple[RollReport, ...]") -> Result:
    """The worst result among the services: failed, then rolled back, then succeeded."""
    order = (Result.FAILED, Result.ROLLED_BACK, Result.SUCCEEDED)
    return next((r for r in order if any(x.result is r for x in reports)), Result.SUCCEEDED)
