"""Deploy history, kept on the nodes it happened on.

Each roll or rollback of env/service writes one JSON file,
`/dockship/history/{started_at}-{deploy_id}.json`, into a ledger container
`dockship-ledger-{env}-{service}-n{count}` (created, never started, from the
state image; `count` is how many records it holds) on every node it touched. `dockship history` reads the ledgers of an
environment's nodes and merges them by deploy id: a node that was down for
one deploy, or rebuilt, still leaves the history whole as long as one node
that took part answers.

Writes are best effort per node (history must never fail a deployment) and
happen under the deploy lock, so one ledger has one writer at a time.

A created container's files can be added or overwritten but not deleted
(`put_archive` applies no whiteouts). A ledger therefore keeps at most
`keep` records by being *rotated*: once it holds a quarter more than
`keep`, a fresh ledger is created with the newest `keep` records, the old
one is removed by id and the new one takes the canonical name (with its count). A rotation
cut short leaves two ledgers for the same env/service; both carry the ledger
labels, so reads find both and the next rotation folds them back into one.
"""

from __future__ import annotations

import enum
import json
import re
import secrets
import tarfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

import docker
import docker.errors

from dockship import labels, parallel, stateimage
from dockship.config import DEFAULT_PARALLEL
from dockship.errors import DockshipError, Unreachable
from dockship.polling import poll
from dockship.report import NodeOutcome, Result, RollReport, opt_str, req_str
from dockship.times import format_time, parse_time

KIND = "ledger"
PREFIX = labels.LEDGER
HISTORY_DIR = "/dockship/history"
DEFAULT_KEEP = 200
SCHEMA = 1

Engines = Sequence[tuple[str, docker.DockerClient]]
R = TypeVar("R")


class Kind(enum.StrEnum):
    ROLL = "roll"
    ROLLBACK = "rollback"
    LOCK_RELEASE = "lock_release"     # `dockship lock release`: someone broke a lock by hand


@dataclass(frozen=True)
class HistoryRecord:
    deploy_id: str
    kind: Kind
    env: str
    service: str
    user: str
    started_at: datetime
    finished_at: datetime
    tag: str
    digest: str | None
    result: Result
    reason: str | None = None
    nodes: tuple[NodeOutcome, ...] = field(default_factory=tuple)
    failed_node: str | None = None
    warnings: tuple[str, ...] = ()

    @classmethod
    def of(cls, report: RollReport, *, user: str, finished_at: datetime) -> "HistoryRecord":
        """The record of a roll is its report, with who ran it and when it ended."""
        return cls(deploy_id=report.deploy_id, kind=Kind(report.kind), env=report.env,
                   service=report.service, user=user, started_at=parse_time(report.started_at),
                   finished_at=finished_at, tag=report.tag, digest=report.digest,
                   result=report.result, reason=report.reason, nodes=report.nodes,
                   failed_node=report.failed_node, warnings=report.warnings)

    def __post_init__(self) -> None:
        # Accept plain strings ("roll", "succeeded") and lists, store the strict forms.
        object.__setattr__(self, "kind", Kind(self.kind))
        object.__setattr__(self, "result", Result(self.result))
        object.__setattr__(self, "nodes", tuple(self.nodes))
        for name in ("started_at", "finished_at"):
            if getattr(self, name).tzinfo is None:
                raise ValueError(f"{name} must be timezone-aware (UTC)")
        if not self.deploy_id:
            raise ValueError("a history record needs a deploy id")

    @property
    def duration(self) -> float:
        """Seconds from start to finish."""
        return (self.finished_at - self.started_at).total_seconds()

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "deploy_id": self.deploy_id, "kind": str(self.kind),
                "env": self.env, "service": self.service, "user": self.user,
                "started_at": format_time(self.started_at),
                "finished_at": format_time(self.finished_at), "duration": round(self.duration, 3),
                "tag": self.tag, "digest": self.digest, "result": str(self.result),
                "reason": self.reason, "nodes": [n.to_json() for n in self.nodes],
                "failed_node": self.failed_node, "warnings": list(self.warnings)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "HistoryRecord":
        """Parse a record; ValueError if it is not one. Unknown keys are ignored (newer writers)."""
        if not isinstance(data, Mapping):
            raise ValueError("a history record is a JSON object")
        nodes = data.get("nodes", [])
        if not isinstance(nodes, list) or not all(isinstance(n, Mapping) for n in nodes):
            raise ValueError("nodes: expected a list of objects")
        return cls(deploy_id=req_str(data.get("deploy_id"), "deploy_id"),
                   kind=Kind(req_str(data.get("kind"), "kind")),
                   env=req_str(data.get("env"), "env"),
                   service=req_str(data.get("service"), "service"),
                   user=req_str(data.get("user"), "user"),
                   started_at=parse_time(data.get("started_at")),
                   finished_at=parse_time(data.get("finished_at")),
                   tag=req_str(data.get("tag"), "tag"),
                   digest=opt_str(data.get("digest"), "digest"),
                   result=Result(req_str(data.get("result"), "result")),
                   reason=opt_str(data.get("reason"), "reason"),
                   nodes=tuple(NodeOutcome.from_json(n) for n in nodes),
                   failed_node=opt_str(data.get("failed_node"), "failed_node"),
                   warnings=tuple(w for w in data.get("warnings") or () if isinstance(w, str)))

    @property
    def file_name(self) -> str:
        """`20261126T125129.123456Z-<deploy id>.json`: names sort in start order."""
        stamp = self.started_at.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
        return f"{stamp}-{re.sub(r'[^A-Za-z0-9_.-]', '_', self.deploy_id)[:100]}.json"

    def sort_key(self) -> tuple[datetime, str]:
        return (self.started_at, self.deploy_id)


def merge(records: Iterable[HistoryRecord]) -> list[HistoryRecord]:
    """One record per deploy id, newest first.

    The same deploy is normally recorded identically on every node it
    touched; if copies differ (a write that reached only some nodes), the
    one that finished last wins.
    """
    best: dict[str, HistoryRecord] = {}
    for rec in records:
        held = best.get(rec.deploy_id)
        if held is None or (rec.finished_at, len(rec.nodes)) > (held.finished_at, len(held.nodes)):
            best[rec.deploy_id] = rec
    return sorted(best.values(), key=HistoryRecord.sort_key, reverse=True)


def ledger_name(env: str, service: str, count: int) -> str:
    """`dockship-ledger-{env}-{service}-n{count}`: the name says how many records it holds.

    Reading a created container's files costs the engine a mount (~40 ms, as
    much as the write); a count in the name, renamed after each write (~5 ms),
    lets a writer decide on a rotation from the listing it needs anyway.
    """
    return f"{stateimage.state_name(KIND, env, service)}-n{count}"


def _ledger_labels(env: str, service: str) -> dict[str, str]:
    return {PREFIX + "env": env, PREFIX + "service": service}


def _ledgers(client: docker.DockerClient, env: str, service: str | None) -> list[dict[str, Any]]:
    """Ledger containers of env (and service) on one engine."""
    filters = [f"{stateimage.KIND_LABEL}={KIND}", f"{PREFIX}env={env}"]
    if service is not None:
        filters.append(f"{PREFIX}service={service}")
    # The label filter matches `key=value` exactly, so env "a" never finds env "ab".
    return client.api.containers(all=True, filters={"label": filters})


def _count(container: dict[str, Any], env: str, service: str) -> int | None:
    """The record count in a canonical ledger's name; None for any other name."""
    pattern = re.compile(re.escape("/" + stateimage.state_name(KIND, env, service)) + r"-n(\d+)")
    for name in container.get("Names") or []:
        m = pattern.fullmatch(name)
        if m:
            return int(m.group(1))
    return None


# --- writing -------------------------------------------------------------------------

@dataclass
class _Target:
    container_id: str
    count: int


class Ledger:
    """The env/service ledger of each node, made ready to take one record.

    `prepare_node()` finds or creates a node's ledger and rotates a full one;
    `append()` writes the record and counts it. A roll prepares on the pass
    that takes the deploy lock and appends on the pass that gives it back.
    """

    def __init__(self, env: str, service: str, *, keep: int = DEFAULT_KEEP):
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.env, self.service, self.keep = env, service, keep
        self._ready: dict[str, _Target] = {}

    def prepare_node(self, node: str, client: docker.DockerClient) -> None:
        """Make one node's ledger writable (under the deploy lock of that node)."""
        self._ready[node] = self._prepare_one(client)

    def append(self, node: str, client: docker.DockerClient, rec: HistoryRecord) -> None:
        """Write `rec` into this node's ledger (preparing it now if prepare_node() did not)."""
        if (rec.env, rec.service) != (self.env, self.service):
            raise ValueError(f"a record of {rec.env}/{rec.service} in the ledger of "
                             f"{self.env}/{self.service}")
        payload = json.dumps(rec.to_json(), indent=1, sort_keys=True).encode()
        target = self._ready.pop(node, None) or self._prepare_one(client)
        stateimage.put_files(client, target.container_id,
                             {f"{HISTORY_DIR}/{rec.file_name}": payload})
        _rename(client, target.container_id, ledger_name(self.env, self.service, target.count + 1))

    def _prepare_one(self, client: docker.DockerClient) -> _Target:
        env, service = self.env, self.service
        ledgers = sorted(_ledgers(client, env, service),
                         key=lambda c: _count(c, env, service) is None)   # canonical first
        if not ledgers:
            return self._create(client)
        count = _count(ledgers[0], env, service)
        # Room for the record to come: write into it; else fold every ledger into a fresh one.
        if len(ledgers) == 1 and count is not None and count + 1 <= self.keep + max(1, self.keep // 4):
            return _Target(ledgers[0]["Id"], count)
        files: dict[str, bytes] = {}
        for ledger in ledgers:
            for fname, data in (stateimage.get_files(client, ledger["Id"], HISTORY_DIR) or {}).items():
                files.setdefault(fname, data)
        return _rotate(client, env, service, [c["Id"] for c in ledgers], files, self.keep - 1)

    def _create(self, client: docker.DockerClient) -> _Target:
        labels = _ledger_labels(self.env, self.service)
        try:
            return _Target(stateimage.create_state_container(
                client, ledger_name(self.env, self.service, 0), KIND, labels), 0)
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise
        # Someone created it at the same moment: use theirs, found by its labels once the
        # engine lists it (it reserves the name before the container can be seen).
        def theirs() -> _Target | None:
            for c in _ledgers(client, self.env, self.service):
                count = _count(c, self.env, self.service)
                if count is not None:
                    return _Target(c["Id"], count)
            return None
        found = poll(theirs, within=5.0)
        if found is None:
            raise DockshipError(f"a container named {ledger_name(self.env, self.service, 0)} "
                                "exists but is not this ledger; remove it")
        return found


def _rename(client: docker.DockerClient, container_id: str, name: str) -> None:
    """Best effort: a count that lags (a concurrent writer took the name) only delays a rotation."""
    try:
        client.api.rename(container_id, name)
    except docker.errors.APIError:
        pass


def _rotate(client: docker.DockerClient, env: str, service: str, old_ids: list[str],
            files: dict[str, bytes], keep: int) -> _Target:
    """A fresh ledger with the newest `keep` of `files`, under the canonical name."""
    newest = sorted((f for f in files if f.endswith(".json")), reverse=True)[:keep]
    temp = f"{stateimage.state_name(KIND, env, service)}-r{secrets.token_hex(4)}"
    cid = stateimage.create_state_container(client, temp, KIND, _ledger_labels(env, service))
    try:
        if newest:
            stateimage.put_files(client, cid, {f"{HISTORY_DIR}/{f}": files[f] for f in newest})
    except BaseException:
        stateimage.remove(client, cid)  # the old ledgers are untouched: nothing lost
        raise
    for old in old_ids:
        stateimage.remove(client, old)
    # If a writer recreated a canonical ledger meanwhile, the temp-named one is still
    # found by its labels, and the next rotation merges both.
    _rename(client, cid, ledger_name(env, service, len(newest)))
    return _Target(cid, len(newest))


# --- reading -------------------------------------------------------------------------

@dataclass(frozen=True)
class HistoryRead:
    """The merged history and what could not be read."""

    records: tuple[HistoryRecord, ...]
    failed: tuple[str, ...] = ()        # nodes whose engine did not answer
    unreadable: tuple[str, ...] = ()    # "node:file" of files that are not history records


def read_all(engines: Engines, env: str, service: str | None = None) -> HistoryRead:
    """Read every ledger of env (and service, or all services) on the engines, in parallel."""
    def one(node: str, client: docker.DockerClient) -> tuple[list[HistoryRecord], list[str]]:
        records: list[HistoryRecord] = []
        bad: list[str] = []
        for ledger in _ledgers(client, env, service):
            files = stateimage.get_files(client, ledger["Id"], HISTORY_DIR) or {}
            for fname, data in files.items():
                if not fname.endswith(".json"):
                    continue
                try:
                    rec = HistoryRecord.from_json(json.loads(data))
                except ValueError:  # includes JSON and enum errors
                    bad.append(f"{node}:{fname}")
                    continue
                if rec.env == env and (service is None or rec.service == service):
                    records.append(rec)
        return records, bad

    records: list[HistoryRecord] = []
    failed: list[str] = []
    unreadable: list[str] = []
    for node, outcome in _each(engines, one):
        if isinstance(outcome, BaseException):
            failed.append(node)
        else:
            records.extend(outcome[0])
            unreadable.extend(outcome[1])
    return HistoryRead(tuple(merge(records)), tuple(failed), tuple(sorted(unreadable)))


def read(engines: Engines, env: str, service: str | None = None) -> list[HistoryRecord]:
    """The history of env (one service, or all), newest first, merged across the engines.

    Nodes that do not answer are skipped (their deploys are normally also on
    other nodes); if none answers, Unreachable. Use `read_all` to learn which failed.
    """
    result = read_all(engines, env, service)
    if engines and len(result.failed) == len(engines):
        raise Unreachable(f"no node of environment {env!r} answered "
                          f"({', '.join(result.failed)}): history unavailable")
    return list(result.records)


def _each(engines: Engines, fn: Callable[[str, docker.DockerClient], R]
          ) -> list[tuple[str, R | BaseException]]:
    """Run fn(node, client) on every engine in parallel; (node, result or its engine error)."""
    out: list[tuple[str, R | BaseException]] = []
    for (node, _), result, exc in parallel.each(engines, lambda e: fn(*e), limit=DEFAULT_PARALLEL):
        if exc is not None and not isinstance(exc, (*stateimage.ENGINE_ERRORS, tarfile.TarError)):
            raise exc
        out.append((node, exc if exc is not None else result))
    return out
