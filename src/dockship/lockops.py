"""`dockship lock status` and `lock release`: who holds a deploy lock, and giving it back.

A service's lock lives on every node that runs it (lock.py), so both
commands read every node; in an environment found in etcd it is one etcd
lease (etcdlock.py), and that is what they read. Release exists for the
holder that can no longer give it back (a SIGKILL, a lost CI agent): without `--force` it removes only
a lease that ran out or one whose holder is a process of this machine that
no longer runs; anything else needs `--force`, because removing a live
roll's lock lets a second roll run beside it. The lock is removed by the
container id that was read, so a lock taken in between is never removed,
and every release is written into the service's history on each node: the
team sees who broke whose lock.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

from dockship import history, parallel
from dockship.config import Config, Environment, Service
from dockship.errors import DockshipError, LockHeld
from dockship.etcdlock import EtcdLockStore
from dockship.failures import reason
from dockship.fleet import Fleet, NodeEngine
from dockship.history import HistoryRecord, Kind
from dockship.inventory import nodes_for
from dockship.lock import DockerLockStore, Found, LockInfo, LockStore, default_holder
from dockship.report import NodeOutcome, NodeResult, Result
from dockship.times import format_time, human_duration, utc_now


@dataclass(frozen=True)
class NodeLock:
    """One node's view of the lock: what it holds, or why it could not be read."""

    node: str
    zone: str | None
    found: Found | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        f = self.found
        return {"name": self.node, "locked": f is not None,
                "deploy_id": f.info.deploy_id if f and f.info else None,
                "idle": round(f.idle, 1) if f else None,
                "expired": f.expired if f else None,
                **({"error": self.error} if self.error else {})}


@dataclass(frozen=True)
class ServiceLock:
    env: str
    service: str
    nodes: tuple[NodeLock, ...]

    @property
    def found(self) -> list[Found]:
        return [n.found for n in self.nodes if n.found is not None]

    @property
    def holder(self) -> Found | None:
        """The lock as people should read it: the most recently renewed copy."""
        return min(self.found, key=lambda f: f.idle, default=None)

    @property
    def locked(self) -> bool:
        return bool(self.found)

    def describe(self) -> str:
        held = self.holder
        if held is None:
            unread = [n.node for n in self.nodes if n.error]
            return "unlocked" + (f" (not read on: {', '.join(unread)})" if unread else "")
        return held.describe()

    def to_json(self) -> dict[str, Any]:
        held = self.holder
        info: LockInfo | None = held.info if held else None
        return {"env": self.env, "service": self.service, "locked": self.locked,
                "holder": info.holder if info else None,
                "deploy_id": info.deploy_id if info else None,
                "tag": info.tag if info else None,
                "message": info.message if info else None,
                "acquired_at": format_time(info.acquired_at) if info else None,
                "ttl": info.ttl if info else None,
                "expires_in": round(info.ttl - held.idle, 1) if info and held else None,
                "nodes": [n.to_json() for n in self.nodes]}


def _read(engine: NodeEngine, env: str, service: str) -> NodeLock:
    return _read_store(DockerLockStore(engine.name, engine.client, env, service), engine.node.zone)


def _read_store(store: LockStore, zone: str | None) -> NodeLock:
    try:
        found = store.read()
    except Exception as exc:  # noqa: BLE001 - one unreachable node must not hide the others
        return NodeLock(store.node, zone, error=reason(exc))
    return NodeLock(store.node, zone, found=found)


def _etcd_lock(env: Environment, service: str) -> tuple[EtcdLockStore, ServiceLock]:
    """An etcd environment's lock: one lease in etcd, not a container on each node."""
    assert env.etcd is not None
    store = EtcdLockStore(env.etcd, env.name, service)
    return store, ServiceLock(env.name, service, (_read_store(store, None),))


def _services(config: Config, env_name: str, service: str | None) -> list[Service]:
    from dockship.roll import services_for
    return services_for(config, config.environment(env_name), service)


def lock_status(config: Config, env_name: str, service: str | None = None) -> list[ServiceLock]:
    """The lock of each service of the environment, as every node holds it."""
    env = config.environment(env_name)
    out = []
    for svc in _services(config, env_name, service):
        if env.etcd is not None:
            out.append(_etcd_lock(env, svc.name)[1])
            continue
        with Fleet(nodes_for(env, svc), env) as fleet:
            rows = fleet.each(lambda e: _read(e, env.name, svc.name))
            out.append(ServiceLock(env.name, svc.name, tuple(
                value if value is not None else NodeLock(e.name, e.node.zone, error=reason(exc))
                for e, value, exc in rows)))
    return out


def abandoned(found: Found, *, host: str | None = None) -> bool:
    """Safe to release without --force: the lease ran out, or its holder died on this machine.

    A holder reads `user@host pid N` (lock.default_holder); only a process of
    this very host can be checked, and only its absence makes the lock safe.
    """
    if found.expired:
        return True
    if found.info is None:
        return False
    who, _, pid = found.info.holder.rpartition(" pid ")
    if who.rpartition("@")[2] != (host or socket.gethostname()) or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:      # it exists (another user's process): alive
        return False
    return False


@dataclass(frozen=True)
class Released:
    service: str
    record: HistoryRecord | None      # None: there was no lock to release
    failed: tuple[str, ...] = ()      # nodes where the lock could not be removed

    def to_json(self) -> dict[str, Any]:
        return {"service": self.service, "released": self.record is not None,
                "record": self.record.to_json() if self.record else None,
                "failed_nodes": list(self.failed)}


def release(config: Config, env_name: str, service: str | None = None, *,
            force: bool = False) -> list[Released]:
    """Remove each service's lock from every node, and record that in its history."""
    env = config.environment(env_name)
    out = []
    for svc in _services(config, env_name, service):
        with Fleet(nodes_for(env, svc), env) as fleet:
            fleet.connect()
            if env.etcd is not None:
                store, state = _etcd_lock(env, svc.name)
                if state.nodes[0].error:
                    raise DockshipError(f"cannot read the deploy lock of service {svc.name} in "
                                        f"etcd: {state.nodes[0].error}")
                stores: dict[str, LockStore] = {store.node: store}
            else:
                rows = fleet.each(lambda e: _read(e, env.name, svc.name))
                state = ServiceLock(env.name, svc.name,
                                    tuple(v for _, v, _ in rows if v is not None))
                stores = {e.name: DockerLockStore(e.name, e.client, env.name, svc.name)
                          for e in fleet}
            if not state.locked:
                out.append(Released(svc.name, None))
                continue
            live = [f for f in state.found if not abandoned(f)]
            if live and not force:
                raise LockHeld(f"{live[0].describe()}; if its holder is gone for good (a killed "
                               "job), release it with `dockship lock release --force`")
            out.append(_remove_and_record(fleet, stores, state, force=force))
    return out


def _remove_and_record(fleet: Fleet, stores: dict[str, LockStore], state: ServiceLock, *,
                       force: bool) -> Released:
    """Remove the lock where it was read (by the id read), then record that on every node."""
    held = state.holder
    info = held.info if held else None
    found = [(n.node, n.found) for n in state.nodes if n.found is not None]

    def remove(row: tuple[str, Found]) -> None:
        stores[row[0]].remove(row[1].container_id)

    failed = tuple(sorted(node for (node, _), _, exc in parallel.each(found, remove,
                                                                       limit=fleet.parallel)
                          if exc is not None))
    now = utc_now()
    what = (f"lock of deploy {info.deploy_id} held by {info.holder} "
            f"(renewed {human_duration(held.idle)} ago)" if info and held
            else "an unreadable lock container")
    record = HistoryRecord(
        deploy_id=uuid.uuid4().hex[:12], kind=Kind.LOCK_RELEASE, env=state.env,
        service=state.service, user=default_holder(), started_at=now, finished_at=now,
        tag=info.tag if info else "-", digest=None,
        result=Result.FAILED if failed else Result.SUCCEEDED,
        reason=f"released the {what}" + (" with --force" if force else ""),
        nodes=tuple(NodeOutcome(n.node, n.zone, None, None,
                                NodeResult.FAILED if n.node in failed else NodeResult.UPDATED, 0.0)
                    for n in state.nodes if n.found is not None),
        warnings=(f"the lock could not be removed on: {', '.join(failed)}",) if failed else ())
    ledger = history.Ledger(state.env, state.service)
    for engine in fleet:
        try:
            ledger.append(engine.name, engine.client, record)
        except Exception:  # noqa: BLE001 - the release itself happened; history is best effort
            pass
    return Released(state.service, record, failed)
