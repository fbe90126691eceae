"""One small parallel executor for everything done on many nodes at once.

Every outcome is kept, in the order of the items: one node's failure never
hides another's, and the caller decides which errors are its to report.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def each(items: Sequence[T], fn: Callable[[T], R], *, limit: int
         ) -> list[tuple[T, R | None, Exception | None]]:
    """fn(item) for every item, at most `limit` at a time: (item, result, None) or (item, None, error)."""
    if not items:
        return []
    if len(items) == 1:   # one node (a canary, a batch of 1): no pool to start and join
        try:
            return [(items[0], fn(items[0]), None)]
        except Exception as exc:  # noqa: BLE001 - returned with its item
            return [(items[0], None, exc)]
    out: list[tuple[T, R | None, Exception | None]] = []
    with ThreadPoolExecutor(max_workers=max(1, min(limit, len(items)))) as pool:
        futures = [(item, pool.submit(fn, item)) for item in items]
        for item, future in futures:
            try:
                out.append((item, future.result(), None))
            except Exception as exc:  # noqa: BLE001 - returned with its item
                out.append((item, None, exc))
    return out
