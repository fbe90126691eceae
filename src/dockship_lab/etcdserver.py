"""The lab's etcd: Debian's `etcd` (package etcd-server) on 127.0.0.1:2379, one member.

Its data dir is under the lab's state dir, so a restart keeps what was
registered. `lab up` reuses a running etcd (found by its pid file and
command line) and writes the lab nodes under `/dockship/nodes/labetcd`, one
JSON value per node, as environment `labetcd` of the lab config finds them
(design §13); entries of nodes an earlier, larger lab had are removed. A data
dir an earlier lab left damaged (etcd will not start on it) is moved aside and
etcd starts empty: everything in it is made again by `lab up`.

`start_etcd` also serves the tests, which run a throwaway etcd of their own
on a free port in a temporary directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from dockship.errors import DockshipError
from dockship.etcd import Etcd
from dockship_lab.engine import ensure_daemon, lab_pid, log_path, require_program, stop_lab_daemon
from dockship_lab.paths import LabPaths
from dockship_lab.process import LabError, pid_alive, wait_until

HOST = "127.0.0.1"
PORT = 2379
PEER_PORT = 2380
URL = f"http://{HOST}:{PORT}"
ENVIRONMENT = "labetcd"
PREFIX = f"/dockship/nodes/{ENVIRONMENT}"
ROLE = "web"
MEMBER = "dslab"
START_TIMEOUT = 30.0


class NodeLike(Protocol):
    name: str
    address: str
    zone: str
    docker: str


@dataclass(frozen=True)
class EtcdInfo:
    """`lab status --json`'s "etcd" (design §13)."""

    url: str
    prefix: str


def info() -> EtcdInfo:
    return EtcdInfo(url=URL, prefix=PREFIX)


def etcd_argv(program: str, data_dir: Path, *, host: str = HOST, port: int = PORT,
              peer_port: int = PEER_PORT, name: str = MEMBER, scheme: str = "http") -> list[str]:
    """One etcd member listening on `host`: clients on `port`, its (unused) peer port beside.
    With scheme "https" the caller adds the certificate flags (--cert-file ...)."""
    client = f"{scheme}://{host}:{port}"
    peer = f"http://{host}:{peer_port}"
    return [program, "--name", name, "--data-dir", str(data_dir),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"{name}={peer}", "--initial-cluster-state", "new",
            "--logger", "zap", "--log-level", "warn"]


def answers(url: str, timeout: float = 3.0) -> bool:
    """Does an etcd member answer its status call at `url`?"""
    try:
        with Etcd(url, total=timeout) as etcd:
            etcd.status()
        return True
    except DockshipError:
        return False


def _data_dir(paths: LabPaths) -> Path:
    return paths.root / "etcd"


def _pidfile(paths: LabPaths) -> Path:
    return paths.run / "etcd.pid"


def etcd_running(paths: LabPaths) -> bool:
    return lab_pid(_pidfile(paths), "etcd") is not None


def etcd_answers(paths: LabPaths) -> bool:
    """The lab's etcd runs (its pid file) and answers."""
    return etcd_running(paths) and answers(URL)


def etcd_start(paths: LabPaths, *, port: int = PORT, peer_port: int = PEER_PORT) -> bool:
    """Start the lab's etcd, or reuse the running one; True if it was (re)started."""
    program = require_program("etcd", "etcd-server")
    data = _data_dir(paths)
    url = f"http://{HOST}:{port}"

    def ensure() -> bool:
        return ensure_daemon(what=f"etcd at {url}", program="etcd",
                             argv=etcd_argv(program, data, port=port, peer_port=peer_port),
                             pidfile=_pidfile(paths), logfile=log_path(paths, "etcd"),
                             listen=(HOST, port), healthy=lambda: answers(url),
                             timeout=START_TIMEOUT)
    try:
        return ensure()
    except LabError:
        if not data.exists() or answers(url):
            raise
        # A data dir an earlier lab left that etcd will not start on: set it aside, start empty.
        stop_lab_daemon(_pidfile(paths), "etcd")
        aside = data.with_name("etcd.damaged")
        shutil.rmtree(aside, ignore_errors=True)
        data.rename(aside)
        return ensure()


def etcd_up(paths: LabPaths, nodes: Sequence[NodeLike]) -> bool:
    """Start (or reuse) etcd and register the lab nodes under PREFIX; True if it was started."""
    started = etcd_start(paths)
    try:
        register_nodes(URL, PREFIX, nodes)
    except DockshipError as exc:
        raise LabError(f"registering the lab nodes in etcd at {URL} failed: {exc}") from None
    return started


def node_entry(node: NodeLike) -> dict[str, object]:
    """A node's value in etcd: what environment `lab` says of it."""
    return {"name": node.name, "address": node.address, "zone": node.zone, "roles": [ROLE],
            "docker": node.docker}


def register_nodes(url: str, prefix: str, nodes: Sequence[NodeLike]) -> None:
    """Write one key per node under `prefix`; drop keys of nodes that are not there any more."""
    wanted = {f"{prefix}/{n.name}".encode(): json.dumps(node_entry(n), sort_keys=True).encode()
              for n in nodes}
    with Etcd(url) as etcd:
        for entry in etcd.get_prefix(f"{prefix}/".encode()):
            if entry.key not in wanted:
                etcd.delete(entry.key)
        for key, value in wanted.items():
            current = etcd.get(key)
            if current is None or current.value != value:
                etcd.put(key, value)


def etcd_kill(paths: LabPaths) -> None:
    """SIGKILL the lab's etcd (a crash, for failure tests); `etcd_start` brings it back."""
    pid = lab_pid(_pidfile(paths), "etcd")
    if pid is None:
        return
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), timeout=10, what="etcd to die")


def etcd_down(paths: LabPaths) -> None:
    stop_lab_daemon(_pidfile(paths), "etcd")

