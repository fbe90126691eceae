"""Shared fixtures: the lab (brought up once per session), and throwaway package names.

Integration tests run against the real lab. The lab outlives a test run (a
second `make test` reuses it), so each session publishes its packages under
fresh names: nothing a test asserts depends on what an earlier run left.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))


@pytest.fixture(scope="session")
def lab() -> dict:
    """The lab's status JSON after an idempotent `lab up`."""
    import dockship_lab as lab_mod

    if os.geteuid() != 0:
        pytest.fail("the lab needs root (network namespaces, engines); run the tests as root")
    status = lab_mod.up(nodes=3)
    return status.to_json()


@pytest.fixture(scope="session")
def swarm_lab() -> dict:
    """The lab's status JSON after an idempotent `lab up --swarm`: the nodes form one swarm
    (`"swarm": {"manager", ...}`) and the config has environment `labswarm`."""
    import dockship_lab as lab_mod

    if os.geteuid() != 0:
        pytest.fail("the lab needs root (network namespaces, engines); run the tests as root")
    return lab_mod.up(nodes=3, swarm=True).to_json()


@pytest.fixture(scope="session")
def build_engine(lab):
    """The build engine, with the state image that locks and ledgers are made from."""
    import docker

    from dockship import stateimage

    client = docker.from_env(timeout=60)
    client.ping()
    stateimage.ensure_state_image(client)
    return client


@pytest.fixture(scope="session")
def node_engines(lab) -> list:
    """(name, client) for every lab node engine, over its local socket."""
    import docker

    from dockship_lab.paths import LabPaths

    found = []
    for sock in sorted(LabPaths.default().run.glob("node*/docker.sock")):
        client = docker.DockerClient(base_url=f"unix://{sock}", timeout=10)
        client.ping()
        found.append((sock.parent.name, client))
    assert len(found) >= 2, f"the lab has {len(found)} node engines; these tests need two"
    return found


def remove_containers(clients, **filters) -> None:
    """Remove (forced) every container matching the filters on each engine."""
    for client in clients:
        for c in client.api.containers(all=True, filters=filters):
            client.api.remove_container(c["Id"], force=True)


@pytest.fixture(scope="session")
def run_id() -> str:
    return uuid.uuid4().hex[:8]


def dockship(*args: str, env: dict | None = None, input: str | None = None
             ) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess, as users and CI do."""
    return subprocess.run([sys.executable, "-m", "dockship", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, input=input, timeout=900)


def json_out(proc: subprocess.CompletedProcess[str]) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)
