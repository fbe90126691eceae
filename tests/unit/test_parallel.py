"""The parallel executor every many-node step goes through."""

import threading
import time

from dockship import parallel


def test_every_outcome_comes_back_with_its_item_in_item_order():
    def work(n: int) -> int:
        time.sleep(0.01 * (5 - n))          # later items finish first
        if n == 2:
            raise ValueError("two")
        return n * 10

    out = parallel.each([0, 1, 2, 3, 4], work, limit=5)
    assert [(i, r) for i, r, _ in out] == [(0, 0), (1, 10), (2, None), (3, 30), (4, 40)]
    assert [type(e).__name__ if e else None for _, _, e in out] == [None, None, "ValueError", None, None]


def test_no_more_than_limit_run_at_once():
    running, peak, lock = 0, 0, threading.Lock()

    def work(_: int) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)
        with lock:
            running -= 1

    parallel.each(list(range(12)), work, limit=3)
    assert 1 <= peak <= 3    # with no bound, 12 would run at once


def test_nothing_to_do_is_an_empty_list():
    assert parallel.each([], lambda x: x, limit=4) == []
