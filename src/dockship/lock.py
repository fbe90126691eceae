"""The deploy lock: one deployment per (environment, service) at a time, kept on the nodes,
held as a lease.

The lock of `stage`/`hello` is a created (never started) container named
`dockship-lock-stage-hello` on every node engine of the roll; its labels
(`io.dockship.lock.*`) say who holds it, for which deploy and tag, why
(`--message`), and its TTL. Every operator and CI agent sees it, and nothing
outside the nodes is needed.

Rules (design §9):
- Take = create that container, which an engine does atomically (409 for
  all but one creator). All or nothing: the first node in name order alone,
  then the others at once; a conflict anywhere gives back what was taken.
  Contenders meet at the first node and nobody waits while holding, so two
  deployments cannot deadlock.
- Renew = write into our own lock container, by id. The engine stamps the
  write with *its* clock (the lease directory's mtime), so how long a lock
  has gone without renewal is measured by the node's own clock, never by a
  contender's: clock skew between machines cannot expire a live lock.
  `LeaseKeeper` renews every TTL/3 in the background for as long as the roll
  runs (pulls, hooks, bakes, health gates), not only between batches.
- Take over = only a lock not renewed for its whole TTL on that node's clock;
  looked at again just before it is removed, by id (of several contenders
  one removes it, the others get 404, one creates the new lock).
- Lose = a renewal that finds our container gone, or a holder that could not
  renew on some node for half the TTL (it stops before any contender may
  take over). Either trips the roll's Halt: the roll stops taking nodes,
  puts back what it must, records the reason, exits 1 (4 if a node is left
  broken).
- Release removes only our own containers, by id, and never raises.
"""

from __future__ import annotations

import getpass
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import docker
import docker.errors

from dockship import labels, parallel, stateimage
from dockship.config import DEFAULT_LOCK_TTL, DEFAULT_PARALLEL
from dockship.errors import DockshipError, LockHeld, last_line
from dockship.failures import engine_failure
from dockship.halt import Halt, Halted
from dockship.polling import poll
from dockship.times import format_time, human_duration, parse_time, utc_now

KIND = "lock"
PREFIX = labels.LOCK
LEASE_DIR = "/dockship/lease"
DEFAULT_TTL = DEFAULT_LOCK_TTL
SETTLE_SECONDS = 5.0     # how long a contended take may keep looking before it counts as held


def default_holder() -> str:
    """Who is deploying, as people will read it: `alice@ci-7 pid 1234`."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in a bare container: not worth failing for
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


class LockLost(DockshipError):
    """Our lease ended while we were rolling: it was taken over, or could not be renewed."""

    exit_code = 1


@dataclass(frozen=True)
class LockInfo:
    env: str
    service: str
    holder: str             # e.g. "alice@ci-7 pid 1234"
    deploy_id: str
    tag: str
    acquired_at: datetime   # UTC, the holder's clock: for people, never for expiry
    ttl: float              # seconds a lease lasts without renewal, on the node's clock
    message: str = ""       # --message / DOCKSHIP_LOCK_MESSAGE: a CI job URL, say

    def to_labels(self) -> dict[str, str]:
        return {PREFIX + "env": self.env, PREFIX + "service": self.service,
                PREFIX + "holder": self.holder, PREFIX + "deploy_id": self.deploy_id,
                PREFIX + "tag": self.tag, PREFIX + "acquired_at": format_time(self.acquired_at),
                PREFIX + "ttl": f"{self.ttl:g}", PREFIX + "message": self.message}

    @classmethod
    def from_labels(cls, found: dict[str, str]) -> "LockInfo":
        """Read a lock from container labels; ValueError if they are not a dockship lock's."""
        def get(key: str) -> str:
            value = found.get(PREFIX + key)
            if value is None:
                raise ValueError(f"label {PREFIX + key} is missing")
            return value
        acquired = parse_time(get("acquired_at"))
        if PREFIX + "ttl" in found:
            ttl = float(get("ttl"))
        else:   # a lock written before leases had a TTL label: its first expiry tells it
            ttl = (parse_time(get("expires_at")) - acquired).total_seconds()
        if not ttl > 0 or ttl == float("inf"):
            raise ValueError(f"label {PREFIX}ttl is not a positive number of seconds")
        return cls(env=get("env"), service=get("service"), holder=get("holder"),
                   deploy_id=get("deploy_id"), tag=get("tag"), acquired_at=acquired, ttl=ttl,
                   message=found.get(PREFIX + "message", ""))


@dataclass(frozen=True)
class Found:
    """A lock container as read from one engine."""

    container_id: str
    info: LockInfo | None     # None: labels unreadable (not made by this dockship, or damaged)
    idle: float = 0.0         # seconds since its last renewal, by the node engine's clock
    problem: str = ""
    advice: str = ""          # how to remove an unreadable lock, where it is no container

    @property
    def expired(self) -> bool:
        return self.info is not None and self.idle >= self.info.ttl

    def describe(self, now: datetime | None = None) -> str:
        """`environment 'stage' service 'hello' is locked by ... expires in 28m`."""
        info = self.info
        if info is None:
            return f"a container that is not a dockship lock ({self.problem})"
        now = now or utc_now()
        since = info.acquired_at
        when = since.strftime("%H:%M:%SZ") if since.date() == now.date() \
            else since.strftime("%Y-%m-%d %H:%M:%SZ")
        about = ", ".join(a for a in (f"deploy {_short(info.deploy_id)}",
                                      f"tag {info.tag}" if info.tag else "",
                                      info.message) if a)
        left = info.ttl - self.idle
        expiry = (f"expires in {human_duration(left)} unless renewed" if left > 0
                  else f"expired {human_duration(-left)} ago")
        return (f"environment {info.env!r} service {info.service!r} is locked by {info.holder} "
                f"since {when} ({about}), {expiry}")


def _short(deploy_id: str) -> str:
    return deploy_id if len(deploy_id) <= 12 else deploy_id[:12] + "..."


def lock_name(env: str, service: str) -> str:
    return stateimage.state_name(KIND, env, service)


class Taken(Exception):
    """The lock's name is taken on this engine (someone else's lock, or one being made)."""


class Gone(Exception):
    """Our lock container is no longer there: it was taken over."""


class LockStore(Protocol):
    """One node's side of the lock: the four things a lease needs, atomic on the engine."""

    node: str

    def create(self, info: LockInfo) -> str: ...          # our container id, or Taken
    def read(self) -> Found | None: ...                   # None: no lock on this node
    def renew(self, container_id: str) -> None: ...       # Gone if it is not there any more
    def remove(self, container_id: str) -> bool: ...      # False if it was already gone


class DockerLockStore:
    """The lock as a created container on a Docker engine (stateimage.py)."""

    def __init__(self, node: str, client: docker.DockerClient, env: str, service: str):
        self.node, self.client, self.env, self.service = node, client, env, service
        self.name = lock_name(env, service)

    def create(self, info: LockInfo) -> str:
        try:
            return stateimage.create_state_container(self.client, self.name, KIND, info.to_labels())
        except docker.errors.APIError as exc:
            if exc.status_code == 409:
                raise Taken(self.node) from None
            raise

    def read(self) -> Found | None:
        container = stateimage.inspect(self.client, self.name)
        if container is None:
            return None
        cid = container["Id"]
        try:
            info = LockInfo.from_labels(stateimage.labels_of(container))
        except ValueError as exc:
            return Found(cid, None, problem=str(exc))
        if (info.env, info.service) != (self.env, self.service):
            return Found(cid, None, problem=f"it is the lock of environment {info.env!r} "
                                            f"service {info.service!r} (name clash)")
        renewed = parse_time(container["Created"])
        try:
            lease = stateimage.path_mtime(self.client, cid, LEASE_DIR)
        except docker.errors.NotFound:
            return None   # removed while we looked
        if lease is not None and lease > renewed:
            renewed = lease
        now = parse_time(self.client.api.info()["SystemTime"])
        return Found(cid, info, idle=(now - renewed).total_seconds())

    def renew(self, container_id: str) -> None:
        # The content is for people; the engine's mtime of the directory is the lease.
        try:
            stateimage.put_files(self.client, container_id,
                                 {f"{LEASE_DIR}/renewed": format_time(utc_now()).encode()},
                                 parents=False)
        except docker.errors.NotFound:
            raise Gone(self.node) from None

    def remove(self, container_id: str) -> bool:
        return stateimage.remove(self.client, container_id)


def docker_stores(engines: Sequence[tuple[str, docker.DockerClient]], env: str,
                  service: str) -> list[DockerLockStore]:
    return [DockerLockStore(node, client, env, service) for node, client in engines]


def read_lock(client: docker.DockerClient, env: str, service: str) -> Found | None:
    """The lock of env/service on this engine (expired or not), or None if there is none.

    A container under the lock's name whose labels are not a readable lock
    raises DockshipError: it blocks every deployment until someone removes it.
    """
    found = DockerLockStore("", client, env, service).read()
    if found is not None and found.info is None:
        raise DockshipError(_unreadable_message(env, service, None, found))
    return found


def _unreadable_message(env: str, service: str, node: str | None, found: Found) -> str:
    where = f" on node {node}" if node else ""
    if found.advice:
        return (f"environment {env!r} service {service!r} is locked{where} by something that is "
                f"not a dockship lock ({found.problem}); {found.advice}")
    return (f"environment {env!r} service {service!r} is locked{where} by container "
            f"{lock_name(env, service)} ({found.container_id[:12]}) whose labels are not a "
            f"dockship lock ({found.problem}); if no deployment is running, remove it with "
            f"`docker rm {found.container_id[:12]}`")


class _Conflict(Exception):
    """A node is held by someone else (found None: someone is making the lock right now)."""

    def __init__(self, node: str, found: Found | None):
        super().__init__(node)
        self.node, self.found = node, found


class DeployLock:
    """The deploy lock of one environment/service on a set of nodes: take, renew, release.

        lock = DeployLock(docker_stores(engines, "stage", "hello"), env="stage",
                          service="hello", tag="1.4.0", deploy_id=plan.deploy_id)
        lock.acquire()
        with LeaseKeeper(lock, on_lost=halt.trip):
            ... roll ...
        lock.release()
    """

    def __init__(self, stores: Sequence[LockStore], *, env: str, service: str, tag: str,
                 deploy_id: str, ttl: float = DEFAULT_TTL, wait: float = 0,
                 holder: str | None = None, message: str = "", poll_every: float = 1.0,
                 parallel_limit: int = DEFAULT_PARALLEL):
        if not ttl > 0 or ttl == float("inf"):
            raise ValueError("ttl must be a positive number of seconds")
        if not wait >= 0 or wait == float("inf"):
            raise ValueError("wait must be a finite number of seconds, not negative")
        if not deploy_id:
            raise ValueError("a deploy lock needs a deploy id")
        names = [s.node for s in stores]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate node names in {names}")
        # Sorted: ordered locking is what keeps two deployments from deadlocking.
        self.stores = tuple(sorted(stores, key=lambda s: s.node))
        self.info = LockInfo(env, service, holder or default_holder(), deploy_id, tag, utc_now(),
                             float(ttl), message)
        self.wait, self.poll_every = float(wait), float(poll_every)
        self.parallel = max(1, parallel_limit)
        self.held: dict[str, str] = {}             # node -> container id of our lock
        self.renew_failure = ""                    # why the last renewal failed somewhere
        self._touched: set[str] = set()            # nodes where a create may have happened

    @property
    def nodes(self) -> list[str]:
        return [s.node for s in self.stores]

    def __repr__(self) -> str:
        return (f"DeployLock({self.info.env}/{self.info.service}, deploy {self.info.deploy_id}, "
                f"held on {sorted(self.held)})")

    # -- take -------------------------------------------------------------------------

    def acquire(self, on_taken: Callable[[str], object] | None = None, *,
                halt: Halt | None = None) -> "DeployLock":
        """Take the lock on every node, or on none; wait up to `wait` seconds for a holder.

        `on_taken(node)` runs as soon as the lock is ours on a node (work that
        needs the lock there, done on this pass instead of one of its own); its
        failures are ignored. Raises LockHeld (exit 3) naming the holder,
        Unreachable naming a node whose engine did not answer, `Halted` if
        `halt` trips while waiting for a holder (nothing is held then).
        """
        halt = halt or Halt()
        deadline = time.monotonic() + self.wait
        while True:
            if halt.is_set():
                raise Halted(f"{halt.reason} before the deploy lock was taken; nothing was changed",
                             halt.signum)
            try:
                self._acquire_all(on_taken)
                return self
            except _Conflict as conflict:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._held_error(conflict) from None
                # ±20 % jitter, so contenders polling the same lock do not stay in step
                halt.pause(min(left, self.poll_every * random.uniform(0.8, 1.2)),
                           "waiting for the deploy lock")

    def _acquire_all(self, on_taken: Callable[[str], object] | None) -> None:
        first = self.stores[0]

        def take(store: LockStore) -> None:
            if store.node not in self.held:
                self.held[store.node] = self._take(store)
            if on_taken is not None:
                try:
                    on_taken(store.node)
                except Exception:  # noqa: BLE001 - best effort by contract
                    pass
        try:
            if first.node not in self.held:   # contenders meet here, alone
                self.held[first.node] = self._take(first)
            # The winner takes the rest at once; the first node's on_taken runs beside them.
            errors = [exc for _, _, exc in parallel.each(self.stores, take, limit=self.parallel)
                      if exc]
            if errors:
                raise errors[0]
        except BaseException:
            self.release()  # all or nothing; where giving back fails, the lease runs out
            raise

    def _take(self, store: LockStore) -> str:
        """Our lock's container id on one node, taking over a lease that ran out."""
        try:
            taken = poll(lambda: self._try_take(store), within=SETTLE_SECONDS)
        except stateimage.ENGINE_ERRORS as exc:
            raise engine_failure(store.node, exc, "take the deploy lock") from None
        if taken is None:
            raise _Conflict(store.node, None)    # still being made or removed by others
        return taken

    def _try_take(self, store: LockStore) -> str | None:
        """One attempt: our container id; None to look again; _Conflict if held."""
        self._touched.add(store.node)
        try:
            return store.create(self.info)
        except Taken:
            pass
        try:
            found = store.read()
        except docker.errors.APIError as exc:
            # A contender creating or removing the lock right now can make the engine answer
            # 404/409/500 about a half-made container: the race in progress, look again.
            if exc.status_code in (404, 409, 500):
                return None
            raise
        if found is None:
            return None      # the engine reserves a name before it can be inspected
        if found.info is not None and found.info.deploy_id == self.info.deploy_id:
            return found.container_id     # ours already (an earlier attempt)
        if not found.expired:
            raise _Conflict(store.node, found)
        again = store.read()  # expired: look once more just before removing it, by id
        if again is not None and again.container_id == found.container_id and again.expired:
            store.remove(found.container_id)
        return None

    def _held_error(self, conflict: _Conflict) -> LockHeld:
        found = conflict.found
        env, service = self.info.env, self.info.service
        if found is None:
            err = LockHeld(f"environment {env!r} service {service!r} is being locked by another "
                           f"deployment on node {conflict.node} right now; retry later or pass "
                           "--lock-wait SECONDS")
        elif found.info is None:
            err = LockHeld(_unreadable_message(env, service, conflict.node, found))
        else:
            advice = ("retry later, pass a longer --lock-wait, or wait for it to expire"
                      if self.wait > 0 else
                      "retry later, pass --lock-wait SECONDS, or wait for it to expire")
            waited = f" (waited {human_duration(self.wait)})" if self.wait > 0 else ""
            err = LockHeld(f"{found.describe()}{waited}; {advice}")
        err.found = found           # type: ignore[attr-defined]
        err.node = conflict.node    # type: ignore[attr-defined]
        return err

    # -- renew ------------------------------------------------------------------------

    def renew(self) -> list[str]:
        """Renew the lease on every node; the nodes whose engine did not answer.

        Raises LockLost if our lock is gone from a node (taken over).
        """
        lost: list[str] = []
        failed: list[str] = []
        by_node = {s.node: s for s in self.stores}

        def one(node: str) -> None:
            try:
                by_node[node].renew(self.held[node])
            except Gone:
                lost.append(node)

        for node, _, exc in parallel.each(sorted(self.held), one, limit=self.parallel):
            if exc is not None:
                failed.append(node)
                # a store that speaks for itself (etcd) says why; an engine's error would not
                self.renew_failure = last_line(exc) if isinstance(exc, DockshipError) else ""
        if lost:
            for node in lost:
                self.held.pop(node, None)
            raise LockLost(self._lost_message(sorted(lost), by_node[sorted(lost)[0]]))
        return failed

    def _lost_message(self, lost: list[str], store: LockStore) -> str:
        now_held = ""
        try:
            other = store.read()
            if other is not None and other.info is not None:
                now_held = (f"; it is now held by {other.info.holder} "
                            f"(deploy {_short(other.info.deploy_id)}, tag {other.info.tag})")
        except Exception:  # noqa: BLE001 - the message is only richer with it
            pass
        return (f"the deploy lock of environment {self.info.env!r} service "
                f"{self.info.service!r} was lost on {', '.join(lost)}: it was not renewed for "
                f"{human_duration(self.info.ttl)} and another deployment took it over{now_held}")

    # -- release ----------------------------------------------------------------------

    def release(self, before: Callable[[str], object] | None = None) -> list[str]:
        """Give the lock back on every node we may hold it on; the nodes where that failed.

        `before(node)` runs on each node still held just before its lock goes
        (history and pruning, under the lock); its failures are the caller's to
        record. Removes only containers carrying our deploy id, by id; never raises.
        """
        by_node = {s.node: s for s in self.stores}

        def give_back(node: str) -> None:
            store = by_node[node]
            if before is not None and node in self.held:
                try:
                    before(node)
                except Exception:  # noqa: BLE001 - the lock goes back anyway
                    pass
            cid = self.held.get(node)
            if cid is None:   # a create may have reached the engine without us hearing back
                found = store.read()
                if found is not None and found.info is not None \
                        and found.info.deploy_id == self.info.deploy_id:
                    cid = found.container_id
            if cid is not None:
                store.remove(cid)

        nodes = [n for n in reversed(self.nodes) if n in self._touched]
        failed = []
        for node, _, exc in parallel.each(nodes, give_back, limit=self.parallel):
            if exc is None:
                self.held.pop(node, None)
                self._touched.discard(node)
            else:
                failed.append(node)
        return failed


class LeaseKeeper:
    """Renews a held lock in the background every TTL/3 until stopped.

    If a renewal finds the lock taken over, or some node has gone half the
    TTL without a successful renewal (its engine does not answer), the lease
    is lost: `on_lost(reason)` is called once and renewing stops. Half the TTL
    leaves the holder time to stop before any contender may take over.
    """

    def __init__(self, lock: DeployLock, on_lost: Callable[[str], object], *,
                 every: float | None = None, give_up: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        ttl = lock.info.ttl
        self.lock, self.on_lost, self.clock = lock, on_lost, clock
        self.every = every if every is not None else ttl / 3
        self.give_up = give_up if give_up is not None else ttl / 2
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease", daemon=True)
        self._renewed = {node: clock() for node in lock.held}

    def __enter__(self) -> "LeaseKeeper":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            if not self.renew_once():
                return

    def renew_once(self) -> bool:
        """One round of renewal; False once the lease is lost."""
        try:
            failed = self.lock.renew()
        except LockLost as exc:
            return self._lose(str(exc))
        except Exception as exc:  # noqa: BLE001 - counts as a failed renewal everywhere
            failed, detail = list(self._renewed), str(exc)
        else:
            detail = self.lock.renew_failure or "its engine did not answer"
        now = self.clock()
        for node in self._renewed:
            if node not in failed:
                self._renewed[node] = now
        stale = sorted(n for n, t in self._renewed.items() if now - t >= self.give_up)
        if stale:
            return self._lose(f"the deploy lock could not be renewed on {', '.join(stale)} for "
                              f"{human_duration(self.give_up)} ({detail}); stopping before "
                              "another deployment may take it over")
        return True

    def _lose(self, reason: str) -> bool:
        self.lost = reason
        self.on_lost(reason)
        return False

