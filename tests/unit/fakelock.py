"""An in-memory node side of the deploy lock: lock.LockStore without an engine.

Each fake is one node engine holding at most one lock container. It has its
own *engine clock*, a number of seconds a test sets or advances (and can
skew against other nodes'): creation and every renewal are stamped with it,
and `read` reports `idle` as that clock's now minus the last stamp, which is
what the real engine's clock does for DockerLockStore. Nothing here reads
the wall clock.

Faults: `down` makes the engine stop answering (every call raises
ConnectionError); `fail(verb, ...)` makes the next calls of one verb raise.
Hooks: `after_read(fn)` runs fn once, right after the next read has looked
(so the caller holds a now stale answer), and `before_remove(fn)` runs fn
once just before the next remove: that is how tests land a renewal between
a contender's look and its removal. Every call is logged.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass

from dockship import lock
from dockship.lock import Found, LockInfo

_ids = itertools.count(1)


@dataclass
class LockBox:
    """The lock container on a fake engine."""

    id: str
    labels: dict[str, str]
    renewed_at: float          # engine clock at creation or last renewal
    renewals: int = 0


class FakeLockStore:
    """One node engine's lock container, on its own settable clock."""

    def __init__(self, node: str, *, clock: float = 0.0):
        self.node = node
        self.clock = float(clock)          # the engine's clock, seconds
        self.box: LockBox | None = None
        self.down = False                  # True: the engine does not answer at all
        self.log: list[tuple[str, ...]] = []
        self._faults: list[list] = []      # [verb, error, times left]
        self._after_read: list[Callable[[], object]] = []
        self._before_remove: list[Callable[[], object]] = []
        self._guard = threading.RLock()

    # -- set-up and faults ---------------------------------------------------------------

    def advance(self, seconds: float) -> None:
        """Time passes on this engine's clock."""
        with self._guard:
            self.clock += seconds

    def plant(self, info: LockInfo, *, idle: float = 0.0) -> str:
        """Put someone else's lock here, last renewed `idle` seconds ago by this clock."""
        return self.plant_labels(info.to_labels(), idle=idle)

    def plant_labels(self, labels: dict[str, str], *, idle: float = 0.0) -> str:
        with self._guard:
            assert self.box is None, f"{self.node} already holds a lock"
            self.box = LockBox(f"{self.node}-lock{next(_ids)}", dict(labels),
                               self.clock - idle)
            return self.box.id

    def fail(self, verb: str, error: BaseException | None = None, *, times: int = 1) -> None:
        """The next `times` calls of `verb` raise `error` (an engine that does not answer)."""
        self._faults.append([verb, error or ConnectionError(f"{self.node}: {verb} timed out"),
                             times])

    def after_read(self, fn: Callable[[], object]) -> None:
        self._after_read.append(fn)

    def before_remove(self, fn: Callable[[], object]) -> None:
        self._before_remove.append(fn)

    # -- what tests look at --------------------------------------------------------------

    @property
    def holder(self) -> LockInfo | None:
        """Whose lock is on this node now (None: no lock)."""
        with self._guard:
            return LockInfo.from_labels(self.box.labels) if self.box else None

    @property
    def container_id(self) -> str | None:
        return self.box.id if self.box else None

    def verbs(self) -> list[str]:
        return [entry[0] for entry in self.log]

    # -- LockStore -----------------------------------------------------------------------

    def _call(self, verb: str, *args: object) -> None:
        with self._guard:
            self.log.append((verb, *map(str, args)))
            if self.down:
                raise ConnectionError(f"engine of {self.node} does not answer")
            for fault in self._faults:
                if fault[0] == verb and fault[2] > 0:
                    fault[2] -= 1
                    raise fault[1]

    def create(self, info: LockInfo) -> str:
        self._call("create", info.deploy_id)
        with self._guard:
            if self.box is not None:
                raise lock.Taken(self.node)
            self.box = LockBox(f"{self.node}-lock{next(_ids)}", info.to_labels(), self.clock)
            return self.box.id

    def read(self) -> Found | None:
        self._call("read")
        with self._guard:
            box = self.box
            if box is None:
                found = None
            else:
                try:
                    info = LockInfo.from_labels(box.labels)
                except ValueError as exc:
                    found = Found(box.id, None, problem=str(exc))
                else:
                    found = Found(box.id, info, idle=self.clock - box.renewed_at)
        while self._after_read:
            self._after_read.pop(0)()
        return found

    def renew(self, container_id: str) -> None:
        self._call("renew", container_id)
        with self._guard:
            if self.box is None or self.box.id != container_id:
                raise lock.Gone(self.node)
            self.box.renewed_at = self.clock
            self.box.renewals += 1

    def remove(self, container_id: str) -> bool:
        while self._before_remove:
            self._before_remove.pop(0)()
        self._call("remove", container_id)
        with self._guard:
            if self.box is None or self.box.id != container_id:
                return False
            self.box = None
            return True


def stores(*names: str, **clocks: float) -> list[FakeLockStore]:
    """Fake engines for `names`; a keyword gives one node's engine clock (skew)."""
    return [FakeLockStore(n, clock=clocks.get(n, 0.0)) for n in names]
