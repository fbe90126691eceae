"""The lab's internal package index: pypiserver on 127.0.0.1:8081.

Open for reads and uploads (`-a . -P .`), no fallback to the public PyPI,
packages kept under the lab root. Builds reach it from inside their
containers because the lab builds with `network_mode="host"`.
It serves the PEP 503 HTML simple API only.
"""

from __future__ import annotations

import sys
from pathlib import Path

import requests

from dockship_lab.engine import ensure_daemon, lab_pid, log_path, stop_lab_daemon
from dockship_lab.paths import LabPaths
from dockship_lab.process import LabError

HOST = "127.0.0.1"
PORT = 8081
INDEX_URL = f"http://{HOST}:{PORT}/simple/"
UPLOAD_URL = f"http://{HOST}:{PORT}/"


def packages_dir(paths: LabPaths) -> Path:
    return paths.root / "packages"


def _pidfile(paths: LabPaths) -> Path:
    return paths.run / "pypiserver.pid"


def pypi_server_program() -> Path:
    """The pypi-server of this Python environment (the `lab` extra installs it)."""
    exe = Path(sys.executable).parent / "pypi-server"
    if not exe.exists():
        raise LabError(f"pypiserver is not installed in this Python environment ({exe} is missing); "
                       "install it with `pip install dockship[lab]`")
    return exe


def index_answers(timeout: float = 3) -> bool:
    try:
        resp = requests.get(INDEX_URL, timeout=timeout)
    except requests.RequestException:
        return False
    return resp.status_code == 200


def index_running(paths: LabPaths) -> bool:
    return lab_pid(_pidfile(paths), "pypi-server") is not None


def index_up(paths: LabPaths) -> bool:
    """Start (or reuse) the index; True if it was (re)started."""
    exe = pypi_server_program()
    pkgs = packages_dir(paths)
    pkgs.mkdir(parents=True, exist_ok=True)
    argv = [str(exe), "run", "-p", str(PORT), "-i", HOST, "-a", ".", "-P", ".",
            "--disable-fallback", str(pkgs)]
    return ensure_daemon(what=f"package index (pypiserver) at {UPLOAD_URL}", program="pypi-server",
                         argv=argv, pidfile=_pidfile(paths), logfile=log_path(paths, "pypiserver"),
                         healthy=index_answers, listen=(HOST, PORT), timeout=30)


def index_down(paths: LabPaths) -> None:
    stop_lab_daemon(_pidfile(paths), "pypi-server")
