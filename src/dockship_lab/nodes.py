"""Lab nodes: each a network namespace with its own Docker engine and sshd.

A node is as close to a real server as one machine allows: its own address
on the lab bridge, its own hostname, its own dockerd (own data root,
containerd, iptables and docker0, all inside the namespace), and an sshd
through which dockship reaches that engine exactly as it reaches production
(`ssh://root@ADDRESS`, `docker system dial-stdio`). The filesystem stays
shared with the host, which is what lets every engine trust the lab
registry's CA from /etc/docker/certs.d.

Everything is found again from names and paths, never from memory: CI starts
`lab up` right after a session's processes were killed, so half-there nodes
(a namespace without its dockerd, stale pid files, dockerd's leftover
mounts, orphaned container processes) are the normal case, not an error.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import shutil
import signal
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dockship_lab.network import (delete_link, ipv4_addresses, link_exists, links, mac_for,
                                  name_prefix, netns_name, network_up, veth_name)
from dockship_lab.engine import engine_answers
from dockship_lab.mounts import mount_points, remove_tree, unmount_under
from dockship_lab.paths import BRIDGE, LabPaths
from dockship_lab.process import (LabError, pid_alive, port_open, read_pid, run,
                                  start_daemon, stop_daemon, wait_until)

SSH_USER = "root"
SSH_PORT = 22
ZONES = ("a", "b", "c")
NODE_IF = "eth0"                 # the node's end of its veth, inside its namespace
SSHD = "/usr/sbin/sshd"          # sshd re-executes itself and insists on an absolute path
ENGINE_TIMEOUT = 60.0            # seen: under a second; generous for a loaded CI machine
SSHD_TIMEOUT = 15.0
DOCKERD_STOP_TIMEOUT = 25.0      # dockerd gives containers 15 s on shutdown, then kills them
# Daemons get a clean environment: a proxy variable inherited from a shell
# would send the node engines' registry pulls off the lab network.
DAEMON_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
              "LANG": "C.UTF-8"}
# Only processes with these names are killed for naming a lab path on their
# command line; anything else (an editor, `tail -f` on a log) is left alone.
_DAEMON_COMMS = ("dockerd", "containerd", "containerd-shim", "docker-proxy", "runc", "sshd")
_SUN_PATH_MAX = 107              # usable bytes of a unix socket path on Linux
_NODE_NAME = re.compile(r"node(\d+)")


@dataclass(frozen=True)
class LabNode:
    """One lab node as dockship's configuration and the tests see it."""

    name: str          # "node1", ...; also its hostname
    address: str       # its address on the lab /24
    zone: str          # "a", "b", "c" cycling: zone-aware rollouts get something to spread over
    netns: str         # its network namespace, e.g. "dslab-node1"
    socket: Path       # unix socket of its engine, for the lab's own checks
    ssh_port: int      # where its sshd listens on `address`
    docker: str        # how dockship reaches its engine: "ssh://root@ADDRESS"

    @property
    def docker_unix(self) -> str:
        """The engine's local endpoint, bypassing SSH (lab checks, debugging)."""
        return f"unix://{self.socket}"


@dataclass(frozen=True)
class _NodeFiles:
    """Where one node keeps its state (under paths.root) and runtime files (under paths.run)."""

    dir: Path
    data_root: Path
    daemon_json: Path
    trust_key: Path
    dockerd_log: Path
    host_key: Path
    sshd_config: Path
    sshd_log: Path
    run: Path
    exec_root: Path     # containerd's sockets live here: keep it short (108-byte limit)
    socket: Path
    uts: Path           # bind mount of the node's UTS namespace, as `ip netns` keeps a netns
    dockerd_pid: Path   # start_daemon's record
    # dockerd refuses a --pidfile that names a live process, and start_daemon
    # writes its own record right after the fork: two files, or they race.
    engine_pid: Path
    sshd_pid: Path      # sshd -D does not fork: it writes the pid start_daemon records
    home: Path          # root's home as the node's sshd sees it


def _files(paths: LabPaths, name: str) -> _NodeFiles:
    state, runtime = paths.root / "nodes" / name, paths.run / name
    return _NodeFiles(
        dir=state, data_root=state / "docker", daemon_json=state / "daemon.json",
        trust_key=state / "key.json", dockerd_log=state / "dockerd.log",
        host_key=state / "sshd" / "ssh_host_ed25519_key",
        sshd_config=state / "sshd" / "sshd_config", sshd_log=state / "sshd.log",
        run=runtime, exec_root=runtime / "exec", socket=runtime / "docker.sock",
        uts=runtime / "uts", dockerd_pid=runtime / "dockerd.pid",
        engine_pid=runtime / "dockerd.own.pid", sshd_pid=runtime / "sshd.pid", home=state / "home")


# -- public API -----------------------------------------------------------------


def node(paths: LabPaths, index: int) -> LabNode:
    """The node `index` (1-based) of this lab, whether or not it is up."""
    name = f"node{index}"
    address = paths.node_address(index)
    return LabNode(name=name, address=address, zone=ZONES[(index - 1) % len(ZONES)],
                   netns=netns_name(paths, index), socket=_files(paths, name).socket,
                   ssh_port=SSH_PORT, docker=f"ssh://{SSH_USER}@{address}")


def client_key(paths: LabPaths) -> Path:
    """The lab's SSH client key; its .pub is every node's authorized key."""
    return paths.root / "ssh" / "id_ed25519"


def known_hosts_file(paths: LabPaths) -> Path:
    """The lab's own known_hosts: every node's host key under its address (~/.ssh is never used)."""
    return paths.root / "ssh" / "known_hosts"


def nodes_up(paths: LabPaths, count: int, extra_known_hosts: Iterable[str] = ()) -> list[LabNode]:
    """Bring nodes 1..count up, reusing healthy ones and repairing the rest.

    `extra_known_hosts`: more lines for the lab's known_hosts (the bastion's).

    Nodes beyond `count` are removed. The bridge is ensured too, so the nodes
    are usable on return: every engine answers on its unix socket and every
    sshd accepts connections on its address. Engines start in parallel.
    """
    if count < 1:
        raise LabError(f"a lab needs at least one node, not {count}")
    _check_host(paths, count)
    network_up(paths)
    extra = [i for i in _existing_indices(paths) if i > count]
    if extra:
        _teardown(paths, extra, sweep=[])
    _ensure_client_key(paths)
    nodes = [node(paths, i) for i in range(1, count + 1)]
    for n in nodes:
        _ensure_plumbing(paths, n)
        _ensure_uts(paths, n)
    changed = {n.name: _write_node_config(paths, n) for n in nodes}
    _write_known_hosts(paths, nodes, extra_known_hosts)
    for n in nodes:
        engine_changed, sshd_changed = changed[n.name]
        _ensure_engine_started(paths, n, restart=engine_changed)
        _ensure_sshd_started(paths, n, restart=sshd_changed)
    for n in nodes:
        _wait_ready(paths, n)
    return nodes


def nodes_down(paths: LabPaths) -> None:
    """Remove every node of this lab: daemons, containers, mounts, namespaces, veths, files.

    The lab's client key stays (the lab's own `down` removes paths.root);
    known_hosts goes, since the host keys it vouches for are gone.
    """
    _teardown(paths, _existing_indices(paths), sweep=[paths.root / "nodes"])
    known_hosts_file(paths).unlink(missing_ok=True)


def existing_nodes(paths: LabPaths) -> list[LabNode]:
    """Nodes with anything left on this machine (namespace, veth, files), healthy or not."""
    return [node(paths, i) for i in _existing_indices(paths)]


def node_healthy(paths: LabPaths, n: LabNode) -> bool:
    """Engine and sshd both running in the node's namespaces and answering."""
    return _engine_healthy(paths, n) and _sshd_healthy(paths, n)


def stop_engine(paths: LabPaths, n: LabNode, *, kill: bool = False) -> None:
    """Stop one node's dockerd, as a failure test wants it: its sshd stays up.

    `kill`: SIGKILL, as a crash or an OOM kill would, instead of a clean
    shutdown. Either way its containers die with it, and on return nothing of
    the engine runs and its socket does not answer.
    """
    files = _files(paths, n.name)
    pid = _own_pid(files.dockerd_pid, files.socket)
    if kill and pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _stop_engine(paths, n)   # after a kill: waits for it, then clears what it left
    if _engine_answers(files) or _own_pid(files.dockerd_pid, files.socket) is not None:
        raise LabError(f"{n.name}'s engine still answers after being stopped")


def start_engine(paths: LabPaths, n: LabNode) -> None:
    """Start one node's dockerd again (a no-op if it runs) and wait until it answers."""
    _ensure_engine_started(paths, n, restart=False)
    _wait_ready(paths, n)


def engine_running(paths: LabPaths, n: LabNode) -> bool:
    """The node's own dockerd runs inside the node and answers."""
    return _engine_healthy(paths, n)


def _existing_indices(paths: LabPaths) -> list[int]:
    """Indices of nodes with a namespace, a host veth or a directory left."""
    prefix = re.escape(name_prefix(paths))
    netns = re.compile(prefix + r"node(\d+)")
    veth = re.compile(prefix + r"n(\d+)h")
    found = [netns.fullmatch(name) for name in _netns_names()]
    found += [veth.fullmatch(link["ifname"]) for link in links(kind="veth")]
    for parent in (paths.root / "nodes", paths.run):
        if parent.is_dir():
            found += [_NODE_NAME.fullmatch(p.name) for p in parent.iterdir() if p.is_dir()]
    return sorted({int(m.group(1)) for m in found if m})


def _index(n: LabNode) -> int:
    return int(n.name.removeprefix("node"))


# -- host checks ------------------------------------------------------------------


def _check_host(paths: LabPaths, count: int) -> None:
    if os.geteuid() != 0:
        raise LabError("lab nodes need root (network namespaces, dockerd); run as root")
    tools = ("ip", "iptables", "nsenter", "unshare", "hostname", "dockerd", "docker",
             "ssh-keygen", SSHD)
    for tool in tools:
        if shutil.which(tool, path=DAEMON_ENV["PATH"]) is None:
            raise LabError(f"{tool} not found; install docker.io, openssh-server, iproute2, "
                           f"iptables and util-linux")
    longest = _files(paths, f"node{count}").exec_root / "containerd" / "containerd.sock.ttrpc"
    if len(str(longest)) > _SUN_PATH_MAX:
        raise LabError(f"socket path {longest} is longer than {_SUN_PATH_MAX} bytes; "
                       f"set DOCKSHIP_LAB_RUN to a shorter directory")


# -- namespaces and network plumbing ----------------------------------------------


def _netns_names() -> list[str]:
    out = run(["ip", "-j", "netns", "list"]).stdout.strip()
    return [entry["name"] for entry in json.loads(out)] if out else []


def _netns_inode(netns: str) -> int | None:
    try:
        return os.stat(f"/run/netns/{netns}").st_ino
    except OSError:
        return None


def _ensure_netns(name: str) -> None:
    if name in _netns_names():
        if run(["ip", "-n", name, "link", "show", "lo"], check=False).returncode == 0:
            return
        run(["ip", "netns", "del", name])  # the name outlived its namespace
    run(["ip", "netns", "add", name])


def _node_if(netns: str) -> dict[str, Any] | None:
    return next((link for link in links(netns=netns) if link["ifname"] == NODE_IF), None)


def _veth_pair_intact(host_end: str, netns: str) -> bool:
    """host_end's peer is the node's eth0 (not a stray left from an older namespace)."""
    inner = _node_if(netns)
    peer_index = next((link.get("link_index") for link in links(kind="veth")
                       if link["ifname"] == host_end), None)
    return inner is not None and peer_index is not None and inner.get("ifindex") == peer_index


def _ensure_plumbing(paths: LabPaths, n: LabNode) -> None:
    plumb(paths, n.netns, veth_name(paths, _index(n)), n.address)


def plumb(paths: LabPaths, netns: str, host_end: str, address: str) -> None:
    """Namespace, veth pair on the bridge, fixed MAC and address, lo, route via the host."""
    mac, cidr = mac_for(address), f"{address}/24"
    _ensure_netns(netns)
    if not _veth_pair_intact(host_end, netns):
        if link_exists(host_end):
            delete_link(host_end)
        if link_exists(NODE_IF, netns=netns):
            run(["ip", "-n", netns, "link", "del", NODE_IF])
        run(["ip", "link", "add", host_end, "type", "veth",
             "peer", "name", NODE_IF, "netns", netns, "address", mac])
    if (_node_if(netns) or {}).get("address") != mac:
        run(["ip", "-n", netns, "link", "set", NODE_IF, "address", mac])
    run(["ip", "link", "set", host_end, "master", BRIDGE, "up"])
    for stale in ipv4_addresses(NODE_IF, netns=netns) - {cidr}:
        run(["ip", "-n", netns, "addr", "del", stale, "dev", NODE_IF])
    run(["ip", "-n", netns, "addr", "replace", cidr, "dev", NODE_IF])
    run(["ip", "-n", netns, "link", "set", "lo", "up"])
    run(["ip", "-n", netns, "link", "set", NODE_IF, "up"])
    run(["ip", "-n", netns, "route", "replace", "default", "via", paths.host_address])


def _ensure_uts(paths: LabPaths, n: LabNode) -> None:
    """A persistent UTS namespace whose hostname is the node's name.

    Without it every engine reports the host's name (`docker info` Name,
    swarm node hostnames), and nodes cannot be told apart by it.
    """
    files = _files(paths, n.name)
    if str(files.uts) in mount_points():
        return
    files.run.mkdir(parents=True, exist_ok=True)
    files.uts.touch()
    run(["unshare", f"--uts={files.uts}", "hostname", n.name])


def _nsenter(paths: LabPaths, n: LabNode) -> list[str]:
    """Prefix that runs a command inside the node: its network and its hostname.

    Not `ip netns exec`: that also remounts /sys, and dockerd then fails
    ("Devices cgroup isn't mounted"). nsenter execs, so the pid is the daemon's.
    """
    return ["nsenter", f"--net=/run/netns/{n.netns}", f"--uts={_files(paths, n.name).uts}"]


def _inside(pid: int, paths: LabPaths, n: LabNode) -> bool:
    """The process runs in the node's current namespaces, not in ones since replaced."""
    try:
        net = os.stat(f"/proc/{pid}/ns/net").st_ino == _netns_inode(n.netns)
        uts = os.stat(f"/proc/{pid}/ns/uts").st_ino == os.stat(_files(paths, n.name).uts).st_ino
    except OSError:
        return False
    return net and uts


# -- keys and configuration --------------------------------------------------------


def _pub(key: Path) -> Path:
    return key.with_name(key.name + ".pub")


def _ensure_client_key(paths: LabPaths) -> None:
    key = client_key(paths)
    key.parent.mkdir(parents=True, exist_ok=True)
    key.parent.chmod(0o700)
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "dockship-lab", "-f", str(key)])
    if not _pub(key).exists():
        _pub(key).write_text(run(["ssh-keygen", "-y", "-f", str(key)]).stdout)
    _pub(key).chmod(0o644)


def _ensure_host_key(files: _NodeFiles, n: LabNode) -> None:
    if files.host_key.exists() and _pub(files.host_key).exists():
        return
    files.host_key.parent.mkdir(parents=True, exist_ok=True)
    files.host_key.unlink(missing_ok=True)
    _pub(files.host_key).unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"dockship-lab-{n.name}",
         "-f", str(files.host_key)])


def _sshd_config(paths: LabPaths, files: _NodeFiles, n: LabNode) -> str:
    return sshd_config(paths, listen=f"{n.address}:{n.ssh_port}", host_key=files.host_key,
                       pid_file=files.sshd_pid, docker_host=f"unix://{files.socket}")


def sshd_config(paths: LabPaths, *, listen: str, host_key: Path, pid_file: Path,
                docker_host: str | None = None, extra: Iterable[str] = ()) -> str:
    """An sshd of the lab: the lab's client key as root's only way in."""
    return "\n".join([
        "# Written by dockship's lab; rewritten by every `dockship lab up`.",
        f"ListenAddress {listen}",
        f"HostKey {host_key}",
        f"PidFile {pid_file}",  # not the system sshd's /run/sshd.pid
        f"AuthorizedKeysFile {_pub(client_key(paths))}",
        f"AllowUsers {SSH_USER}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        # The lab may live under a world-writable /tmp (tests), where StrictModes
        # refuses any authorized_keys file; only the lab's own key is accepted anyway.
        "StrictModes no",
        "X11Forwarding no",
        "PrintMotd no",
        *extra,
        # What `docker system dial-stdio`, run by dockship over SSH, connects to.
        *([f"SetEnv DOCKER_HOST={docker_host}"] if docker_host else []),
        "",
    ])


def _daemon_json(files: _NodeFiles) -> str:
    """The engine's own config file, so /etc/docker/daemon.json (the build engine's) is not read.

    Its own trust key gives it its own engine ID: by default every dockerd on
    a host derives the ID from /etc/docker/key.json, and all nodes would
    report the build engine's ID.
    """
    return json.dumps({"deprecated-key-path": str(files.trust_key),
                       "log-driver": "json-file",
                       "log-opts": {"max-size": "10m", "max-file": "2"}}, indent=2) + "\n"


def _write_if_changed(path: Path, text: str) -> bool:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text() == text:
        return False
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return True


def _write_node_config(paths: LabPaths, n: LabNode) -> tuple[bool, bool]:
    """Write the node's engine and sshd configuration; say which of them changed."""
    files = _files(paths, n.name)
    files.run.mkdir(parents=True, exist_ok=True)
    _ensure_host_key(files, n)
    engine = _write_if_changed(files.daemon_json, _daemon_json(files))
    sshd = _write_if_changed(files.sshd_config, _sshd_config(paths, files, n))
    return engine, sshd


def _write_known_hosts(paths: LabPaths, nodes: Iterable[LabNode], extra: Iterable[str]) -> None:
    lines = list(extra)
    for n in nodes:
        key_type, key_b64 = _pub(_files(paths, n.name).host_key).read_text().split()[:2]
        host = n.address if n.ssh_port == 22 else f"[{n.address}]:{n.ssh_port}"
        lines.append(f"{host} {key_type} {key_b64}\n")
    _write_if_changed(known_hosts_file(paths), "".join(lines))


# -- processes ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Proc:
    pid: int
    comm: str
    argv: tuple[str, ...]
    netns_inode: int | None
    cgroups: tuple[str, ...]


def _read_argv(pid: int) -> tuple[str, ...]:
    raw = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    return tuple(arg for arg in raw.split("\0") if arg)


def _processes() -> list[_Proc]:
    """A snapshot of /proc, skipping processes that vanish while we read."""
    procs = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid, base = int(entry.name), Path(entry.path)
        try:
            comm = (base / "comm").read_text().strip()
            argv = _read_argv(pid)
            cgroups = tuple(line.split(":", 2)[2]
                            for line in (base / "cgroup").read_text().splitlines())
            netns = os.stat(base / "ns" / "net").st_ino
        except (OSError, IndexError):
            continue
        procs.append(_Proc(pid, comm, argv, netns, cgroups))
    return procs


def _mentions(argv: tuple[str, ...], paths: Iterable[Path]) -> bool:
    """Some argument names one of paths or a file below it (also inside a URL or --opt=).

    A path may be followed by a space: sshd rewrites its command line into one
    string ("sshd: /usr/sbin/sshd -D -e -f CONFIG [listener] ...").
    """
    patterns = [re.compile(re.escape(str(p).rstrip("/")) + r"(/|\s|$)") for p in paths]
    return any(pattern.search(arg) for arg in argv for pattern in patterns)


def _lab_pids(netns: list[str], directories: list[Path], *, keep_sshd: bool = False) -> list[int]:
    """Processes of these nodes: in their network namespaces, in their engines'
    container cgroups (--cgroup-parent), or lab daemons naming their directories."""
    inodes = {inode for inode in map(_netns_inode, netns) if inode is not None}
    cgroup_marks = tuple(f"/{name}/" for name in netns)
    protected = {1, os.getpid(), os.getppid()}
    pids = []
    for proc in _processes():
        if proc.pid in protected or (keep_sshd and proc.comm == "sshd"):
            continue
        if (proc.netns_inode in inodes
                or any(c.startswith(cgroup_marks) for c in proc.cgroups)
                or (proc.comm.startswith(_DAEMON_COMMS) and _mentions(proc.argv, directories))):
            pids.append(proc.pid)
    return pids


def _kill(pids: list[int], what: str) -> None:
    """SIGKILL leftovers: they belong to a node that is gone or being rebuilt."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (alive := [p for p in pids if pid_alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive:
        listed = ",".join(map(str, alive))
        raise LabError(f"processes {listed} of {what} survived SIGKILL; "
                       f"look at them with `ps -o pid,stat,args -p {listed}`")


def _own_pid(pidfile: Path, marker: Path) -> int | None:
    """The pid in pidfile if it is still our daemon (its command line names marker).

    After a crash the recorded pid may have been reused by an unrelated
    process, and stop_daemon would signal that process's whole group.
    """
    pid = read_pid(pidfile)
    if pid is None:
        return None
    try:
        ours = _mentions(_read_argv(pid), [marker])
    except OSError:
        ours = False
    if not ours:
        pidfile.unlink(missing_ok=True)
        return None
    return pid


# -- cgroups ---------------------------------------------------------------------------


def _remove_cgroups(netns: str) -> None:
    """Remove the empty cgroup directories of a node engine's containers."""
    root = Path("/sys/fs/cgroup")
    parents = [hierarchy / netns for hierarchy in root.iterdir()] if root.is_dir() else []
    for parent in (p for p in parents if p.is_dir()):
        for child in sorted(parent.rglob("*"), key=lambda p: len(p.parts), reverse=True):
            if child.is_dir():
                _rmdir_quietly(child)
        _rmdir_quietly(parent)


def _rmdir_quietly(path: Path) -> None:
    # Still in use or already gone: an empty cgroup left behind harms nothing.
    with contextlib.suppress(OSError):
        path.rmdir()


# -- engine --------------------------------------------------------------------------


def _engine_answers(files: _NodeFiles) -> bool:
    return engine_answers(f"unix://{files.socket}", timeout=2)


def _engine_healthy(paths: LabPaths, n: LabNode) -> bool:
    files = _files(paths, n.name)
    pid = _own_pid(files.dockerd_pid, files.socket)
    return pid is not None and _inside(pid, paths, n) and _engine_answers(files)


def _ensure_engine_started(paths: LabPaths, n: LabNode, *, restart: bool) -> None:
    """Start the node's dockerd unless a healthy one runs; do not wait for it."""
    if not restart and _engine_healthy(paths, n):
        return
    _stop_engine(paths, n)
    files = _files(paths, n.name)
    files.data_root.mkdir(parents=True, exist_ok=True)
    start_daemon([*_nsenter(paths, n), "dockerd",
                  "--config-file", str(files.daemon_json),
                  "--data-root", str(files.data_root),
                  # dockerd's managed containerd keeps its state and sockets under
                  # the exec root, so engines with separate exec roots never collide.
                  "--exec-root", str(files.exec_root),
                  "--pidfile", str(files.engine_pid),
                  "-H", f"unix://{files.socket}",
                  # Container processes land in cgroups named after the node, so a
                  # crashed node's containers can be found (and told from others').
                  "--cgroup-parent", n.netns],
                 pidfile=files.dockerd_pid, logfile=files.dockerd_log, env=DAEMON_ENV,
                 cwd=Path("/"))


def _stop_engine(paths: LabPaths, n: LabNode) -> None:
    """Stop the node's engine and clear what a killed one leaves; the sshd stays up."""
    files = _files(paths, n.name)
    if _own_pid(files.dockerd_pid, files.socket) is not None:
        stop_daemon(files.dockerd_pid, timeout=DOCKERD_STOP_TIMEOUT)
    files.dockerd_pid.unlink(missing_ok=True)
    _kill(_lab_pids([n.netns], [files.data_root, files.exec_root, files.socket],
                    keep_sshd=True), f"{n.name}'s engine")
    unmount_under([files.data_root, files.exec_root])
    # Runtime state of dead daemons: dockerd would take containerd's stale pid
    # file there for a live containerd (the pid may have been reused).
    remove_tree(files.exec_root)
    files.engine_pid.unlink(missing_ok=True)
    files.socket.unlink(missing_ok=True)


# -- sshd ----------------------------------------------------------------------------


def _sshd_healthy(paths: LabPaths, n: LabNode) -> bool:
    files = _files(paths, n.name)
    pid = _own_pid(files.sshd_pid, files.sshd_config)
    return pid is not None and _inside(pid, paths, n) and port_open(n.address, n.ssh_port)


def _ensure_sshd_started(paths: LabPaths, n: LabNode, *, restart: bool) -> None:
    """Start the node's sshd unless a healthy one runs; do not wait for it."""
    if not restart and _sshd_healthy(paths, n):
        return
    _stop_sshd(paths, n)
    files = _files(paths, n.name)
    # sshd's privilege-separation directory; hosts where the system sshd never
    # ran (containers, CI images) lack it, and sshd refuses to start without it.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    check = run([SSHD, "-t", "-f", str(files.sshd_config)], check=False)
    if check.returncode != 0:
        raise LabError(f"sshd rejects {files.sshd_config}: {check.stderr.strip()}")
    # Root gets a home of its own on the node, as on a machine of its own: sshd runs every
    # command (each engine connection's dial-stdio) through root's login shell, and Debian's
    # bash then reads ~/.bashrc; the host's may be slow (here `pyenv init`: 0.1 s each).
    files.home.mkdir(mode=0o700, parents=True, exist_ok=True)
    own_home = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount --bind "$0" "$1" && shift && exec "$@"', str(files.home),
                pwd.getpwnam("root").pw_dir]
    start_daemon([*_nsenter(paths, n), *own_home, SSHD, "-D", "-e", "-f", str(files.sshd_config)],
                 pidfile=files.sshd_pid, logfile=files.sshd_log, env=DAEMON_ENV, cwd=Path("/"))


def _stop_sshd(paths: LabPaths, n: LabNode) -> None:
    """Stop the node's sshd, and any other sshd holding its address (left by a crash)."""
    files = _files(paths, n.name)
    if _own_pid(files.sshd_pid, files.sshd_config) is not None:
        stop_daemon(files.sshd_pid, timeout=5)
    files.sshd_pid.unlink(missing_ok=True)
    inode = _netns_inode(n.netns)
    _kill([p.pid for p in _processes() if p.comm == "sshd"
           and (p.netns_inode == inode or _mentions(p.argv, [files.sshd_config]))],
          f"{n.name}'s sshd")


# -- readiness and teardown ------------------------------------------------------------


def _wait_ready(paths: LabPaths, n: LabNode) -> None:
    files = _files(paths, n.name)
    wait_until(lambda: _engine_answers(files), timeout=ENGINE_TIMEOUT,
               what=f"dockerd of lab {n.name}", logfile=files.dockerd_log,
               pidfile=files.dockerd_pid)
    wait_until(lambda: port_open(n.address, n.ssh_port), timeout=SSHD_TIMEOUT,
               what=f"sshd of lab {n.name} on {n.address}:{n.ssh_port}",
               logfile=files.sshd_log, pidfile=files.sshd_pid)


def _stop_gracefully(paths: LabPaths, n: LabNode) -> None:
    files = _files(paths, n.name)
    if _own_pid(files.sshd_pid, files.sshd_config) is not None:
        stop_daemon(files.sshd_pid, timeout=5)
    if _own_pid(files.dockerd_pid, files.socket) is not None:
        stop_daemon(files.dockerd_pid, timeout=DOCKERD_STOP_TIMEOUT)


def _teardown(paths: LabPaths, indices: list[int], *, sweep: list[Path]) -> None:
    """Remove nodes completely. `sweep`: more lab directories whose daemons must die too."""
    nodes = [node(paths, i) for i in indices]
    # dockerd stops its containers on SIGTERM, which can take a while: in parallel.
    with ThreadPoolExecutor(max_workers=max(1, len(nodes))) as pool:
        list(pool.map(lambda n: _stop_gracefully(paths, n), nodes))
    directories = [d for n in nodes for d in (_files(paths, n.name).dir,
                                              _files(paths, n.name).run)] + sweep
    _kill(_lab_pids([n.netns for n in nodes], directories), "lab nodes")
    unmount_under(directories)
    for n in nodes:
        if n.netns in _netns_names():
            run(["ip", "netns", "del", n.netns])
        if link_exists(veth_name(paths, _index(n))):
            delete_link(veth_name(paths, _index(n)))
        _remove_cgroups(n.netns)
    for directory in directories:
        remove_tree(directory)
