"""When `dockship lock release` may remove a lock without --force."""

from __future__ import annotations

import os
import subprocess
import sys

from dockship.lock import Found, LockInfo
from dockship.lockops import abandoned
from dockship.times import utc_now


def found(holder: str, *, idle: float = 10.0, ttl: float = 1800.0) -> Found:
    return Found("c1", LockInfo("stage", "hello", holder, "d1", "1.4.0", utc_now(), ttl), idle)


def dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)


def test_an_expired_lease_is_abandoned_whoever_held_it():
    assert abandoned(found("alice@elsewhere pid 1", idle=1800.0), host="here")


def test_a_live_lease_of_a_dead_process_on_this_host_is_abandoned():
    assert abandoned(found(f"ci@here pid {dead_pid()}"), host="here")


def test_a_live_lease_of_a_running_process_is_not():
    assert not abandoned(found(f"ci@here pid {os.getpid()}"), host="here")


def test_a_live_lease_of_another_host_cannot_be_checked_so_it_is_not():
    assert not abandoned(found(f"ci@elsewhere pid {dead_pid()}"), host="here")


def test_an_unreadable_lock_needs_force():
    assert not abandoned(Found("c1", None, 10.0, problem="labels missing"), host="here")
    assert not abandoned(found("no pid here"), host="here")
