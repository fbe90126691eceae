"""Lab nodes against the real thing: namespaces, dockerd, sshd, SSH transport.

These tests run a small lab of their own on subnet 10.77.9 (names tagged
`dslab9-`), so they can run next to a real lab on 10.77.0 without touching
it. Their directories are fixed, not random, so a run killed half-way leaves
leftovers that the next run's `nodes_up` must repair: the same situation CI
meets after a session's processes are killed.

The tests share one lab per module and run in file order: the later ones
(kill, repair, shrink, tear down) build on the state the earlier ones left.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from contextlib import closing, suppress
from pathlib import Path

import docker
import pytest

from dockship.errors import Unreachable
from dockship_lab.network import network_down, network_up
from dockship_lab.nodes import (LabNode, client_key, existing_nodes, known_hosts_file,
                                node_healthy, nodes_down, nodes_up)
from dockship_lab.paths import BRIDGE, LabPaths
from dockship.sshengine import HostKeyRejected, ssh_docker_client

pytestmark = pytest.mark.lab  # root, docker.io and openssh-server: scripts/install-deps.sh

SUBNET = "10.77.9"
PREFIX = "dslab9-"
TINY = "dslab-tiny:1"


@pytest.fixture(scope="module")
def paths() -> LabPaths:
    root = Path(tempfile.gettempdir()) / "dockship-test-lab9"
    return LabPaths(root=root, run=Path("/run/dsl-test9"), cache=root / "cache", subnet=SUBNET)


@pytest.fixture(scope="module")
def lab(paths: LabPaths):
    network_up(paths)
    nodes = nodes_up(paths, 2)
    yield nodes
    nodes_down(paths)
    network_down(paths)
    shutil.rmtree(paths.root)  # only the client key is left by now
    paths.run.rmdir()


def _ssh_client(paths: LabPaths, n: LabNode,
                known_hosts: Path | None = None) -> docker.DockerClient:
    return ssh_docker_client(n.docker, client_key(paths), known_hosts or known_hosts_file(paths),
                             timeout=30, connect_timeout=5)


def _unix_client(n: LabNode) -> docker.DockerClient:
    return docker.DockerClient(base_url=n.docker_unix, timeout=30)


def _dockerd_pid(paths: LabPaths, n: LabNode) -> int:
    return int((paths.run / n.name / "dockerd.pid").read_text())


def _sshd_pid(paths: LabPaths, n: LabNode) -> int:
    return int((paths.run / n.name / "sshd.pid").read_text())


def _in_netns(netns: str, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nsenter", f"--net=/run/netns/{netns}", sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=20)


def _lab_pids(paths: LabPaths) -> list[int]:
    """Every process of the test lab, found independently of the code under test."""
    marks = (str(paths.root), str(paths.run), f"/{PREFIX}node")
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            text = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            text += (entry / "cgroup").read_text()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and any(m in text for m in marks):
            pids.append(int(entry.name))
    return pids


def _lab_mounts(paths: LabPaths) -> list[str]:
    marks = (str(paths.root), str(paths.run), f"/run/netns/{PREFIX}")
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if any(m in line for m in marks)]


def _tiny_image_tar() -> bytes:
    """A 2 MB root filesystem made of the host's own echo and sleep (no registry needed)."""
    files = {"/usr/bin/echo", "/usr/bin/sleep"}
    for binary in list(files):
        for line in subprocess.run(["ldd", binary], capture_output=True, text=True,
                                   check=True).stdout.splitlines():
            files.update(part for part in line.split() if part.startswith("/"))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(files):
            tar.add(os.path.realpath(path), arcname=path.lstrip("/"))
    return buffer.getvalue()


# -- the nodes as dockship sees them ----------------------------------------------


def test_nodes_are_described_as_the_config_needs(lab: list[LabNode], paths: LabPaths):
    assert [(n.name, n.address, n.zone, n.netns, n.docker) for n in lab] == [
        ("node1", "10.77.9.11", "a", "dslab9-node1", "ssh://root@10.77.9.11"),
        ("node2", "10.77.9.12", "b", "dslab9-node2", "ssh://root@10.77.9.12"),
    ]
    assert lab[0].docker_unix == f"unix://{paths.run}/node1/docker.sock"
    assert existing_nodes(paths) == lab


def test_each_node_has_its_own_engine_on_its_socket(lab: list[LabNode], paths: LabPaths):
    ids = set()
    for n in lab:
        with closing(_unix_client(n)) as client:
            info = client.info()
        assert info["DockerRootDir"] == str(paths.root / "nodes" / n.name / "docker")
        assert info["Name"] == n.name
        ids.add(info["ID"])
    assert len(ids) == len(lab)


def test_engine_is_reached_over_ssh_with_the_lab_key(lab: list[LabNode], paths: LabPaths):
    for n in lab:
        with closing(_ssh_client(paths, n)) as client:
            assert client.ping()
            # SetEnv DOCKER_HOST in the node's sshd: dial-stdio reached this node's engine.
            assert client.info()["DockerRootDir"] == str(paths.root / "nodes" / n.name / "docker")


def test_ssh_transport_carries_uploads_streams_and_containers(lab: list[LabNode], paths: LabPaths):
    with closing(_ssh_client(paths, lab[0])) as client:
        client.api.import_image_from_data(_tiny_image_tar(), repository=TINY.split(":")[0],
                                          tag=TINY.split(":")[1])
        assert client.containers.run(TINY, ["/usr/bin/echo", "hello"], remove=True) == b"hello\n"
        # Left running: later tests check what happens to it when the node is killed.
        # (A run killed half-way leaves it behind: repaired nodes keep their data.)
        for old in client.containers.list(all=True, filters={"name": "sleeper"}):
            old.remove(force=True)
        sleeper = client.containers.run(TINY, ["/usr/bin/sleep", "600"], detach=True,
                                        init=True, name="sleeper", ports={"8000/tcp": 8000})
        assert client.containers.get(sleeper.id).status == "running"


def test_hashed_known_hosts_are_understood(lab: list[LabNode], paths: LabPaths, tmp_path: Path):
    # Debian's ssh_config hashes known_hosts (HashKnownHosts yes): users' files look like this.
    hashed = tmp_path / "known_hosts"
    shutil.copy(known_hosts_file(paths), hashed)
    subprocess.run(["ssh-keygen", "-H", "-f", str(hashed)], check=True, capture_output=True)
    assert lab[0].address not in hashed.read_text()
    with closing(_ssh_client(paths, lab[0], known_hosts=hashed)) as client:
        assert client.ping()


def test_unknown_host_key_is_refused(lab: list[LabNode], paths: LabPaths, tmp_path: Path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyRejected, match=r"ssh-ed25519 SHA256:\S+ is not in .*known_hosts"):
        _ssh_client(paths, lab[0], known_hosts=empty)


def test_changed_host_key_is_refused(lab: list[LabNode], paths: LabPaths, tmp_path: Path):
    node2_key = (paths.root / "nodes/node2/sshd/ssh_host_ed25519_key.pub").read_text().split()[:2]
    forged = tmp_path / "known_hosts"
    forged.write_text(f"{lab[0].address} {' '.join(node2_key)}\n")
    with pytest.raises(HostKeyRejected, match="differs from the one in"):
        _ssh_client(paths, lab[0], known_hosts=forged)


def test_foreign_client_key_is_refused(lab: list[LabNode], paths: LabPaths, tmp_path: Path):
    key = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    with pytest.raises(Unreachable, match="was not accepted"):
        ssh_docker_client(lab[0].docker, key, known_hosts_file(paths), connect_timeout=5)


def test_node_reaches_the_host_and_the_other_node(lab: list[LabNode], paths: LabPaths):
    # The registry and Chef server listen on host_address; swarm needs node <-> node.
    with socket.create_server((paths.host_address, 0)) as server:
        port = server.getsockname()[1]
        accepted = threading.Thread(target=lambda: server.accept()[0].close(), daemon=True)
        accepted.start()
        code = ("import socket\n"
                f"socket.create_connection(('{paths.host_address}', {port}), timeout=5).close()\n"
                f"socket.create_connection(('{lab[1].address}', 22), timeout=5).close()\n")
        result = _in_netns(lab[0].netns, code)
        accepted.join(timeout=5)
    assert result.returncode == 0, result.stderr


# -- idempotence and repair ---------------------------------------------------------


def test_nodes_up_again_reuses_healthy_nodes(lab: list[LabNode], paths: LabPaths):
    before = [(_dockerd_pid(paths, n), _sshd_pid(paths, n)) for n in lab]
    assert nodes_up(paths, 2) == lab
    assert [(_dockerd_pid(paths, n), _sshd_pid(paths, n)) for n in lab] == before


def test_nodes_up_restarts_a_killed_engine(lab: list[LabNode], paths: LabPaths):
    node2_pid = _dockerd_pid(paths, lab[1])
    os.kill(_dockerd_pid(paths, lab[0]), signal.SIGKILL)
    assert not node_healthy(paths, lab[0])
    nodes_up(paths, 2)
    assert node_healthy(paths, lab[0])
    assert _dockerd_pid(paths, lab[1]) == node2_pid
    with closing(_ssh_client(paths, lab[0])) as client:
        assert client.containers.get("sleeper").status == "exited"
        client.containers.get("sleeper").start()


def test_ssh_client_survives_an_sshd_restart(lab: list[LabNode], paths: LabPaths):
    # A long roll must not die because a node's sshd was restarted under it.
    with closing(_ssh_client(paths, lab[1])) as client:
        assert client.ping()
        os.kill(_sshd_pid(paths, lab[1]), signal.SIGKILL)
        nodes_up(paths, 2)  # the new sshd also ends the old connection's session process
        assert client.ping()
        assert client.info()["Name"] == lab[1].name


def test_nodes_up_recovers_after_every_lab_process_was_killed(lab: list[LabNode], paths: LabPaths):
    # What CI meets: the session's processes are gone, namespaces, veths and mounts stay.
    for pid in _lab_pids(paths):
        with suppress(ProcessLookupError):   # gone already: it died with a parent killed before it
            os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)
    assert _lab_mounts(paths), "expected dockerd's mounts to outlive it"
    nodes_up(paths, 2)
    for n in lab:
        assert node_healthy(paths, n)
        with closing(_ssh_client(paths, n)) as client:
            assert client.ping()


def test_fewer_nodes_removes_the_extra_ones(lab: list[LabNode], paths: LabPaths):
    assert nodes_up(paths, 1) == lab[:1]
    assert existing_nodes(paths) == lab[:1]
    assert not Path(f"/run/netns/{lab[1].netns}").exists()
    assert not (paths.root / "nodes" / "node2").exists()
    assert lab[1].address not in known_hosts_file(paths).read_text()
    assert all(f"/{lab[1].name}/" not in line for line in _lab_mounts(paths))


def test_nodes_down_removes_everything_even_after_a_crash(lab: list[LabNode], paths: LabPaths):
    nodes = nodes_up(paths, 2)
    with closing(_ssh_client(paths, nodes[0])) as client:
        client.containers.get("sleeper").start()  # overlay and netns mounts exist now
    os.kill(_dockerd_pid(paths, nodes[0]), signal.SIGKILL)
    nodes_down(paths)
    assert existing_nodes(paths) == []
    assert _lab_pids(paths) == []
    assert _lab_mounts(paths) == []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert PREFIX not in netns and PREFIX not in links
    assert not (paths.root / "nodes").exists() and not known_hosts_file(paths).exists()
    network_down(paths)
    bridge = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", BRIDGE],
                            capture_output=True, text=True)
    assert f"{paths.host_address}/24" not in bridge.stdout
    # The bridge stays only while another lab (say the real one on 10.77.0) still uses it.
    assert bridge.returncode != 0 or " inet " in bridge.stdout
