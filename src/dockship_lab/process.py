"""Background daemons of the lab, tracked by pid files in the lab's state dir.

The lab outlives the `dockship lab up` process that starts it, and CI runs on
a machine where an earlier session's daemons may still be alive or dead with
stale pid files; so every daemon is found again by its pid file and its
command line, never by memory.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from dockship.errors import DockshipError


class LabError(DockshipError):
    """The lab could not be brought up or down on this machine."""


def run(argv: Sequence[str], *, check: bool = True, input: str | None = None,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a short command (argv, never a shell string) and say clearly when it fails."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, input=input,
                          env=env)
    if check and proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise LabError(f"{' '.join(argv)} exited {proc.returncode}: {' | '.join(tail)}")
    return proc


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as dead.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def read_pid(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def start_daemon(argv: Sequence[str], *, pidfile: Path, logfile: Path,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> int:
    """Start argv detached from this process (own session), log to logfile.

    The pid written is the daemon's own pid, so `stop_daemon` can signal it
    even after the `dockship` process that started it is gone.
    """
    logfile.parent.mkdir(parents=True, exist_ok=True)
    pidfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "ab") as log:
        proc = subprocess.Popen(list(argv), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                env=env, cwd=cwd)
    pidfile.write_text(f"{proc.pid}\n")
    return proc.pid


def stop_daemon(pidfile: Path, *, timeout: float = 15.0) -> bool:
    """SIGTERM, wait, then SIGKILL the daemon of pidfile; True if one was running."""
    pid = read_pid(pidfile)
    if pid is None:
        pidfile.unlink(missing_ok=True)
        return False
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.1)
    if pid_alive(pid):
        _signal_group(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.1)
    pidfile.unlink(missing_ok=True)
    return True


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def wait_until(check: Callable[[], bool], *, timeout: float, what: str,
               logfile: Path | None = None, pidfile: Path | None = None) -> None:
    """Poll check() until true; fail with the daemon's last log lines otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - any failure of a probe means "not yet"
            pass
        if pidfile is not None and read_pid(pidfile) is None:
            raise LabError(f"{what} exited while starting{_log_tail(logfile)}")
        if time.monotonic() > deadline:
            raise LabError(f"{what} did not come up within {timeout:.0f}s{_log_tail(logfile)}")
        time.sleep(0.2)


def _log_tail(logfile: Path | None, lines: int = 5) -> str:
    if logfile is None or not logfile.exists():
        return ""
    tail = logfile.read_text(errors="replace").strip().splitlines()[-lines:]
    return f" (see {logfile}): " + " | ".join(tail) if tail else ""


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
