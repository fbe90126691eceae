"""ssh_config, dockship.toml's `ssh` table and the agent: who wins, resolved offline."""

import copy
import re
import subprocess
from pathlib import Path

import paramiko
import pytest

from dockship import sshroute
from dockship.config import SSHSettings, parse
from dockship.errors import ConfigError, UsageError

SSH_CONFIG = """\
Host web1
  HostName 10.9.0.5
  User deploy
  Port 2200
  IdentityFile {keys}/alias_key
  ProxyJump hop@bastion:2022
Host bastion
  HostName 10.9.0.9
  IdentityFile {keys}/bastion_key
Host hidden
  HostName 10.9.0.6
  ProxyJump bastion,web1
Host piped
  ProxyCommand nc %h %p
"""


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home with a key, a known_hosts and an ssh_config; no agent."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    ssh = tmp_path / ".ssh"
    ssh.mkdir()
    for name in ("id_ed25519", "alias_key", "bastion_key", "deploy_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / name)],
                       check=True)
    (ssh / "known_hosts").write_text("")
    (ssh / "config").write_text(SSH_CONFIG.format(keys=ssh))
    return tmp_path


def _conn(url: str, **settings):
    return sshroute.connection(url, SSHSettings(**settings), connect_timeout=5)


def test_a_host_alias_gives_hostname_user_port_identityfile_and_jump(home: Path):
    conn = _conn("ssh://web1")
    assert (conn.host, conn.user, conn.port) == ("10.9.0.5", "deploy", 2200)
    assert conn.connect_kwargs["key_filename"] == [str(home / ".ssh/alias_key")]
    jump = conn.gateway
    assert (jump.host, jump.user, jump.port) == ("10.9.0.9", "hop", 2022)
    assert jump.connect_kwargs["key_filename"] == [str(home / ".ssh/bastion_key")]
    assert [h.host for h in sshroute.hops(conn)] == ["10.9.0.9", "10.9.0.5"]


def test_a_jump_chain_is_opened_first_hop_first(home: Path):
    conn = _conn("ssh://root@hidden")
    assert [h.host for h in sshroute.hops(conn)] == ["10.9.0.9", "10.9.0.5", "10.9.0.6"]


def test_the_url_and_the_ssh_table_win_over_ssh_config(home: Path):
    key = home / ".ssh/deploy_key"
    conn = _conn("ssh://ops@web1:2201", user="other", key=key)
    assert (conn.host, conn.user, conn.port) == ("10.9.0.5", "ops", 2201)
    assert "key_filename" not in conn.connect_kwargs
    assert conn.connect_kwargs["pkey"].fingerprint == paramiko.PKey.from_path(key).fingerprint
    # ssh.key is the one key offered to the jump host too; ssh.user is for nodes only.
    assert conn.gateway.connect_kwargs["pkey"] is conn.connect_kwargs["pkey"]
    assert conn.gateway.user == "hop"
    assert _conn("ssh://web1", user="other").user == "other"


def test_without_any_ssh_config_the_url_is_taken_as_written(home: Path):
    conn = _conn("ssh://web1", read_config=False)
    assert (conn.host, conn.port, conn.gateway) == ("web1", 22, None)
    assert conn.connect_kwargs["key_filename"] == [str(home / ".ssh/id_ed25519")]


def test_ssh_config_path_replaces_the_users_file(home: Path, tmp_path: Path):
    other = tmp_path / "other_config"
    other.write_text("Host web1\n  HostName 10.9.0.77\n")
    conn = _conn("ssh://web1", config=other)
    assert (conn.host, conn.port, conn.gateway) == ("10.9.0.77", 22, None)


def test_the_agent_is_offered_only_when_running_and_not_refused(home: Path, monkeypatch):
    assert _conn("ssh://web1").connect_kwargs["allow_agent"] is False
    monkeypatch.setenv("SSH_AUTH_SOCK", str(home / "agent.sock"))
    assert _conn("ssh://web1").connect_kwargs["allow_agent"] is True
    assert _conn("ssh://web1", agent=False).connect_kwargs["allow_agent"] is False
    assert _conn("ssh://web1").connect_kwargs["look_for_keys"] is False


def test_no_key_and_no_agent_is_a_clear_error(home: Path):
    for name in ("id_ed25519", "alias_key"):
        (home / ".ssh" / name).unlink()
    with pytest.raises(UsageError, match="no SSH key to offer.*ssh.key.*IdentityFile.*ssh-agent"):
        _conn("ssh://web1")


def test_a_passphrase_key_is_refused_unless_an_agent_may_hold_it(home: Path, monkeypatch):
    key = home / "locked"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(key)], check=True)
    with pytest.raises(UsageError, match="passphrase-protected; load it into an ssh-agent"):
        _conn("ssh://web1", key=key)
    monkeypatch.setenv("SSH_AUTH_SOCK", str(home / "agent.sock"))
    conn = _conn("ssh://web1", key=key)
    assert "pkey" not in conn.connect_kwargs and conn.connect_kwargs["allow_agent"] is True
    assert sshroute.offered(conn, SSHSettings(key=key)) == f"key {key} or the ssh-agent's keys"


def test_known_hosts_comes_from_the_ssh_table_else_ssh_config_else_home(home: Path, tmp_path):
    mine = tmp_path / "mine"
    mine.write_text("")
    theirs = tmp_path / "theirs"
    theirs.write_text("")
    (home / ".ssh/config").write_text(f"Host web1\n  UserKnownHostsFile {theirs} /elsewhere\n")
    conn = _conn("ssh://web1")
    assert sshroute.known_hosts_path(conn, SSHSettings()) == theirs
    assert sshroute.known_hosts_path(conn, SSHSettings(known_hosts=mine)) == mine
    assert sshroute.known_hosts_path(_conn("ssh://web2"), SSHSettings()) == \
        home / ".ssh/known_hosts"


def test_unknown_hosts_are_refused_with_the_keyscan_hint(home: Path):
    conn = _conn("ssh://web1")
    key = paramiko.PKey.from_path(home / ".ssh/id_ed25519")
    for hop in sshroute.hops(conn):
        policy = sshroute.RefuseUnknownHost(hop, home / ".ssh/known_hosts")
        with pytest.raises(sshroute.HostKeyRejected, match=rf"ssh-keyscan -p {hop.port} {hop.host}"):
            policy.missing_host_key(hop.client, hop.host, key)
    assert sshroute.HostKeyRejected.exit_code == 2


def test_a_missing_known_hosts_file_is_named(home: Path):
    (home / ".ssh/known_hosts").unlink()
    with pytest.raises(UsageError, match=r"known_hosts file .*known_hosts does not exist"):
        _conn("ssh://web1")


def test_a_proxycommand_is_refused_not_run(home: Path):
    with pytest.raises(UsageError, match="ProxyCommand.*use ProxyJump"):
        _conn("ssh://piped")


def test_an_unreadable_ssh_config_is_named(home: Path):
    (home / ".ssh/config").write_bytes(b"Host \xff\n")
    with pytest.raises(UsageError, match=r"ssh_config .*config cannot be read"):
        _conn("ssh://web1")


BASE = {
    "index": {"url": "http://127.0.0.1:8081/simple/"},
    "registry": {"url": "127.0.0.1:5000"},
    "services": {"hello": {"package": "hello-svc", "port": 8000}},
    "environments": {"stage": {"nodes": [{"name": "node1", "docker": "ssh://web1"}]}},
}


def _ssh_table(ssh: dict, base: Path) -> SSHSettings:
    data = copy.deepcopy(BASE)
    data["environments"]["stage"]["ssh"] = ssh
    return parse(data, base_dir=base).environments["stage"].ssh


def test_the_ssh_table_reads_config_and_agent(tmp_path: Path):
    (tmp_path / "ssh_config").write_text("")
    assert _ssh_table({}, tmp_path) == SSHSettings()
    read = _ssh_table({"config": "ssh_config", "agent": False}, tmp_path)
    assert read.config == tmp_path / "ssh_config" and read.read_config and not read.agent
    off = _ssh_table({"config": False}, tmp_path)
    assert off.config is None and not off.read_config


@pytest.mark.parametrize("ssh, problem", [
    ({"config": True}, r"environments\.stage\.ssh\.config: give the path"),
    ({"config": "nowhere"}, r"environments\.stage\.ssh\.config: .*does not exist"),
    ({"agent": "yes"}, r"environments\.stage\.ssh\.agent: must be true or false"),
])
def test_bad_ssh_keys_are_named(tmp_path: Path, ssh: dict, problem: str):
    with pytest.raises(ConfigError) as info:
        _ssh_table(ssh, tmp_path)
    assert any(re.search(problem, p) for p in info.value.problems), info.value.problems


def test_proxyjump_none_connects_directly_and_a_loop_is_named(home: Path, tmp_path: Path):
    direct = tmp_path / "direct"
    direct.write_text("Host web1\n  ProxyJump none\n")
    assert _conn("ssh://web1", config=direct).gateway is None
    looping = tmp_path / "looping"
    looping.write_text("Host bastion\n  HostName 10.9.0.9\nHost *\n  ProxyJump bastion\n")
    with pytest.raises(UsageError, match="ProxyJump lines of ssh_config loop"):
        _conn("ssh://web2", config=looping)
