"""Environment `labetcd` on the lab: nodes found in etcd, the deploy lock an etcd lease.

A held-out service (its own package, port 18950) rolls, fails and comes back
exactly as it does on `lab` (test_roll.py); and when the etcd server is
killed in the middle of a roll, after the lock was taken, the roll either
finishes or is put back, and its report says which, as the nodes show.
Each test sets up what the nodes run itself, so any one passes alone.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import dockship
from dockship import configfile
from dockship.config import EtcdSettings
from dockship.etcd import Etcd
from dockship.etcdlock import EtcdLockStore, lock_key
from dockship.lock import LockInfo
from dockship.times import utc_now
from dockship_lab import etcdserver
from dockship_lab.paths import LabPaths
from rollkit import make_fleet, wait_for

pytestmark = pytest.mark.lab

ENV = "labetcd"
PORT = 18950


@pytest.fixture(scope="module")
def fleet(lab, run_id, tmp_path_factory):
    fleet = make_fleet(lab, run_id, tmp_path_factory.mktemp("etcd"), prefix="etcd", port=PORT,
                       versions={"1.0.0": "ok", "1.1.0": "ok", "0.9.2": "unhealthy"})
    data = fleet.config_data(health={"min_healthy": 2})
    lab_env = data["environments"].pop("lab")
    data["environments"][ENV] = {"etcd": dict(lab["etcd"]), "ssh": lab_env["ssh"],
                                 "rollout": lab_env["rollout"]}
    configfile.write(fleet.config, data)
    _drop_lock(lab, fleet.service)
    yield fleet
    fleet.cleanup()
    _drop_lock(lab, fleet.service)


def _drop_lock(lab: dict, service: str) -> None:
    """The service's etcd lease from an earlier run (a killed test), if any."""
    with Etcd(lab["etcd"]["url"]) as etcd:
        etcd.delete(lock_key(ENV, service))


def run(fleet, command: str, *args: str, expect: int) -> dict:
    proc = dockship("--config", str(fleet.config), command, "--env", ENV,
                    "--service", fleet.service, "--json", *args)
    assert proc.returncode == expect, proc.stderr
    return json.loads(proc.stdout)


def roll_to(fleet, *tags: str) -> None:
    for tag in tags:
        assert run(fleet, "roll", "--tag", tag, expect=0)["result"] == "succeeded"


@pytest.fixture
def on_1_0_0(fleet):
    roll_to(fleet, "1.0.0")
    return fleet


@pytest.fixture
def on_1_1_0_after_1_0_0(fleet):
    roll_to(fleet, "1.0.0", "1.1.0")
    return fleet


def test_the_nodes_come_from_etcd_in_name_order(fleet):
    proc = dockship("--config", str(fleet.config), "roll", "--env", ENV, "--service",
                    fleet.service, "--tag", "1.0.0", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert [n["name"] for b in plan["batches"] for n in b["nodes"]] == ["node1", "node2", "node3"]


@pytest.mark.usefixtures("on_1_0_0")
def test_a_release_rolls_onto_every_node_under_an_etcd_lease(fleet, lab):
    report = run(fleet, "roll", "--tag", "1.1.0", expect=0)
    assert report["result"] == "succeeded" and report["digest"] == fleet.digests["1.1.0"]
    assert [(n["name"], n["zone"], n["from"], n["to"], n["result"]) for n in report["nodes"]] == [
        ("node1", "a", "1.0.0", "1.1.0", "updated"), ("node2", "b", "1.0.0", "1.1.0", "updated"),
        ("node3", "c", "1.0.0", "1.1.0", "updated")]
    assert fleet.versions() == {"node1": "1.1.0", "node2": "1.1.0", "node3": "1.1.0"}
    # the lease was given back, and no node carries a lock container
    with Etcd(lab["etcd"]["url"]) as etcd:
        assert etcd.get(lock_key(ENV, fleet.service)) is None
    for node in fleet.nodes:
        with fleet.engine(node) as client:
            assert client.containers.list(all=True, filters={
                "label": f"io.dockship.lock.service={fleet.service}"}) == []


@pytest.mark.usefixtures("on_1_1_0_after_1_0_0")
def test_a_broken_release_is_put_back_on_every_node(fleet):
    report = run(fleet, "roll", "--tag", "0.9.2", expect=1)
    assert report["result"] == "rolled_back"
    assert report["nodes"][0]["name"] == "node1" and report["nodes"][0]["to"] == "0.9.2"
    assert fleet.versions() == {"node1": "1.1.0", "node2": "1.1.0", "node3": "1.1.0"}
    status = run(fleet, "status", expect=0)
    assert status["schema"] == 1


@pytest.mark.usefixtures("on_1_1_0_after_1_0_0")
def test_rollback_brings_back_the_previous_tag(fleet):
    report = run(fleet, "rollback", expect=0)
    assert report["result"] == "succeeded"
    assert [(n["from"], n["to"]) for n in report["nodes"]] == [("1.1.0", "1.0.0")] * 3
    assert fleet.versions() == {"node1": "1.0.0", "node2": "1.0.0", "node3": "1.0.0"}
    history = run(fleet, "history", expect=0)
    assert "rollback" in json.dumps(history)


@pytest.mark.usefixtures("on_1_0_0")
def test_lock_status_shows_a_held_lease_and_release_gives_it_back(fleet, lab):
    # a lease whose holder is gone (a killed job): status shows it, release without --force
    # removes it because its holder pid no longer runs on this host
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store = EtcdLockStore(EtcdSettings(url=lab["etcd"]["url"], prefix="/x"), ENV, fleet.service)
    store.create(LockInfo(ENV, fleet.service, f"ci@{socket.gethostname()} pid {dead.pid}",
                          "deploy-dead", "1.1.0", utc_now(), 1800.0, "killed job"))
    status = json.loads(dockship("--config", str(fleet.config), "lock", "status", "--env", ENV,
                                 "--service", fleet.service, "--json").stdout)
    (held,) = status["locks"]
    assert held["locked"] and held["deploy_id"] == "deploy-dead" and held["message"] == "killed job"
    blocked = run(fleet, "roll", "--tag", "1.1.0", expect=3)
    assert "deploy-dead" in blocked["error"]
    proc = dockship("--config", str(fleet.config), "lock", "release", "--env", ENV,
                    "--service", fleet.service)
    assert proc.returncode == 0, proc.stderr
    assert store.read() is None
    assert "released the lock of deploy deploy-dead" in json.dumps(run(fleet, "history", expect=0))


def _roll_in_background(fleet, tag: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dockship", "--config", str(fleet.config), "roll", "--env", ENV,
         "--service", fleet.service, "--tag", tag, "--json", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))


@pytest.mark.usefixtures("on_1_0_0")
@pytest.mark.parametrize("ttl", ["1800", "6"])
def test_etcd_killed_mid_roll_the_roll_finishes_or_is_put_back_and_says_which(fleet, lab, ttl):
    """With the default TTL the lease needs no renewal during the roll, which finishes; with a
    6 s TTL the keeper cannot renew, the lease counts as lost and the roll is put back. Either
    way the report must say what the nodes really run."""
    paths = LabPaths.default()
    key = lock_key(ENV, fleet.service)
    roll = _roll_in_background(fleet, "1.1.0", "--lock-ttl", ttl)
    try:
        with Etcd(lab["etcd"]["url"], total=5) as etcd:
            wait_for(lambda: etcd.get(key) is not None, timeout=60, interval=0.05)
        etcdserver.etcd_kill(paths)           # the lock is taken: kill etcd mid-roll
        out, err = roll.communicate(timeout=600)
    finally:
        if roll.poll() is None:
            roll.kill()
        etcdserver.etcd_start(paths)          # the lab as it was found (its data dir kept)
    report = json.loads(out)
    print(f"\n[etcd killed mid-roll, --lock-ttl {ttl}] {report['result']}: {report.get('reason')}; "
          f"warnings: {report.get('warnings')}")
    assert report["result"] in ("succeeded", "rolled_back"), err
    assert roll.returncode == (0 if report["result"] == "succeeded" else 1), err
    expected = "1.1.0" if report["result"] == "succeeded" else "1.0.0"
    assert fleet.versions() == {n["name"]: expected for n in fleet.nodes}, report
    results = {n["result"] for n in report["nodes"]}
    if report["result"] == "succeeded":
        assert results == {"updated"}, report
    else:
        assert results <= {"rolled_back", "failed", "not_reached"}, report
    # the lease could not be given back while etcd was down: the report says so
    assert any("could not be released on etcd" in w for w in report.get("warnings", [])), report
    if ttl == "6":
        assert report["result"] == "rolled_back" and "lock" in json.dumps(report), report
    # etcd is back with the lab's nodes registered; the stale lease is cleared for what follows
    assert etcdserver.answers(lab["etcd"]["url"])
    _drop_lock(lab, fleet.service)
    assert run(fleet, "status", expect=0)
