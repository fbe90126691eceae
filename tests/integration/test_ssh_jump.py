"""SSH as real fleets need it, on the lab: ssh_config, ProxyJump through the bastion, the agent.

node1's jump-only port (2222) answers only connections from the bastion
(an iptables rule in node1's namespace), so a roll that reaches it went
through the bastion. The module rolls its own service (`svcj`, port 18750,
a fresh package per session) and touches nothing else.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from contextlib import closing
from pathlib import Path

import pytest

from conftest import dockship
from dockship import configfile
from dockship.config import SSHSettings
from dockship.errors import Unreachable, UsageError
from dockship.sshengine import HostKeyRejected, ssh_docker_client
from rollkit import make_fleet

pytestmark = pytest.mark.lab

SERVICE = "svcj"
JUMP_PORT = 2222


@pytest.fixture(scope="module")
def fleet(lab, run_id, tmp_path_factory):
    return make_fleet(lab, run_id, tmp_path_factory.mktemp("jump"), prefix="j", port=18750,
                      versions={"1.0.0": "ok", "1.1.0": "ok"})


@pytest.fixture
def bastion(lab) -> dict:
    assert lab["bastion"]["up"], lab["bastion"]
    return lab["bastion"]


@pytest.fixture
def no_home_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A HOME with no ~/.ssh and no agent: only what a test names can authenticate."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


def _ssh_config(path: Path, lab: dict, bastion: dict, *, node_user: str = "root") -> Path:
    """Host aliases for node1's jump-only port and for the bastion, with keys and users."""
    jump = bastion["jump_only"]
    key = lab["ssh"]["key"]
    path.write_text(
        f"Host jnode1\n  HostName {jump['address']}\n  Port {jump['ssh_port']}\n"
        f"  User {node_user}\n  IdentityFile {key}\n  ProxyJump jbastion\n"
        f"Host jbastion\n  HostName {bastion['address']}\n  User {bastion['user']}\n"
        f"  IdentityFile {key}\n")
    return path


def _config(fleet, tmp_path: Path, ssh: dict, nodes: list[dict]) -> Path:
    data = fleet.config_data()
    data["environments"]["lab"]["nodes"] = nodes
    data["environments"]["lab"]["ssh"] = ssh
    return configfile.write(tmp_path / "jump.toml", data)


def _node1_via_bastion(lab: dict) -> dict:
    node1 = lab["nodes"][0]
    return {"name": node1["name"], "docker": "ssh://jnode1", "address": node1["address"],
            "zone": node1["zone"], "roles": ["web"]}


def _tags_on_node1(fleet) -> list[str]:
    return fleet.tags_on(fleet.nodes[0])


def test_the_jump_only_port_refuses_the_host_and_lab_status_shows_the_bastion(lab, bastion):
    jump = bastion["jump_only"]
    assert jump["node"] == lab["nodes"][0]["name"] and jump["address"] == lab["nodes"][0]["address"]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((jump["address"], jump["ssh_port"]), timeout=5).close()
    socket.create_connection((bastion["address"], bastion["ssh_port"]), timeout=5).close()
    shown = json.loads(dockship("lab", "status", "--json").stdout)["bastion"]
    assert shown["address"] == bastion["address"] and shown["up"] is True


def test_a_roll_through_the_bastion_by_proxyjump_in_ssh_config_succeeds(
        fleet, lab, bastion, tmp_path, no_home_keys):
    # No ssh.key and no ssh.user: ssh_config's IdentityFile and User serve node and bastion.
    ssh_config = _ssh_config(tmp_path / "ssh_config", lab, bastion)
    config = _config(fleet, tmp_path, {"known_hosts": lab["ssh"]["known_hosts"],
                                       "config": str(ssh_config)}, [_node1_via_bastion(lab)])
    for tag in ("1.0.0", "1.1.0"):
        proc = dockship("--config", str(config), "roll", "--env", "lab", "--service", SERVICE,
                        "--tag", tag, "--json")
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["result"] == "succeeded" and [n["name"] for n in report["nodes"]] == ["node1"]
        assert fleet.version_on(fleet.nodes[0]) == tag
    status = dockship("--config", str(config), "status", "--env", "lab", "--service", SERVICE,
                      "--json")
    assert status.returncode == 0, status.stderr
    assert "1.1.0" in status.stdout


def test_an_unknown_jump_host_key_is_refused_exit_2_nothing_changed(
        fleet, lab, bastion, tmp_path, no_home_keys):
    known = tmp_path / "known_hosts"
    lines = Path(lab["ssh"]["known_hosts"]).read_text().splitlines(keepends=True)
    known.write_text("".join(line for line in lines
                             if not line.startswith(f"{bastion['address']} ")))
    assert f"[{bastion['jump_only']['address']}]:{bastion['jump_only']['ssh_port']}" in \
        known.read_text()   # the node itself is known: only the jump host is not
    ssh_config = _ssh_config(tmp_path / "ssh_config", lab, bastion)
    config = _config(fleet, tmp_path, {"known_hosts": str(known), "config": str(ssh_config)},
                     [_node1_via_bastion(lab)])
    before = _tags_on_node1(fleet)
    proc = dockship("--config", str(config), "roll", "--env", "lab", "--service", SERVICE,
                    "--tag", "1.0.0")
    assert proc.returncode == 2, proc.stderr
    message = " ".join(proc.stderr.split())
    assert "jump host" in message and str(known) in message, message
    assert f"ssh-keyscan -p 22 {bastion['address']}" in message, message
    assert _tags_on_node1(fleet) == before


def test_explicit_ssh_user_wins_over_ssh_config_user(lab, bastion, tmp_path, no_home_keys):
    # ssh_config's User would be refused (sshd allows root only); ssh.user is taken instead.
    ssh_config = _ssh_config(tmp_path / "ssh_config", lab, bastion, node_user="nobody")
    known = Path(lab["ssh"]["known_hosts"])
    with pytest.raises(Unreachable, match="user nobody was not accepted"):
        ssh_docker_client("ssh://jnode1", ssh=SSHSettings(known_hosts=known, config=ssh_config),
                          connect_timeout=5)
    settings = SSHSettings(user="root", known_hosts=known, config=ssh_config)
    with closing(ssh_docker_client("ssh://jnode1", ssh=settings, connect_timeout=5)) as client:
        assert client.info()["Name"] == lab["nodes"][0]["name"]
        assert client.tunnel.target.endswith(f"via ssh://root@{bastion['address']}")


@pytest.fixture
def agent(tmp_path: Path):
    """A real ssh-agent on a socket of its own; stopped by its pid afterwards."""
    sock = tmp_path / "agent.sock"
    out = subprocess.run(["ssh-agent", "-a", str(sock), "-s"], capture_output=True, text=True,
                         check=True).stdout
    pid = int(out.split("SSH_AGENT_PID=", 1)[1].split(";", 1)[0])
    try:
        yield sock
    finally:
        os.kill(pid, 15)


def test_the_agent_is_used_when_it_holds_the_key(lab, agent, tmp_path, monkeypatch, no_home_keys):
    node2 = lab["nodes"][1]
    settings = SSHSettings(known_hosts=Path(lab["ssh"]["known_hosts"]), read_config=False)
    monkeypatch.setenv("SSH_AUTH_SOCK", str(agent))
    # The agent runs but holds no key yet: refused, naming what was offered.
    with pytest.raises(Unreachable, match="was not accepted with the ssh-agent's keys"):
        ssh_docker_client(node2["docker"], ssh=settings, connect_timeout=5)
    subprocess.run(["ssh-add", "-q", lab["ssh"]["key"]], check=True, capture_output=True,
                   env={**os.environ, "SSH_AUTH_SOCK": str(agent)})
    with closing(ssh_docker_client(node2["docker"], ssh=settings, connect_timeout=5)) as client:
        assert client.info()["Name"] == node2["name"]
    # ssh.agent = false: the agent is not asked, and no other key is there.
    with pytest.raises(UsageError, match="no SSH key to offer"):
        ssh_docker_client(node2["docker"], ssh=SSHSettings(
            known_hosts=settings.known_hosts, read_config=False, agent=False), connect_timeout=5)


def test_the_agent_also_serves_the_jump_host(lab, bastion, agent, tmp_path, monkeypatch,
                                             no_home_keys):
    ssh_config = tmp_path / "ssh_config"
    jump = bastion["jump_only"]
    ssh_config.write_text(f"Host {jump['address']}\n  ProxyJump root@{bastion['address']}\n")
    monkeypatch.setenv("SSH_AUTH_SOCK", str(agent))
    subprocess.run(["ssh-add", "-q", lab["ssh"]["key"]], check=True, capture_output=True,
                   env={**os.environ, "SSH_AUTH_SOCK": str(agent)})
    settings = SSHSettings(known_hosts=Path(lab["ssh"]["known_hosts"]), config=ssh_config)
    with closing(ssh_docker_client(jump["docker"], ssh=settings, connect_timeout=5)) as client:
        assert client.info()["Name"] == jump["node"]


def test_a_bastion_comes_up_idempotently_and_goes_with_down(tmp_path_factory):
    """On a lab of its own (subnet 10.77.8, one node): up twice restarts nothing, down removes all."""
    from dockship_lab import bastion as bastion_mod
    from dockship_lab.network import network_down, network_up
    from dockship_lab.nodes import nodes_down, nodes_up
    from dockship_lab.paths import LabPaths

    root = tmp_path_factory.mktemp("lab8")
    paths = LabPaths(root=root, run=Path("/run/dsl-test8"), cache=root / "cache", subnet="10.77.8")
    network_up(paths)
    try:
        nodes_up(paths, 1, bastion_mod.known_hosts_lines(paths))
        bastion_mod.bastion_up(paths)
        pids = sorted((paths.run / "bastion").glob("*.pid"))
        before = [p.read_text() for p in pids]
        assert len(before) == 2 and bastion_mod.info(paths).up
        bastion_mod.bastion_up(paths)
        assert [p.read_text() for p in pids] == before
        info = bastion_mod.info(paths)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((info.jump_only.address, JUMP_PORT), timeout=5).close()
        bastion_mod.bastion_down(paths)
        assert not bastion_mod.info(paths).up
        assert bastion_mod.netns(paths) not in subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert not (paths.run / "bastion").exists() and not (paths.root / "bastion").exists()
        assert not any(Path(f"/proc/{pid.strip()}").exists() for pid in before)
        bastion_mod.bastion_down(paths)       # nothing there: no error
    finally:
        bastion_mod.bastion_down(paths)
        nodes_down(paths)
        network_down(paths)
        if paths.run.exists():
            paths.run.rmdir()
