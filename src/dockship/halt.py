"""Why a roll must stop taking nodes: a signal, or a lost deploy lock.

A `threading.Event` that remembers its first reason. Everything that waits
inside a roll (health gates, drains, bakes, hooks' callers, the wait for a
busy deploy lock) already takes an event to cut a wait short; a Halt is that
event, so a lost lease and a Ctrl-C stop a roll the same way: the node in
flight is finished or put back, the others per `auto_rollback`, and the
report says why.

It also knows whether anything may yet be abandoned. Until the roll takes
its first lock nothing has been touched, so a signal may end the process at
once (design §8: resolving, planning and connecting stop within 2 s); from
`begin_changes()` on, a signal only trips the halt and the roll winds down.
"""

from __future__ import annotations

import threading

from dockship.errors import DockshipError


class Halted(DockshipError):
    """Stopped before anything changed: 130/143 for SIGINT/SIGTERM (design §2), else 1."""

    def __init__(self, message: str, signum: int | None = None):
        super().__init__(message)
        self.exit_code = 128 + signum if signum else 1


class Halt(threading.Event):
    def __init__(self) -> None:
        super().__init__()
        self._reason = ""
        self._signum: int | None = None
        self._changing = False
        self._guard = threading.Lock()

    def trip(self, reason: str, *, signum: int | None = None) -> bool:
        """Stop the roll for `reason`; the first reason wins. True if this call tripped it."""
        with self._guard:
            if self.is_set():
                return False
            self._reason = reason
            self._signum = signum
            self.set()
            return True

    @property
    def reason(self) -> str:
        return self._reason or ("interrupted" if self.is_set() else "")

    @property
    def signum(self) -> int | None:
        """The signal that tripped the halt, if one did."""
        return self._signum

    def begin_changes(self) -> None:
        """From here on a signal must let the roll wind down instead of ending the process."""
        self._changing = True

    @property
    def changing(self) -> bool:
        return self._changing

    def pause(self, seconds: float, doing: str) -> None:
        """Sleep, unless halted first: then raise `Halted` (nothing is held while pausing)."""
        if self.wait(seconds):
            raise Halted(f"{self.reason} while {doing}; nothing was changed", self._signum)
