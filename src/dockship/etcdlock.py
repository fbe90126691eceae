"""The deploy lock as an etcd lease, for environments that find their nodes in etcd.

One key per environment and service, `/dockship/locks/{env}/{service}`,
holds the `LockInfo` as JSON and is attached to a lease of the lock's TTL.
It is one `lock.LockStore` that stands for every node of the roll, and it
keeps the lease rules of design §9 by construction:

- Take = a transaction "create the key if it does not exist" under a fresh
  lease: etcd lets exactly one contender win. The loser's lease is revoked.
- Renew = a lease keepalive. etcd counts the TTL down on its own clock, so
  how long a lock went unrenewed never depends on a contender's clock, and
  `Found.idle` is read from the server (granted TTL minus what is left).
- Take over = nothing to do: when the holder has not renewed for the whole
  TTL, etcd deletes the key itself, and the next "create if absent" wins.
  A lock read here is therefore never expired.
- Lose = a keepalive that finds the lease gone, or the key gone or attached
  to another lease (`Gone`); an etcd that does not answer is a failed
  renewal, which `LeaseKeeper` counts like an engine that does not answer.
- Release = delete the key only while it is attached to our lease (one
  transaction), then revoke the lease; False if it was gone already.

The "container id" of the protocol is the lease id in hex.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from dockship.config import EtcdSettings, Environment
from dockship.errors import DockshipError, last_line
from dockship.etcd import Etcd
from dockship.lock import Found, Gone, LockInfo, LockStore, Taken, docker_stores
from dockship.times import format_time, parse_time

__all__ = ["LOCK_PREFIX", "NODE", "EtcdLockStore", "lock_key", "lock_stores"]

LOCK_PREFIX = "/dockship/locks"
NODE = "etcd"            # the store's name where DeployLock names nodes
T = TypeVar("T")


class EtcdLockError(DockshipError):
    """etcd failed under the lock (it did not answer, or refused): one line naming it."""


def lock_key(env: str, service: str) -> bytes:
    return f"{LOCK_PREFIX}/{env}/{service}".encode()


def lock_stores(env: Environment, engines: Sequence[tuple[str, Any]], service: str
                ) -> list[LockStore]:
    """Where the lock of `env`/`service` lives: an etcd lease where the environment's nodes
    come from etcd, else a lock container on every node engine."""
    if env.etcd is not None:
        return [EtcdLockStore(env.etcd, env.name, service)]
    return list(docker_stores(engines, env.name, service))


def _value(info: LockInfo) -> bytes:
    return json.dumps({"env": info.env, "service": info.service, "holder": info.holder,
                       "deploy_id": info.deploy_id, "tag": info.tag,
                       "acquired_at": format_time(info.acquired_at), "ttl": info.ttl,
                       "message": info.message}, sort_keys=True).encode()


def _info(value: bytes) -> LockInfo:
    """The LockInfo of a lock's value; ValueError if it is not one this dockship wrote."""
    try:
        data = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ValueError("its value is not JSON") from None
    if not isinstance(data, dict):
        raise ValueError("its value is not a JSON object")
    texts = {}
    for key in ("env", "service", "holder", "deploy_id", "tag", "acquired_at"):
        if not isinstance(data.get(key), str):
            raise ValueError(f"its {key!r} is missing or not a string")
        texts[key] = data[key]
    ttl = data.get("ttl")
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 0 < ttl < float("inf"):
        raise ValueError("its 'ttl' is not a positive number of seconds")
    message = data.get("message", "")
    return LockInfo(env=texts["env"], service=texts["service"], holder=texts["holder"],
                    deploy_id=texts["deploy_id"], tag=texts["tag"],
                    acquired_at=parse_time(texts["acquired_at"]), ttl=float(ttl),
                    message=message if isinstance(message, str) else "")


class EtcdLockStore:
    """The lock of one environment/service as an etcd key under a lease (lock.LockStore)."""

    def __init__(self, settings: EtcdSettings, env: str, service: str, *, etcd: Etcd | None = None):
        self.node = NODE
        self.env, self.service = env, service
        self.key = lock_key(env, service)
        self.etcd = etcd or Etcd.of(settings)

    def __repr__(self) -> str:
        return f"EtcdLockStore({self.etcd.what}, {self.key.decode()})"

    def _call(self, fn: Callable[[], T]) -> T:
        """An etcd call whose failure reads as a line about etcd, not about an engine."""
        try:
            return fn()
        except DockshipError as exc:
            raise EtcdLockError(last_line(exc, 300)) from None

    def create(self, info: LockInfo) -> str:
        lease = self._call(lambda: self.etcd.grant(info.ttl))
        try:
            created = self._call(lambda: self.etcd.create(self.key, _value(info), lease))
        except BaseException:
            self._revoke_quietly(lease)     # our create may or may not have landed: its lease ends
            raise
        if not created:
            self._revoke_quietly(lease)
            raise Taken(self.node)
        return format(lease, "x")

    def read(self) -> Found | None:
        entry = self._call(lambda: self.etcd.get(self.key))
        if entry is None:
            return None
        lease_id = format(entry.lease, "x")
        key = self.key.decode()
        advice = f"if no deployment is running, delete it with `etcdctl del {key}`"
        try:
            info = _info(entry.value)
        except ValueError as exc:
            return Found(lease_id, None, problem=f"etcd key {key}: {exc}", advice=advice)
        if (info.env, info.service) != (self.env, self.service):
            return Found(lease_id, None, problem=f"etcd key {key} holds the lock of "
                         f"environment {info.env!r} service {info.service!r}", advice=advice)
        if not entry.lease:
            return Found(lease_id, None, problem=f"etcd key {key} has no lease, so it would "
                         "never expire", advice=advice)
        left, granted = self._call(lambda: self.etcd.time_to_live(entry.lease))
        if left <= 0:
            return None          # it expired while we looked
        # The lease etcd keeps may be longer than asked (whole seconds, its minimum TTL): that is
        # the TTL that holds, so a key etcd still keeps never reads as expired.
        info = dataclasses.replace(info, ttl=max(info.ttl, float(granted)))
        return Found(lease_id, info, idle=float(max(0, granted - left)))

    def renew(self, container_id: str) -> None:
        lease = int(container_id, 16)
        if self._call(lambda: self.etcd.keepalive(lease)) <= 0:
            raise Gone(self.node)
        entry = self._call(lambda: self.etcd.get(self.key))
        if entry is None or entry.lease != lease:   # deleted by hand: our lease guards nothing
            self._revoke_quietly(lease)
            raise Gone(self.node)

    def remove(self, container_id: str) -> bool:
        lease = int(container_id, 16)
        deleted = self._call(lambda: self.etcd.delete_if_lease(self.key, lease))
        self._call(lambda: self.etcd.revoke(lease))  # a holder still renewing it finds it Gone
        return deleted

    def _revoke_quietly(self, lease: int) -> None:
        try:
            self.etcd.revoke(lease)
        except DockshipError:
            pass                 # it runs out on its own after the TTL
