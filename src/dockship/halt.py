"""Why a roll must stop taking nodes: a signal, or a lost deploy lock.

A `threading.Event` that remembers its first reason. Everything that waits
inside a roll (health gates, drains, bakes, hooks' callers) already takes an
event to cut a wait short; a Halt is that event, so a lost lease and a
Ctrl-C stop a roll the same way: the node in flight is finished or put
back, the others per `auto_rollback`, and the report says why.
"""

from __future__ import annotations

import threading


class Halt(threading.Event):
    def __init__(self) -> None:
        super().__init__()
        self._reason = ""
        self._guard = threading.Lock()

    def trip(self, reason: str) -> bool:
        """Stop the roll for `reason`; the first reason wins. True if this call tripped it."""
        with self._guard:
            if self.is_set():
                return False
            self._reason = reason
            self.set()
            return True

    @property
    def reason(self) -> str:
        return self._reason or ("interrupted" if self.is_set() else "")
