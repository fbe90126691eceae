"""One way to wait for something that settles: look, back off, give up at a deadline.

Engines answer about state that is still moving (a name reserved before its
container can be inspected, a ledger a concurrent writer is creating): the
caller looks again, quickly at first, then less often, and stops at a
deadline instead of waiting forever.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(look: Callable[[], T | None], *, within: float, first: float = 0.02, most: float = 0.5,
         sleep: Callable[[float], None] = time.sleep,
         clock: Callable[[], float] = time.monotonic) -> T | None:
    """`look()` until it returns something other than None, or `within` seconds have passed.

    Returns what `look` found, or None after the deadline (having looked at
    least once, and once more at the deadline).
    """
    deadline = clock() + within
    pause = first
    while True:
        found = look()
        if found is not None:
            return found
        left = deadline - clock()
        if left <= 0:
            return None
        sleep(min(pause, left))
        pause = min(pause * 2, most)
