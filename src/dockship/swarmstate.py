"""The deploy lock and the history of a swarm environment, kept as Swarm configs.

A Swarm config is a named object in the managers' Raft store: creating one
whose name exists fails with 409 for all creators but one, and every change
is stamped by the managers. That is what a lease needs (design §9):

- take    = create config `dockship-lock-{env}-{service}` (atomic across the swarm);
- renew   = rewrite its labels (only labels of a config may change), by id and
            version: the managers stamp `UpdatedAt` with *their* clock;
- expiry  = the manager's `SystemTime` minus `UpdatedAt`, never the contender's clock;
- take over / release = remove it by id (of several contenders one succeeds).

History is one config per deploy (`dockship-history-…-{deploy id}`, the
record as JSON, labels `io.dockship.ledger.env/service`), so every operator
reads the same history from any manager, and Swarm's own single previous
spec is never relied on. The newest `keep` records are kept.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from typing import Any

import docker.errors
import requests

from dockship import labels as names
from dockship.history import DEFAULT_KEEP, HistoryRecord, merge
from dockship.lock import Found, Gone, LockInfo, Taken
from dockship.times import format_time, parse_time, utc_now

Call = Callable[[str, Callable[[Any], Any]], Any]     # SwarmManager.call
RENEWED = names.LOCK + "renewed"
MAX_NAME = 64


def config_name(kind: str, env: str, service: str, suffix: str = "") -> str:
    """A config name (64 characters at most) that no other env/service pair can share."""
    plain = f"dockship-{kind}-{env}-{service}" + (f"-{suffix}" if suffix else "")
    if len(plain) <= MAX_NAME and "-" not in env:
        return plain
    digest = hashlib.sha256(json.dumps([kind, env, service]).encode()).hexdigest()[:10]
    tail = f"-{suffix}" if suffix else ""
    return f"dockship-{kind}-{digest}{tail}"[:MAX_NAME]


class SwarmLockStore:
    """lock.LockStore on a swarm: one config, so the whole swarm is one lock holder."""

    def __init__(self, call: Call, env: str, service: str, node: str = "swarm"):
        self.call, self.env, self.service, self.node = call, env, service, node
        self.name = config_name("lock", env, service)

    def create(self, info: LockInfo) -> str:
        labels = {**info.to_labels(), RENEWED: format_time(utc_now())}
        try:
            made = self.call("take the deploy lock", lambda api: api.create_config(
                self.name, json.dumps(labels).encode(), labels=labels))
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                raise Taken(self.node) from None
            raise
        return made["ID"]

    def _find(self, api: Any) -> dict[str, Any] | None:
        # The name filter matches by prefix: pick the exact name.
        found = [c for c in api.configs(filters={"name": self.name})
                 if (c.get("Spec") or {}).get("Name") == self.name]
        return found[0] if found else None

    def read(self) -> Found | None:
        config = self.call("read the deploy lock", self._find)
        if config is None:
            return None
        cid = config["ID"]
        try:
            info = LockInfo.from_labels((config.get("Spec") or {}).get("Labels") or {})
        except ValueError as exc:
            return Found(cid, None, problem=str(exc))
        if (info.env, info.service) != (self.env, self.service):
            return Found(cid, None, problem=f"it is the lock of environment {info.env!r} "
                                            f"service {info.service!r} (name clash)")
        renewed = parse_time(config.get("UpdatedAt") or config.get("CreatedAt"))
        now = parse_time(self.call("read the manager's clock", lambda api: api.info())["SystemTime"])
        return Found(cid, info, idle=max(0.0, (now - renewed).total_seconds()))

    def renew(self, container_id: str) -> None:
        def renew(api: Any) -> None:
            try:
                config = api.inspect_config(container_id)
            except docker.errors.NotFound:
                raise Gone(self.node) from None
            spec = dict(config["Spec"])
            spec["Labels"] = {**(spec.get("Labels") or {}), RENEWED: format_time(utc_now())}
            url = f"{api.base_url}/v{api.api_version}/configs/{container_id}/update"
            resp = api.post(url, params={"version": config["Version"]["Index"]},
                            data=json.dumps(spec), headers={"Content-Type": "application/json"},
                            timeout=api.timeout)
            if resp.status_code == 404:
                raise Gone(self.node)
            try:
                resp.raise_for_status()
            except requests.HTTPError as exc:
                raise docker.errors.APIError(exc, response=resp) from None
        self.call("renew the deploy lock", renew)

    def remove(self, container_id: str) -> bool:
        try:
            self.call("remove the deploy lock", lambda api: api.remove_config(container_id))
            return True
        except docker.errors.NotFound:
            return False


def _ledger_labels(env: str, service: str) -> dict[str, str]:
    return {names.LEDGER + "env": env, names.LEDGER + "service": service}


class SwarmLedger:
    """A roll's ledger on a swarm (backends.Ledger): a record is written once."""

    def __init__(self, call: Call, env: str, service: str, *, keep: int = DEFAULT_KEEP):
        self.call, self.env, self.service, self.keep = call, env, service, keep
        self._written: set[str] = set()

    def prepare(self, store: str) -> None:
        return None

    def append(self, store: str, rec: HistoryRecord) -> None:
        if rec.deploy_id in self._written:
            return
        name = config_name("history", self.env, self.service,
                           rec.file_name.removesuffix(".json").replace(".", "-")[-40:])
        data = json.dumps(rec.to_json(), sort_keys=True).encode()
        try:
            self.call("record the history", lambda api: api.create_config(
                name, data, labels=_ledger_labels(self.env, self.service)))
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise
        self._written.add(rec.deploy_id)
        self._trim()

    def _trim(self) -> None:
        configs = _history_configs(self.call, self.env, self.service)
        configs.sort(key=lambda c: str(c.get("CreatedAt") or ""))
        for c in configs[:max(0, len(configs) - self.keep)]:
            try:
                self.call("trim the history", lambda api: api.remove_config(c["ID"]))
            except docker.errors.NotFound:
                continue


def _history_configs(call: Call, env: str, service: str | None) -> list[dict[str, Any]]:
    filters = [f"{names.LEDGER}env={env}"]
    if service is not None:
        filters.append(f"{names.LEDGER}service={service}")
    return list(call("read the history", lambda api: api.configs(filters={"label": filters})))


def read_history(call: Call, env: str, service: str | None) -> list[HistoryRecord]:
    """Every record of env (one service, or all), newest first; unreadable configs skipped."""
    records = []
    for c in _history_configs(call, env, service):
        try:
            raw = base64.b64decode((c.get("Spec") or {}).get("Data") or "")
            rec = HistoryRecord.from_json(json.loads(raw))
        except ValueError:
            continue
        if rec.env == env and (service is None or rec.service == service):
            records.append(rec)
    return merge(records)
