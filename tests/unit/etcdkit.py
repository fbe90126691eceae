"""A real, throwaway etcd for unit tests: Debian's etcd on free 127.0.0.1 ports in a temp dir.

`etcd_url` (module scope) is its client URL. The server is the lab's
(`dockship_lab.etcdserver.etcd_argv`), with its own ports and data dir, so
tests never touch the lab's etcd. Without the `etcd` program the fixture
installs Debian's etcd-server when it runs as root (as scripts/install-deps.sh
does), and fails with the command to run otherwise.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence

import pytest

from dockship_lab.etcdserver import answers, etcd_argv


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _etcd_program() -> str:
    found = shutil.which("etcd")
    if found is None and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                        "etcd-server"], check=False, env=env, capture_output=True)
        found = shutil.which("etcd")
    if found is None:
        pytest.fail("these tests need Debian's etcd: apt-get install etcd-server "
                    "(scripts/install-deps.sh installs it)")
    return found


def start(tmp: os.PathLike, *, tls: Sequence[str] = (),
          ready: Callable[[str], bool] | None = None) -> tuple[subprocess.Popen, str]:
    """A started etcd member in `tmp` and its client URL (it answers when this returns).

    `tls`: etcd's certificate flags (--cert-file ...): it then serves https, and `ready(url)`
    says when it answers (the caller holds the client files)."""
    program = _etcd_program()
    port, peer = _free_port(), _free_port()
    log = open(os.path.join(tmp, "etcd.log"), "wb")
    scheme = "https" if tls else "http"
    proc = subprocess.Popen([*etcd_argv(program, os.path.join(tmp, "data"), port=port,
                                        peer_port=peer, name="unit", scheme=scheme), *tls],
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    log.close()
    url = f"{scheme}://127.0.0.1:{port}"
    ready = ready or (lambda u: answers(u, timeout=1))
    deadline = time.monotonic() + 30
    while not ready(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"etcd did not start: {open(os.path.join(tmp, 'etcd.log')).read()[-500:]}")
        time.sleep(0.1)
    return proc, url


def stop(proc: subprocess.Popen) -> None:
    """End a started etcd: SIGTERM, then SIGKILL if it lingers."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def etcd_url(tmp_path_factory) -> Iterator[str]:
    proc, url = start(tmp_path_factory.mktemp("etcd"))
    try:
        yield url
    finally:
        stop(proc)
