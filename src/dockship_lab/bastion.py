"""The lab's bastion: a jump host, and a node port that only the bastion can reach.

Many fleets are reached only through a bastion (ProxyJump). To prove that
dockship really jumps, and does not quietly connect straight to the node,
the lab has:

- the bastion: a network namespace on the lab bridge (address `.10`) with
  an sshd that forwards connections and runs no commands (no engine there);
- a jump-only sshd on node1 (port 2222, its own host key, the same engine
  as node1's port 22), behind an iptables rule in node1's namespace that
  rejects every source but the bastion's address. A connection from the
  host to that port is refused; the same connection through the bastion
  reaches node1's engine.

Both host keys are in the lab's known_hosts (`nodes_up`'s extra lines).
Everything is found again from names and paths, as for nodes: `lab up`
repairs a half-there bastion, `lab down` removes it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dockship_lab.mounts import remove_tree
from dockship_lab.network import delete_link, link_exists, name_prefix
from dockship_lab.nodes import (DAEMON_ENV, SSH_PORT, SSH_USER, SSHD, LabNode, _kill, _mentions,
                                _netns_inode, _netns_names, _own_pid, _processes, _pub,
                                _write_if_changed, node, plumb, sshd_config)
from dockship_lab.paths import LabPaths
from dockship_lab.process import LabError, port_open, run, start_daemon, stop_daemon, wait_until

NAME = "bastion"
JUMP_PORT = 2222                 # node1's jump-only sshd
JUMP_NODE = 1
SSHD_TIMEOUT = 15.0


@dataclass(frozen=True)
class JumpOnly:
    """node1's port that answers only connections coming from the bastion."""

    node: str
    address: str
    ssh_port: int
    docker: str          # ssh://root@ADDRESS:PORT, to be reached with ProxyJump through the bastion


@dataclass(frozen=True)
class BastionInfo:
    """The bastion as `lab status --json` shows it."""

    name: str
    address: str
    ssh_port: int
    user: str
    jump_only: JumpOnly
    up: bool             # both sshds run, the bastion's answers, the rule is in place


@dataclass(frozen=True)
class _Files:
    dir: Path
    host_key: Path
    sshd_config: Path
    sshd_log: Path
    sshd_pid: Path
    jump_host_key: Path
    jump_sshd_config: Path
    jump_sshd_log: Path
    jump_sshd_pid: Path


def _files(paths: LabPaths) -> _Files:
    state, runtime = paths.root / NAME, paths.run / NAME
    return _Files(dir=state, host_key=state / "ssh_host_ed25519_key",
                  sshd_config=state / "sshd_config", sshd_log=state / "sshd.log",
                  sshd_pid=runtime / "sshd.pid",
                  jump_host_key=state / "jump_host_ed25519_key",
                  jump_sshd_config=state / "jump_sshd_config", jump_sshd_log=state / "jump_sshd.log",
                  jump_sshd_pid=runtime / "jump_sshd.pid")


def address(paths: LabPaths) -> str:
    return paths.node_address(0)


def netns(paths: LabPaths) -> str:
    return f"{name_prefix(paths)}{NAME}"


def _veth(paths: LabPaths) -> str:
    return f"{name_prefix(paths)}bh"


def _jump_node(paths: LabPaths) -> LabNode:
    return node(paths, JUMP_NODE)


def info(paths: LabPaths) -> BastionInfo:
    n = _jump_node(paths)
    return BastionInfo(
        name=NAME, address=address(paths), ssh_port=SSH_PORT, user=SSH_USER,
        jump_only=JumpOnly(node=n.name, address=n.address, ssh_port=JUMP_PORT,
                           docker=f"ssh://{SSH_USER}@{n.address}:{JUMP_PORT}"),
        up=healthy(paths))


def known_hosts_lines(paths: LabPaths) -> list[str]:
    """The bastion's and the jump-only port's host keys, made if missing, as known_hosts lines."""
    files = _files(paths)
    files.dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for key, host in ((files.host_key, address(paths)),
                      (files.jump_host_key, f"[{_jump_node(paths).address}]:{JUMP_PORT}")):
        if not (key.exists() and _pub(key).exists()):
            key.unlink(missing_ok=True)
            _pub(key).unlink(missing_ok=True)
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"dockship-lab-{NAME}",
                 "-f", str(key)])
        key_type, key_b64 = _pub(key).read_text().split()[:2]
        lines.append(f"{host} {key_type} {key_b64}\n")
    return lines


def bastion_up(paths: LabPaths) -> None:
    """Bring the bastion and node1's jump-only port up (node1 must be up), reusing what is healthy."""
    files = _files(paths)
    known_hosts_lines(paths)
    n = _jump_node(paths)
    plumb(paths, netns(paths), _veth(paths), address(paths))
    bastion_changed = _write_if_changed(files.sshd_config, sshd_config(
        paths, listen=f"{address(paths)}:{SSH_PORT}", host_key=files.host_key,
        pid_file=files.sshd_pid,
        # a jump host: it forwards, and runs nothing
        extra=["AllowTcpForwarding yes", "PermitTTY no", "ForceCommand /usr/sbin/nologin"]))
    jump_changed = _write_if_changed(files.jump_sshd_config, sshd_config(
        paths, listen=f"{n.address}:{JUMP_PORT}", host_key=files.jump_host_key,
        pid_file=files.jump_sshd_pid, docker_host=n.docker_unix))
    _ensure_rule(paths)
    _ensure_sshd(netns(paths), files.sshd_config, files.sshd_pid, files.sshd_log,
                 restart=bastion_changed)
    _ensure_sshd(n.netns, files.jump_sshd_config, files.jump_sshd_pid, files.jump_sshd_log,
                 restart=jump_changed)
    wait_until(lambda: port_open(address(paths), SSH_PORT), timeout=SSHD_TIMEOUT,
               what=f"sshd of the lab bastion on {address(paths)}:{SSH_PORT}",
               logfile=files.sshd_log, pidfile=files.sshd_pid)
    wait_until(lambda: _listening(n.netns, JUMP_PORT), timeout=SSHD_TIMEOUT,
               what=f"jump-only sshd of lab {n.name} on port {JUMP_PORT}",
               logfile=files.jump_sshd_log, pidfile=files.jump_sshd_pid)


def bastion_down(paths: LabPaths) -> None:
    """Remove the bastion, node1's jump-only sshd and its rule (node1 itself stays)."""
    files = _files(paths)
    for config, pid_file in ((files.sshd_config, files.sshd_pid),
                             (files.jump_sshd_config, files.jump_sshd_pid)):
        if _own_pid(pid_file, config) is not None:
            stop_daemon(pid_file, timeout=5)
        pid_file.unlink(missing_ok=True)
    _kill(_sshds(netns(paths), files.sshd_config) + _sshds(None, files.jump_sshd_config),
          "the lab bastion")
    n = _jump_node(paths)
    if n.netns in _netns_names():
        while _rule_exists(n.netns, paths):
            run(["nsenter", f"--net=/run/netns/{n.netns}", "iptables", "-D", *_rule(paths)])
    if netns(paths) in _netns_names():
        run(["ip", "netns", "del", netns(paths)])
    if link_exists(_veth(paths)):
        delete_link(_veth(paths))
    for path in (files.sshd_pid.parent, files.dir):
        remove_tree(path)


def healthy(paths: LabPaths) -> bool:
    files = _files(paths)
    n = _jump_node(paths)
    return (_own_pid(files.sshd_pid, files.sshd_config) is not None
            and _own_pid(files.jump_sshd_pid, files.jump_sshd_config) is not None
            and n.netns in _netns_names() and _rule_exists(n.netns, paths)
            and port_open(address(paths), SSH_PORT))


# -- pieces ----------------------------------------------------------------------


def _rule(paths: LabPaths) -> list[str]:
    """node1's jump-only port refuses every source but the bastion."""
    return ["INPUT", "-p", "tcp", "--dport", str(JUMP_PORT), "!", "-s", address(paths),
            "-j", "REJECT", "--reject-with", "tcp-reset"]


def _rule_exists(node_netns: str, paths: LabPaths) -> bool:
    return run(["nsenter", f"--net=/run/netns/{node_netns}", "iptables", "-C", *_rule(paths)],
               check=False).returncode == 0


def _ensure_rule(paths: LabPaths) -> None:
    n = _jump_node(paths)
    if n.netns not in _netns_names():
        raise LabError(f"lab {n.name} is not up; the bastion's jump-only port lives on it")
    if not _rule_exists(n.netns, paths):
        rule = _rule(paths)
        run(["nsenter", f"--net=/run/netns/{n.netns}", "iptables", "-I", rule[0], "1", *rule[1:]])


def _listening(netns_name: str, port: int) -> bool:
    out = run(["nsenter", f"--net=/run/netns/{netns_name}", "ss", "-Hltn", f"sport = :{port}"],
              check=False).stdout
    return bool(out.strip())


def _sshds(netns_name: str | None, config: Path) -> list[int]:
    """sshd processes of this config, or anywhere in this namespace (left by a crash)."""
    inode = _netns_inode(netns_name) if netns_name else None
    return [p.pid for p in _processes() if p.comm == "sshd"
            and ((inode is not None and p.netns_inode == inode) or _mentions(p.argv, [config]))]


def _ensure_sshd(netns_name: str, config: Path, pid_file: Path, log: Path, *, restart: bool) -> None:
    pid = _own_pid(pid_file, config)
    if pid is not None and not restart:
        try:
            if Path(f"/proc/{pid}/ns/net").stat().st_ino == _netns_inode(netns_name):
                return
        except OSError:
            pass
    if pid is not None:
        stop_daemon(pid_file, timeout=5)
    pid_file.unlink(missing_ok=True)
    # Only this config's sshds: node1's own sshd shares the namespace and must stay.
    _kill(_sshds(None, config), f"sshd {config}")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    check = run([SSHD, "-t", "-f", str(config)], check=False)
    if check.returncode != 0:
        raise LabError(f"sshd rejects {config}: {check.stderr.strip()}")
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    start_daemon(["nsenter", f"--net=/run/netns/{netns_name}", SSHD, "-D", "-e", "-f", str(config)],
                 pidfile=pid_file, logfile=log, env=DAEMON_ENV, cwd=Path("/"))
