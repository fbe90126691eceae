"""SIGINT / SIGTERM while dockship resolves, plans or connects (design §2, §8).

The registry here accepts the connection and never answers, which is where a
real roll spends its first seconds. Without the signal rule the process
would sit out the registry's timeout and then exit 1; with it, the signal
ends it at once with 130 / 143 and `--json` still prints its object. The
test waits for the exit with a generous bound only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from configkit import minimal_config

SRC = Path(__file__).resolve().parents[2] / "src"


class SilentServer:
    """Accepts TCP connections and never sends a byte."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = threading.Event()
        self.held: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            self.accepted.set()

    def close(self) -> None:
        for c in self.held:
            c.close()
        self.sock.close()


@pytest.fixture
def silent():
    server = SilentServer()
    yield server
    server.close()


def config_for(tmp_path: Path, registry_port: int) -> Path:
    return minimal_config(tmp_path / "dockship.toml", index_url="http://127.0.0.1:9/simple/",
                          registry=f"127.0.0.1:{registry_port}", docker="ssh://root@127.0.0.1:9")


@pytest.mark.parametrize(("sig", "args"), [
    (signal.SIGTERM, ["roll", "--env", "stage", "--json"]),
    (signal.SIGINT, ["roll", "--env", "stage", "--tag", "1.0.0", "--dry-run", "--json"]),
    (signal.SIGTERM, ["rollback", "--env", "stage", "--tag", "1.0.0", "--json"]),
])
def test_a_signal_while_resolving_ends_at_once_touching_nothing(tmp_path, silent, sig, args):
    env = {**os.environ, "PYTHONPATH": str(SRC), "DOCKSHIP_REGISTRY_USER": "",
           "DOCKSHIP_REGISTRY_PASSWORD": "", "DOCKER_CONFIG": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "dockship", "--config",
                             str(config_for(tmp_path, silent.port)), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert silent.accepted.wait(60), "dockship never contacted the registry"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    name = signal.Signals(sig).name
    assert proc.returncode == 128 + sig, err
    assert f"stopped by {name}; nothing was touched" in err
    assert json.loads(out) == {"schema": 1, "error": f"stopped by {name}; nothing was touched",
                               "exit_code": 128 + sig}
