"""The deploy lock: one deployment per (environment, service) at a time, kept on the nodes.

The lock of `stage`/`hello` is a created container named
`dockship-lock-stage-hello` on every node engine of the roll; its labels
(`io.dockship.lock.*`) say who holds it, for which deploy and tag, and until
when. Every operator and CI agent sees it (`docker ps -a --filter
label=io.dockship.lock.env`), and nothing outside the nodes is needed.

Rules:
- Taking it = creating that container, which an engine does atomically
  (409 Conflict for all but one creator).
- All or nothing: a deployment takes the lock on the first node of its roll
  (in name order) alone, then on all the others at once; if any is held by
  someone else it gives back what it took. Two deployments of the same
  fleet therefore meet at its first node, and nobody ever waits while
  holding a lock, so they cannot deadlock.
- Locks expire (Kamal's lock left behind after Ctrl-C is its users' top
  complaint). An expired lock is taken over by removing it *by container
  id* and creating a new one by name: of several contenders, one removes it
  (the others get 404) and one creates the new one (the others get 409 and
  see the winner's live lock).
- Labels cannot change, so a long roll extends its lease by writing an empty
  file `/dockship/lease/<new expiry>` into its own lock container (by id).
  A file name appears atomically, so a reader never sees half a lease; the
  latest of the label and the lease files is the expiry. If the container
  is gone (taken over after it expired), the lease write fails with 404 and
  the deployment learns it lost the lock (`LockLost`). Refresh well before
  expiry (`refresh_if_due` does it after a third of the TTL).
- Release removes only lock containers whose deploy id is ours, by id, and
  never raises: it returns the nodes where removal failed (those locks then
  expire by themselves).

Expiry is judged with the contender's clock against the holder's clock
(both should run NTP); with minutes of TTL, seconds of skew do not matter.
"""

from __future__ import annotations

import getpass
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone

import docker
import docker.errors

from dockship import parallel, stateimage
from dockship.config import DEFAULT_PARALLEL
from dockship.errors import DockshipError, LockHeld

KIND = "lock"
PREFIX = "io.dockship.lock."
LEASE_DIR = "/dockship/lease"
DEFAULT_TTL = 1800.0
_SETTLE_SECONDS = 5.0     # how long a contended take may keep retrying before it counts as held

Engines = Sequence[tuple[str, docker.DockerClient]]
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def default_holder() -> str:
    """Who is deploying, as people will read it: `alice@ci-7 pid 1234`."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in a bare container: not worth failing a deploy for
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


class LockLost(DockshipError):
    """Our lock expired and another deployment took it over while we were rolling."""

    exit_code = 1


@dataclass(frozen=True)
class LockInfo:
    env: str
    service: str
    holder: str             # e.g. "alice@ci-7 pid 1234"
    deploy_id: str
    tag: str
    acquired_at: datetime   # UTC
    expires_at: datetime    # UTC

    def to_labels(self) -> dict[str, str]:
        return {PREFIX + "env": self.env, PREFIX + "service": self.service,
                PREFIX + "holder": self.holder, PREFIX + "deploy_id": self.deploy_id,
                PREFIX + "tag": self.tag,
                PREFIX + "acquired_at": format_time(self.acquired_at),
                PREFIX + "expires_at": format_time(self.expires_at)}

    @classmethod
    def from_labels(cls, labels: dict[str, str]) -> "LockInfo":
        """Read a lock from container labels; ValueError if they are not a dockship lock's."""
        def get(key: str) -> str:
            value = labels.get(PREFIX + key)
            if value is None:
                raise ValueError(f"label {PREFIX + key} is missing")
            return value
        return cls(env=get("env"), service=get("service"), holder=get("holder"),
                   deploy_id=get("deploy_id"), tag=get("tag"),
                   acquired_at=parse_time(get("acquired_at")),
                   expires_at=parse_time(get("expires_at")))

    def expired(self, now: datetime) -> bool:
        return self.expires_at <= now

    def describe(self, now: datetime) -> str:
        """`environment 'stage' service 'hello' is locked by ... expires in 28m`."""
        since = self.acquired_at.astimezone(timezone.utc)
        when = since.strftime("%H:%M:%SZ") if since.date() == now.astimezone(timezone.utc).date() \
            else since.strftime("%Y-%m-%d %H:%M:%SZ")
        about = [f"deploy {_short(self.deploy_id)}" if self.deploy_id else "",
                 f"tag {self.tag}" if self.tag else ""]
        about_text = ", ".join(a for a in about if a)
        left = (self.expires_at - now).total_seconds()
        expiry = f"expires in {human_duration(left)}" if left > 0 \
            else f"expired {human_duration(-left)} ago"
        return (f"environment {self.env!r} service {self.service!r} is locked by {self.holder} "
                f"since {when}" + (f" ({about_text})" if about_text else "") + f", {expiry}")


def format_time(t: datetime) -> str:
    """UTC, ISO 8601 with microseconds and a Z: sorts as text in time order."""
    if t.tzinfo is None:
        raise ValueError("naive datetime: dockship times are UTC-aware")
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    t = datetime.fromisoformat(text.strip())
    if t.tzinfo is None:
        raise ValueError(f"time {text!r} has no timezone")
    return t.astimezone(timezone.utc)


def human_duration(seconds: float) -> str:
    """45s, 28m, 1h05m, 2d03h: coarse on purpose, for one-line messages."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _short(deploy_id: str) -> str:
    return deploy_id if len(deploy_id) <= 12 else deploy_id[:12] + "..."


def lock_name(env: str, service: str) -> str:
    return stateimage.state_name(KIND, env, service)


# --- reading -------------------------------------------------------------------------

@dataclass(frozen=True)
class _Found:
    """A lock container as read from one engine."""

    container_id: str
    info: LockInfo | None     # None: labels unreadable (not made by this dockship, or damaged)
    problem: str = ""


def _lease_expiry(client: docker.DockerClient, container_id: str) -> datetime | None:
    files = stateimage.get_files(client, container_id, LEASE_DIR)
    latest = None
    for name in files or ():
        try:
            t = parse_time(name)
        except ValueError:
            continue
        latest = t if latest is None or t > latest else latest
    return latest


def _read(client: docker.DockerClient, env: str, service: str) -> _Found | None:
    container = stateimage.inspect(client, lock_name(env, service))
    if container is None:
        return None
    cid = container["Id"]
    try:
        info = LockInfo.from_labels(stateimage.labels_of(container))
    except ValueError as exc:
        return _Found(cid, None, str(exc))
    if (info.env, info.service) != (env, service):
        return _Found(cid, None, f"it is the lock of environment {info.env!r} "
                                 f"service {info.service!r} (name clash)")
    try:
        lease = _lease_expiry(client, cid)
    except docker.errors.NotFound:
        return None  # removed while we looked
    if lease is not None and lease > info.expires_at:
        info = replace(info, expires_at=lease)
    return _Found(cid, info)


def read_lock(client: docker.DockerClient, env: str, service: str) -> LockInfo | None:
    """The lock of env/service on this engine (expired or not), or None if there is none.

    A container under the lock's name whose labels are not a readable lock
    raises DockshipError: it blocks every deployment until someone removes it.
    """
    found = _read(client, env, service)
    if found is None:
        return None
    if found.info is None:
        raise DockshipError(_unreadable_message(env, service, None, found))
    return found.info


def _unreadable_message(env: str, service: str, node: str | None, found: _Found) -> str:
    where = f" on node {node}" if node else ""
    return (f"environment {env!r} service {service!r} is locked{where} by container "
            f"{lock_name(env, service)} ({found.container_id[:12]}) whose labels are not a "
            f"dockship lock ({found.problem}); if no deployment is running, remove it with "
            f"`docker rm {found.container_id[:12]}`")


# --- the lock ------------------------------------------------------------------------

class _Conflict(Exception):
    """Internal: a node is held by someone else.

    found None: someone is creating the lock right now; found.info None: an
    unreadable container holds the name.
    """

    def __init__(self, node: str, found: _Found | None):
        super().__init__(node)
        self.node = node
        self.found = found


class DeployLock:
    """The deploy lock of one environment/service on a set of node engines.

    with DeployLock(engines, env="stage", service="hello", tag="1.4.0",
                    deploy_id=plan.deploy_id, wait=60) as lock:
        ... roll, calling lock.refresh_if_due() between steps ...
    # released here; lock.release_failed lists nodes where that failed
    """

    def __init__(self, engines: Engines, *, env: str, service: str, tag: str, deploy_id: str,
                 ttl: float = DEFAULT_TTL, wait: float = 0, holder: str | None = None,
                 poll: float = 1.0, clock: Clock = utc_now, parallel: int = DEFAULT_PARALLEL):
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        if wait < 0:
            raise ValueError("wait must not be negative")
        if not deploy_id:
            raise ValueError("a deploy lock needs a deploy id")
        names = [name for name, _ in engines]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate node names in {names}")
        # Sorted here too: ordered locking is what keeps two deployments from deadlocking.
        self.engines: tuple[tuple[str, docker.DockerClient], ...] = tuple(
            sorted(engines, key=lambda e: e[0]))
        self.env, self.service, self.tag, self.deploy_id = env, service, tag, deploy_id
        self.ttl, self.wait, self.poll = float(ttl), float(wait), float(poll)
        self.parallel = max(1, parallel)
        self.holder = holder or default_holder()
        self.clock = clock
        self.info: LockInfo | None = None          # ours, once acquired
        self.release_failed: list[str] = []        # set by __exit__
        # Work that needs the lock on a node (a ledger has one writer at a time), done on
        # the lock's own pass over the nodes instead of a pass of its own: `prepare` right
        # after a node is taken, `finish` just before it is given back. Failures are
        # listed, never raised: they must not cost a deployment its lock or its release.
        self.prepare: Callable[[str, docker.DockerClient], object] | None = None
        self.finish: Callable[[str, docker.DockerClient], object] | None = None
        self.finish_failed: list[str] = []
        self._held: dict[str, str] = {}            # node -> container id of our lock
        self._touched: set[str] = set()            # nodes where a create may have happened
        self._last_refresh = 0.0
        self._mutex = threading.Lock()

    def __repr__(self) -> str:
        return (f"DeployLock({self.env}/{self.service}, deploy {self.deploy_id}, "
                f"nodes {[n for n, _ in self.engines]}, held on {sorted(self._held)})")

    # context manager
    def __enter__(self) -> "DeployLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release_failed = self.release()

    @property
    def held(self) -> bool:
        """True from a successful acquire() until release() (or a LockLost)."""
        return self.info is not None and len(self._held) == len(self.engines)

    def _new_info(self) -> LockInfo:
        now = self.clock()
        return LockInfo(env=self.env, service=self.service, holder=self.holder,
                        deploy_id=self.deploy_id, tag=self.tag, acquired_at=now,
                        expires_at=now + timedelta(seconds=self.ttl))

    def acquire(self) -> "DeployLock":
        """Take the lock on every engine, or on none; wait up to `wait` seconds for a holder.

        Raises LockHeld (exit 3) naming the holder, Unreachable naming the
        node whose engine did not answer, DockshipError if an engine refused.
        """
        deadline = time.monotonic() + self.wait
        while True:
            try:
                self._acquire_all()
                return self
            except _Conflict as conflict:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise self._held_error(conflict) from None
                # ±20 % jitter, so contenders polling the same lock do not stay in step
                time.sleep(min(left, self.poll * random.uniform(0.8, 1.2)))

    def _acquire_all(self) -> None:
        info = self._new_info()
        labels = info.to_labels()
        try:
            # The first node in name order decides between contenders (they all try it first);
            # whoever holds it takes the other nodes at once, in parallel, still all or nothing.
            todo = [(node, client) for node, client in self.engines if node not in self._held]
            if todo and todo[0][0] == self.engines[0][0]:
                node, client = todo[0]
                self._held[node] = self._take(node, client, labels)

            def take_and_prepare(entry: tuple[str, docker.DockerClient]) -> str | None:
                node, client = entry     # the first node is taken already: prepare it only
                cid = None if node in self._held else self._take(node, client, labels)
                self._prepare(node, client)
                return cid

            errors = []
            for (node, _), cid, exc in parallel.each(todo, take_and_prepare, limit=self.parallel):
                if exc is not None:
                    errors.append(exc)    # re-raised below, first in node order
                elif cid is not None:
                    self._held[node] = cid
            if errors:
                raise errors[0]
        except BaseException:
            # All or nothing. Where giving back fails, our lock expires after the TTL.
            self.release_failed = self.release()
            raise
        self.info = info
        self._last_refresh = time.monotonic()

    def _prepare(self, node: str, client: docker.DockerClient) -> None:
        if self.prepare is not None:
            try:
                self.prepare(node, client)
            except Exception:  # noqa: BLE001 - best effort by contract (see __init__)
                pass

    def _take(self, node: str, client: docker.DockerClient, labels: dict[str, str]) -> str:
        """Create our lock on one engine, taking over an expired one; return its container id."""
        name = lock_name(self.env, self.service)
        settle_by = time.monotonic() + _SETTLE_SECONDS
        pause = 0.02
        while True:
            self._touched.add(node)
            try:
                return stateimage.create_state_container(client, name, KIND, labels)
            except stateimage.ENGINE_ERRORS as exc:
                if not (isinstance(exc, docker.errors.APIError) and exc.status_code == 409):
                    raise stateimage.engine_failure(node, exc, "create the lock") from None
            try:
                found = _read(client, self.env, self.service)
            except stateimage.ENGINE_ERRORS as exc:
                # A contender creating or removing the lock right now can make the engine
                # answer 404/500 about a half-made container ("RWLayer ... is unexpectedly
                # nil"): that is the race in progress, so look again until it settles.
                transient = isinstance(exc, docker.errors.APIError) and exc.status_code in (404, 409, 500)
                if not transient or time.monotonic() > settle_by:
                    raise stateimage.engine_failure(node, exc, "read the lock") from None
                found = None
            if found is None:
                # The engine reserves a name before the container can be inspected
                # (seen: a creator that loses the race and looks at once gets 404),
                # so another deployment is creating it right now, or just removed it.
                if time.monotonic() > settle_by:
                    raise _Conflict(node, None)
                time.sleep(pause)
                pause = min(pause * 2, 0.5)
                continue
            if found.info is None or (found.info.deploy_id != self.deploy_id
                                      and not found.info.expired(self.clock())):
                raise _Conflict(node, found)
            if found.info.deploy_id == self.deploy_id:
                return found.container_id  # ours already (a retry, or an earlier attempt)
            if time.monotonic() > settle_by:
                raise _Conflict(node, found)  # expired, but others keep beating us to it
            # Expired: remove exactly that container (by id, so never a newer lock).
            # If another contender got there first this is a no-op, and the next
            # create tells who won.
            try:
                stateimage.remove(client, found.container_id)
            except stateimage.ENGINE_ERRORS as exc:
                raise stateimage.engine_failure(node, exc, "remove the expired lock") from None

    def _held_error(self, conflict: _Conflict) -> LockHeld:
        found = conflict.found
        if found is None:
            err = LockHeld(f"environment {self.env!r} service {self.service!r} is being locked "
                           f"by another deployment on node {conflict.node} right now; retry "
                           f"later or pass --lock-wait SECONDS")
        elif found.info is None:
            err = LockHeld(_unreadable_message(self.env, self.service, conflict.node, found))
        else:
            advice = ("retry later, pass a longer --lock-wait, or wait for it to expire"
                      if self.wait > 0 else
                      "retry later, pass --lock-wait SECONDS, or wait for it to expire")
            waited = f" (waited {human_duration(self.wait)})" if self.wait > 0 else ""
            err = LockHeld(f"{found.info.describe(self.clock())}{waited}; {advice}")
        err.info = found.info if found else None  # type: ignore[attr-defined]
        err.node = conflict.node                   # type: ignore[attr-defined]
        return err

    def release(self) -> list[str]:
        """Give the lock back on every node we may hold it on; never raises.

        Removes only containers carrying our deploy id, by id. Returns the
        nodes where that failed (their locks expire after the TTL).
        """
        failed: list[str] = []
        clients = dict(self.engines)

        def give_back(node: str) -> str | None:
            client = clients[node]
            if self.finish is not None and node in self._held:
                try:
                    self.finish(node, client)
                except Exception:  # noqa: BLE001 - listed in finish_failed, the lock goes anyway
                    self.finish_failed.append(node)
            try:
                cid = self._held.get(node)
                if cid is None:
                    # A create may have reached the engine without us hearing back.
                    found = _read(client, self.env, self.service)
                    if found is not None and found.info is not None \
                            and found.info.deploy_id == self.deploy_id:
                        cid = found.container_id
                if cid is not None:
                    stateimage.remove(client, cid)
                return None
            except Exception:
                return node

        nodes = [n for n, _ in reversed(self.engines) if n in self._touched]
        for node, bad, _ in parallel.each(nodes, give_back, limit=self.parallel):
            if bad is None:
                self._held.pop(node, None)
                self._touched.discard(node)
            else:
                failed.append(node)
        if not self._held:
            self.info = None
        return failed

    def refresh(self) -> list[str]:
        """Push our expiry to now + ttl on every node; return nodes whose engine failed.

        Raises LockLost if our lock is gone from a node (it expired and
        another deployment took it): the roll must stop.
        """
        with self._mutex:
            return self._refresh()

    def refresh_if_due(self) -> list[str]:
        """refresh() once a third of the TTL has passed since the last one; cheap otherwise."""
        with self._mutex:
            if time.monotonic() - self._last_refresh < self.ttl / 3:
                return []
            return self._refresh()

    def _refresh(self) -> list[str]:
        if not self.held or self.info is None:
            raise DockshipError("refresh of a deploy lock that is not held")
        expires = self.clock() + timedelta(seconds=self.ttl)
        lease = {f"{LEASE_DIR}/{format_time(expires)}": b""}
        failed: list[str] = []
        lost: list[str] = []
        for node, client in self.engines:
            try:
                stateimage.put_files(client, self._held[node], lease)
            except docker.errors.NotFound:
                lost.append(node)
            except stateimage.ENGINE_ERRORS:
                failed.append(node)
        if lost:
            for node in lost:
                self._held.pop(node, None)
            now_held = ""
            try:
                other = read_lock(dict(self.engines)[lost[0]], self.env, self.service)
                if other is not None:
                    now_held = (f"; it is now held by {other.holder} "
                                f"(deploy {_short(other.deploy_id)}, tag {other.tag})")
            except stateimage.ENGINE_ERRORS:
                pass
            raise LockLost(f"the deploy lock of environment {self.env!r} service "
                           f"{self.service!r} was lost on {', '.join(lost)}: it expired "
                           f"(ttl {human_duration(self.ttl)}) and another deployment took "
                           f"it over{now_held}")
        self.info = replace(self.info, expires_at=expires)
        self._last_refresh = time.monotonic()
        return failed
