"""The lab's etcd launcher on a throwaway state dir and free ports: reuse, leftovers, registration."""

from __future__ import annotations

import json

import pytest

from dockship.etcd import Etcd
from dockship_lab import etcdserver
from dockship_lab.paths import LabPaths

from etcdkit import _etcd_program, _free_port


@pytest.fixture
def lab_dirs(tmp_path):
    _etcd_program()
    paths = LabPaths(root=tmp_path / "root", run=tmp_path / "run", cache=tmp_path / "cache",
                     subnet="10.99.0")
    ports = {"port": _free_port(), "peer_port": _free_port()}
    yield paths, ports
    etcdserver.etcd_down(paths)


class _Node:
    def __init__(self, i: int):
        self.name, self.address, self.zone = f"node{i}", f"10.99.0.{10 + i}", "abc"[i % 3]
        self.docker = f"ssh://root@{self.address}"


def test_a_running_etcd_is_reused_and_a_killed_one_started_again(lab_dirs):
    paths, ports = lab_dirs
    assert etcdserver.etcd_start(paths, **ports) is True
    pid = etcdserver.lab_pid(paths.run / "etcd.pid", "etcd")
    assert etcdserver.etcd_start(paths, **ports) is False
    assert etcdserver.lab_pid(paths.run / "etcd.pid", "etcd") == pid
    etcdserver.etcd_kill(paths)
    assert etcdserver.etcd_start(paths, **ports) is True
    assert etcdserver.lab_pid(paths.run / "etcd.pid", "etcd") not in (None, pid)


def test_a_damaged_data_dir_left_by_an_earlier_lab_is_set_aside(lab_dirs):
    paths, ports = lab_dirs
    wal = paths.root / "etcd" / "member" / "wal"
    wal.mkdir(parents=True)
    (wal / "0000000000000000-0000000000000000.wal").write_bytes(b"\x00garbage" * 100)
    assert etcdserver.etcd_start(paths, **ports) is True
    assert (paths.root / "etcd.damaged" / "member" / "wal").exists()
    assert etcdserver.answers(f"http://127.0.0.1:{ports['port']}")


def test_register_writes_one_json_value_per_node_and_drops_nodes_no_longer_there(lab_dirs):
    paths, ports = lab_dirs
    etcdserver.etcd_start(paths, **ports)
    url = f"http://127.0.0.1:{ports['port']}"
    etcdserver.register_nodes(url, "/p", [_Node(1), _Node(2), _Node(10)])
    etcdserver.register_nodes(url, "/p", [_Node(1), _Node(10)])
    with Etcd(url) as etcd:
        entries = {e.key.decode(): json.loads(e.value) for e in etcd.get_prefix(b"/p/")}
    assert sorted(entries) == ["/p/node1", "/p/node10"]
    assert entries["/p/node1"] == {"name": "node1", "address": "10.99.0.11", "zone": "b",
                                   "roles": ["web"], "docker": "ssh://root@10.99.0.11"}
