"""Zero downtime behind a load balancer: constant load through HAProxy while dockship rolls.

The module rolls its own service (`svcz`, port 18500 on the nodes) behind its
own HAProxy (a lab balancer instance, frontend 127.0.0.1:18580, backend
`svcz`, one server per node), with `[environments.lab.balancer]` pointing at
that HAProxy's runtime API. Four client threads send requests through the
frontend during a roll of 3 nodes, a rollback, and an automatic rollback;
every request must succeed (counted, not timed), and both versions must have
answered some of them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import dockship, json_out
from dockship.haproxy import RuntimeAPI
from dockship_lab import balancer as lab_balancer
from dockship_lab.paths import LabPaths
from rollkit import Load, make_fleet, refusing_hook, wait_for

pytestmark = pytest.mark.lab

FRONTEND_PORT = 18580
@pytest.fixture(scope="module")
def fleet(lab, run_id, tmp_path_factory):
    fleet = make_fleet(lab, run_id, tmp_path_factory.mktemp("zero"), prefix="z", port=18500,
                       versions={"1.0.0": "ok", "1.1.0": "ok"})
    yield fleet
    fleet.cleanup()


@pytest.fixture(scope="module")
def lb(lab, fleet):
    """This module's HAProxy in front of the lab nodes' port 18500."""
    paths = LabPaths.default()
    info = lab_balancer.balancer_up(paths, fleet.service, FRONTEND_PORT, fleet.port, lab["nodes"])
    yield info
    lab_balancer.balancer_down(paths, fleet.service)


def balancer_table(info, **extra) -> dict:
    """`[environments.lab.balancer]` for this module's HAProxy."""
    return {"kind": "haproxy", "socket": info.socket, "drain_timeout": 10, "ready_timeout": 20,
            **extra}


@pytest.fixture(scope="module")
def balanced(fleet, lb, tmp_path_factory):
    """The config with the balancer table; version 1.0.0 on every node and UP in HAProxy."""
    config = fleet.write_config(tmp_path_factory.mktemp("balanced") / "dockship.toml",
                                balancer=balancer_table(lb))
    report = json_out(dockship("--config", str(config), "roll", "--env", "lab", "--service",
                               fleet.service, "--tag", "1.0.0", "--json"))
    assert report["result"] == "succeeded"
    assert all(s.up for s in RuntimeAPI(lb.socket).servers(lb.backend))
    return config


def roll(config: Path, service: str, *args: str, command: str = "roll", expect: int = 0):
    proc = dockship("--config", str(config), command, "--env", "lab", "--service", service,
                    *args, "--json")
    assert proc.returncode == expect, proc.stderr
    return json.loads(proc.stdout), proc.stderr


def servers_all_up(lb) -> dict[str, str]:
    stats = RuntimeAPI(lb.socket).servers(lb.backend)
    assert [s.server for s in stats] == ["node1", "node2", "node3"]
    return {s.server: s.status for s in stats}


def test_a_roll_of_three_nodes_under_load_drops_no_request(fleet, lb, balanced):
    with Load(lb.frontend_url + "/") as load:
        report, log = roll(balanced, fleet.service, "--tag", "1.1.0")
    print(f"\n[zero downtime] roll 1.0.0 -> 1.1.0: {load.summary()}")
    assert report["result"] == "succeeded"
    assert [(n["name"], n["result"]) for n in report["nodes"]] == [
        ("node1", "updated"), ("node2", "updated"), ("node3", "updated")]
    assert load.failures == [], load.summary()
    assert load.served["1.0.0"] > 0 and load.served["1.1.0"] > 0, load.summary()
    assert log.count("drained in") == 3, log                   # the balancer did take part
    assert servers_all_up(lb) == {"node1": "UP", "node2": "UP", "node3": "UP"}


def test_a_rollback_under_load_drops_no_request(fleet, lb, balanced):
    with Load(lb.frontend_url + "/") as load:
        report, _ = roll(balanced, fleet.service, command="rollback")
    print(f"\n[zero downtime] rollback 1.1.0 -> 1.0.0: {load.summary()}")
    assert report["result"] == "succeeded" and report["tag"] == "1.0.0"
    assert load.failures == [], load.summary()
    assert load.served["1.0.0"] > 0 and load.served["1.1.0"] > 0, load.summary()
    assert servers_all_up(lb) == {"node1": "UP", "node2": "UP", "node3": "UP"}


def test_an_automatic_rollback_under_load_drops_no_request(fleet, lb, tmp_path):
    hook = refusing_hook(tmp_path / "fail-on-node3", "node3")
    config = fleet.write_config(tmp_path / "dockship.toml", hooks={"pre_node": [str(hook)]},
                                balancer=balancer_table(lb))
    with Load(lb.frontend_url + "/") as load:
        report, _ = roll(config, fleet.service, "--tag", "1.1.0", expect=1)
    print(f"\n[zero downtime] roll to 1.1.0 failing on node3, auto rollback: {load.summary()}")
    assert report["result"] == "rolled_back"
    assert [(n["name"], n["result"]) for n in report["nodes"]] == [
        ("node1", "rolled_back"), ("node2", "rolled_back"), ("node3", "failed")]
    assert load.failures == [], load.summary()
    assert load.served["1.0.0"] > 0 and load.served["1.1.0"] > 0, load.summary()
    assert fleet.versions() == {"node1": "1.0.0", "node2": "1.0.0", "node3": "1.0.0"}
    assert servers_all_up(lb) == {"node1": "UP", "node2": "UP", "node3": "UP"}


def test_a_missing_balancer_socket_is_a_config_error_and_touches_nothing(fleet, lb, balanced, tmp_path):
    before = {n["name"]: fleet.running(n)[0]["Id"] for n in fleet.nodes}
    config = fleet.write_config(tmp_path / "dockship.toml",
                                balancer=balancer_table(lb, socket=str(tmp_path / "gone.sock")))
    proc = dockship("--config", str(config), "roll", "--env", "lab", "--service", fleet.service,
                    "--tag", "1.1.0")
    assert proc.returncode == 2, proc.stderr
    assert "environments.lab.balancer.socket:" in proc.stderr and "gone.sock does not exist" in proc.stderr
    assert {n["name"]: fleet.running(n)[0]["Id"] for n in fleet.nodes} == before


def test_a_node_without_a_server_in_the_backend_fails_before_anything_changes(fleet, lb, balanced,
                                                                              tmp_path):
    before = {n["name"]: fleet.running(n)[0]["Id"] for n in fleet.nodes}
    config = fleet.write_config(tmp_path / "dockship.toml",
                                balancer=balancer_table(lb, server="{name}-web"))
    report, _ = roll(config, fleet.service, "--tag", "1.1.0", expect=1)
    assert report["result"] == "failed"
    assert "no server for node1-web (node node1)" in report["reason"], report["reason"]
    assert "nothing was changed" in report["reason"]
    assert [n["result"] for n in report["nodes"]] == ["not_reached"] * 3
    assert {n["name"]: fleet.running(n)[0]["Id"] for n in fleet.nodes} == before
