"""The lab's build engine, and the bookkeeping every lab daemon shares.

The build engine is the Docker engine images are built on. If one answers
(`DOCKER_HOST`, or the default socket), the lab uses it and never touches it;
otherwise the lab starts `dockerd` on the default socket and records that in
its pid file, so `lab down` stops only an engine the lab started.

The daemon helpers below (`lab_pid`, `ensure_daemon`, `stop_lab_daemon`) are
used by every lab service: a daemon is found again by its pid file *and* its
command line, because after a crash a pid file may name a pid that now
belongs to some other process.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import docker
import docker.errors
import requests

from dockship_lab.paths import LabPaths
from dockship_lab.process import (LabError, port_open, read_pid, start_daemon, stop_daemon,
                                  wait_until)

DEFAULT_SOCKET = "/var/run/docker.sock"


# --- lab daemons ------------------------------------------------------------

def _argv_of(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def lab_pid(pidfile: Path, program: str) -> int | None:
    """The live pid of pidfile if that process really runs `program` (argv[0] or the script)."""
    pid = read_pid(pidfile)
    if pid is None:
        return None
    argv = _argv_of(pid)
    return pid if any(Path(a).name == program for a in argv[:2]) else None


def stop_lab_daemon(pidfile: Path, program: str, *, timeout: float = 15.0) -> bool:
    """Stop the daemon of pidfile if it is still `program`; drop a stale pid file. True if one ran."""
    if lab_pid(pidfile, program) is None:
        pidfile.unlink(missing_ok=True)
        return False
    return stop_daemon(pidfile, timeout=timeout)


def ensure_daemon(*, what: str, program: str, argv: Sequence[str], pidfile: Path,
                  logfile: Path, healthy: Callable[[], bool], timeout: float,
                  listen: tuple[str, int] | None = None, restart: bool = False,
                  before_start: Callable[[], None] | None = None,
                  env: dict[str, str] | None = None, cwd: Path | None = None) -> bool:
    """Reuse the daemon if it runs and is healthy (and `restart` is false), else (re)start it.

    Returns True if it was (re)started. `healthy` is a probe that may raise;
    the start waits until it passes, failing with the daemon's log tail.
    `listen` (host, port) must be free before a start: a port held by some
    other process would otherwise pass the health probe for a daemon that died.
    """
    if lab_pid(pidfile, program) is not None and not restart:
        try:
            if healthy():
                return False
        except Exception:  # noqa: BLE001 - a failing probe means "not healthy"
            pass
    stop_lab_daemon(pidfile, program)
    if listen is not None and port_open(*listen):
        raise LabError(f"cannot start {what}: {listen[0]}:{listen[1]} is already in use by a process "
                       f"the lab did not start (see `ss -ltnp 'sport = :{listen[1]}'`); stop it and retry")
    if before_start is not None:
        before_start()
    logfile.parent.mkdir(parents=True, exist_ok=True)
    with open(logfile, "a") as log:
        log.write(f"--- dockship lab: starting {' '.join(argv)}\n")
    start_daemon(argv, pidfile=pidfile, logfile=logfile, env=env, cwd=cwd)
    wait_until(healthy, timeout=timeout, what=what, logfile=logfile, pidfile=pidfile)
    if lab_pid(pidfile, program) is None:
        raise LabError(f"{what} exited right after starting (see {logfile})")
    return True


def require_program(program: str, package: str) -> str:
    """Full path of `program`, or a LabError saying which package installs it."""
    found = shutil.which(program)
    if found is None:
        raise LabError(f"{program} is not installed; install it with `apt-get install {package}`")
    return found


def log_path(paths: LabPaths, name: str) -> Path:
    return paths.root / "logs" / f"{name}.log"


# --- the build engine ------------------------------------------------------

def _pidfile(paths: LabPaths) -> Path:
    return paths.run / "dockerd.pid"


def engine_answers(base_url: str | None = None, timeout: float = 5) -> bool:
    """Does a Docker engine answer a ping? The lab's one engine check.

    base_url: a node engine's `unix://` socket, say; None is the build engine
    (`DOCKER_HOST`, or the default socket).
    """
    try:
        client = (docker.DockerClient(base_url=base_url, timeout=timeout) if base_url
                  else docker.from_env(timeout=timeout))
    except docker.errors.DockerException:
        return False
    try:
        return bool(client.ping())
    except (docker.errors.DockerException, requests.RequestException, OSError):
        return False
    finally:
        client.close()


def engine_started_by_lab(paths: LabPaths) -> bool:
    return lab_pid(_pidfile(paths), "dockerd") is not None


def build_client(timeout: int = 600) -> docker.DockerClient:
    """A client of the build engine (the one `engine_up` made sure answers)."""
    return docker.from_env(timeout=timeout)


def engine_up(paths: LabPaths) -> bool:
    """Make sure a build engine answers; start dockerd if none does. True if the lab started it (ever)."""
    if engine_answers():
        return engine_started_by_lab(paths)
    host = os.environ.get("DOCKER_HOST")
    if host and host not in (f"unix://{DEFAULT_SOCKET}", "unix:///run/docker.sock"):
        raise LabError(f"the build engine at DOCKER_HOST={host} does not answer; start it, "
                       "or unset DOCKER_HOST to let the lab start dockerd on the default socket")
    dockerd = require_program("dockerd", "docker.io")
    pidfile = _pidfile(paths)
    # dockerd keeps its own pid file; ours (written by start_daemon) must not be the
    # same file, or dockerd would find "itself" in it and refuse to start.
    argv = [dockerd, "--pidfile", str(paths.run / "dockerd.self.pid"), "-H", f"unix://{DEFAULT_SOCKET}"]
    ensure_daemon(what="build engine (dockerd)", program="dockerd", argv=argv, pidfile=pidfile,
                  logfile=log_path(paths, "dockerd"), healthy=engine_answers, timeout=90,
                  restart=True)
    return True


def engine_down(paths: LabPaths) -> bool:
    """Stop the build engine only if the lab started it. True if it stopped one."""
    stopped = stop_lab_daemon(_pidfile(paths), "dockerd", timeout=40)
    (paths.run / "dockerd.self.pid").unlink(missing_ok=True)
    return stopped
