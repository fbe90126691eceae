"""The Swarm backend on the lab's swarm (`lab up --swarm`): a held-out service rolls, fails and
comes back exactly as it does over SSH (test_roll.py), with the same exit codes and JSON keys.

The module's service runs as revision services on the lab swarm; nodes are the swarm's own
(labels dockship.name/zone/roles set by the lab). Each test sets up what runs itself.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import docker
import pytest

from conftest import dockship, json_out
from dockship.lock import LockInfo
from dockship.swarmspec import cursor_label, previous_label
from dockship.times import utc_now
from dockship.haproxy import RuntimeAPI
from dockship_lab import balancer as lab_balancer
from dockship_lab.paths import LabPaths
from rollkit import Engine, Fleet, Load, make_fleet, refusing_hook, roll_json, roll_to, wait_for

pytestmark = pytest.mark.lab

ROLL_KEYS = ["env", "service", "tag", "digest", "result", "nodes"]
NODE_KEYS = ["name", "zone", "from", "to", "result", "seconds"]
ENV = "labswarm"
FRONTEND_PORT = 18975


class SwarmFleet(Fleet):
    """The module's service on the lab swarm: a swarm environment, cleaned through a manager."""

    env_name = ENV

    def manager(self) -> Engine:
        """A manager's engine over its local socket (node1 unless its engine is down)."""
        for node in self.nodes:
            client = Engine(base_url=f"unix:///run/dockship-lab/{node['name']}/docker.sock")
            try:
                if client.info()["Swarm"].get("ControlAvailable"):
                    return client
            except docker.errors.DockerException:
                pass
            client.close()
        raise AssertionError("no lab swarm manager answers")

    def config_data(self, *, hooks=None, health=None, rollout=None, balancer=None) -> dict:
        data = super().config_data(hooks=hooks, health=health, rollout=rollout, balancer=balancer)
        env = data["environments"].pop("lab")
        del env["nodes"]
        env["swarm"] = {"manager": self.lab["swarm"]["manager"]}
        data["environments"][ENV] = env
        return data

    def revisions(self) -> list[dict]:
        with self.manager() as m:
            return m.api.services(filters={"label": f"io.dockship.service={self.service}"})

    def cleanup(self) -> None:
        """Remove this service's revisions, node labels, lock and history from the swarm."""
        with self.manager() as m:
            for s in m.api.services(filters={"label": f"io.dockship.service={self.service}"}):
                m.api.remove_service(s["ID"])
            for n in m.api.nodes():
                spec = n["Spec"]
                labels = spec.get("Labels") or {}
                drop = {cursor_label(ENV, self.service), previous_label(ENV, self.service)}
                if drop & set(labels):
                    spec["Labels"] = {k: v for k, v in labels.items() if k not in drop}
                    m.api.update_node(n["ID"], n["Version"]["Index"], spec)
            for c in m.api.configs():
                labels = (c.get("Spec") or {}).get("Labels") or {}
                if self.service in (labels.get("io.dockship.lock.service"),
                                    labels.get("io.dockship.ledger.service")):
                    m.api.remove_config(c["ID"])
        wait_for(lambda: all(self.version_on(n) is None for n in self.nodes), timeout=60)


@pytest.fixture(scope="module")
def fleet(swarm_lab, run_id, tmp_path_factory):
    assert swarm_lab["swarm"], "lab up --swarm formed no swarm"
    fleet = make_fleet(swarm_lab, run_id, tmp_path_factory.mktemp("swarm"), prefix="w",
                       port=18970, kind=SwarmFleet,
                       versions={"1.0.0": "ok", "1.1.0": "ok", "0.9.1": "crash",
                                 "0.9.2": "unhealthy"})
    yield fleet
    fleet.cleanup()


@pytest.fixture
def empty(fleet):
    fleet.cleanup()
    return fleet


@pytest.fixture
def on_1_1_0(fleet):
    roll_to(fleet, "1.1.0")
    return fleet


def test_roll_puts_the_tag_on_every_swarm_node_by_digest(empty):
    fleet = empty
    report = roll_json(fleet, "--tag", "1.0.0")
    assert report["schema"] == 1
    assert [k for k in report if k != "schema"][:6] == ROLL_KEYS
    assert [list(n)[:6] for n in report["nodes"]] == [NODE_KEYS] * 3
    assert [(n["name"], n["zone"], n["from"], n["to"], n["result"]) for n in report["nodes"]] == [
        ("node1", "a", None, "1.0.0", "updated"), ("node2", "b", None, "1.0.0", "updated"),
        ("node3", "c", None, "1.0.0", "updated")]
    assert fleet.versions() == {"node1": "1.0.0", "node2": "1.0.0", "node3": "1.0.0"}
    (revision,) = fleet.revisions()
    spec = revision["Spec"]
    assert spec["TaskTemplate"]["ContainerSpec"]["Image"] == \
        f"{fleet.lab['registry']}/{fleet.image}@{fleet.digests['1.0.0']}"
    assert spec["Mode"] == {"Global": {}}
    assert spec["EndpointSpec"]["Mode"] == "dnsrr"
    assert spec["EndpointSpec"]["Ports"][0]["PublishMode"] == "host"
    status = json_out(fleet.run("status", "--json"))
    assert [(n["name"], n["tag"], n["health"]) for n in status["nodes"]] == [
        ("node1", "1.0.0", "healthy"), ("node2", "1.0.0", "healthy"), ("node3", "1.0.0", "healthy")]


@pytest.mark.parametrize("version, reason", [("0.9.1", "crash"), ("0.9.2", "answered 503")])
def test_a_sick_release_stops_at_the_canary_and_the_swarm_keeps_running(on_1_1_0, version, reason):
    fleet = on_1_1_0
    report = roll_json(fleet, "--tag", version, expect=1)
    assert report["result"] == "rolled_back" and report["failed_node"] == "node1"
    assert [n["result"] for n in report["nodes"]] == ["failed", "not_reached", "not_reached"]
    canary = report["nodes"][0]
    if reason == "crash":     # as over SSH: the container exited, or Swarm restarted it
        assert "exit" in canary["reason"] or "crash loop" in canary["reason"]
        assert any("crashing at start on purpose" in line for line in canary["logs"])
    else:
        assert reason in canary["reason"]
    assert fleet.versions() == {"node1": "1.1.0", "node2": "1.1.0", "node3": "1.1.0"}
    status = json_out(fleet.run("status", "--json"))
    assert {n["health"] for n in status["nodes"]} == {"healthy"}


def test_a_failure_on_a_later_node_puts_the_updated_nodes_back(on_1_1_0, tmp_path):
    fleet = on_1_1_0
    hook = refusing_hook(tmp_path / "fail-on-node3", "node3")
    config = fleet.write_config(tmp_path / "dockship.toml", hooks={"pre_node": [str(hook)]})
    proc = dockship("--config", str(config), "roll", "--env", ENV, "--service", fleet.service,
                    "--tag", "1.0.0", "--json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert [(n["name"], n["result"]) for n in report["nodes"]] == [
        ("node1", "rolled_back"), ("node2", "rolled_back"), ("node3", "failed")]
    assert fleet.versions() == {"node1": "1.1.0", "node2": "1.1.0", "node3": "1.1.0"}


def test_rollback_comes_back_to_the_previous_tag_and_history_says_so(empty):
    fleet = empty
    roll_to(fleet, "1.0.0", "1.1.0")
    report = json_out(fleet.run("rollback", "--json"))
    assert report["result"] == "succeeded" and report["tag"] == "1.0.0"
    assert [(n["from"], n["to"], n["result"]) for n in report["nodes"]] == \
        [("1.1.0", "1.0.0", "updated")] * 3
    assert fleet.versions() == {"node1": "1.0.0", "node2": "1.0.0", "node3": "1.0.0"}
    records = json_out(fleet.run("history", "--json"))["records"]
    assert [(r["kind"], r["tag"], r["result"]) for r in records[:3]] == [
        ("rollback", "1.0.0", "succeeded"), ("roll", "1.1.0", "succeeded"),
        ("roll", "1.0.0", "succeeded")]


def test_the_swarm_lock_is_one_config_and_a_second_roll_gets_exit_3(on_1_1_0):
    fleet = on_1_1_0
    from dockship.config import load
    from dockship.swarmmanager import SwarmManager
    from dockship.swarmstate import SwarmLockStore

    env = load(fleet.config).environment(ENV)
    manager = SwarmManager(env)
    store = SwarmLockStore(manager.call, ENV, fleet.service)
    held = store.create(LockInfo(ENV, fleet.service, "someone@elsewhere pid 1", "abc", "1.0.0",
                                 utc_now(), 600.0, "CI job 7"))
    try:
        proc = fleet.roll("--tag", "1.0.0", "--json")
        assert proc.returncode == 3, proc.stderr
        assert "someone@elsewhere" in json.loads(proc.stdout)["error"]
        status = json_out(dockship("--config", str(fleet.config), "lock", "status", "--env",
                                   ENV, "--service", fleet.service, "--json"))
        (svc,) = status["locks"]
        assert svc["locked"] and svc["holder"] == "someone@elsewhere pid 1"
        assert svc["message"] == "CI job 7"
        assert fleet.versions() == {"node1": "1.1.0", "node2": "1.1.0", "node3": "1.1.0"}
        released = dockship("--config", str(fleet.config), "lock", "release", "--env", ENV,
                            "--service", fleet.service, "--force")
        assert released.returncode == 0, released.stderr
        assert store.read() is None
    finally:
        store.remove(held)
        manager.close()


def test_a_manager_killed_mid_roll_the_roll_finishes_or_is_put_back_as_reported(on_1_1_0,
                                                                              tmp_path):
    """The manager dockship talks to (node1) dies while node2 is taken: dockship goes on through
    another manager; whatever the report says each node runs, it runs once node1 is back."""
    import dockship_lab

    fleet = on_1_1_0
    hook = tmp_path / "kill-node1-engine"
    hook.write_text(f"#!{sys.executable}\nimport os\n"
                    "if os.environ.get('DOCKSHIP_NODE') == 'node2':\n"
                    "    import dockship_lab\n"
                    "    dockship_lab.stop_engine('node1', kill=True)\n")
    hook.chmod(0o755)
    config = fleet.write_config(tmp_path / "dockship.toml", hooks={"pre_node": [str(hook)]})
    try:
        proc = dockship("--config", str(config), "roll", "--env", ENV, "--service",
                        fleet.service, "--tag", "1.0.0", "--json",
                        env={"PYTHONPATH": os.pathsep.join(sys.path)})
        report = json.loads(proc.stdout)
        assert proc.returncode in (0, 1, 4), proc.stderr
        assert report["result"] in ("succeeded", "rolled_back", "failed")
    finally:
        dockship_lab.start_engine("node1")
    expected = {}
    for n in report["nodes"]:
        ran = {"updated": n["to"], "rolled_back": n["from"], "failed": n["from"],
               "not_reached": n["from"]}.get(n["result"])
        expected[n["name"]] = ran
    assert report["result"] != "succeeded" or set(expected.values()) == {"1.0.0"}
    assert any("swarm manager ssh://root@10.77.0.11 stopped answering" in w
               for w in report["warnings"]), report["warnings"]
    # Swarm brings node1's task back on the engine's return: the report must be the truth.
    wait_for(lambda: fleet.versions() == expected, timeout=120)


def test_one_zone_at_a_time_as_the_node_labels_say(on_1_1_0):
    fleet = on_1_1_0
    report = roll_json(fleet, "--tag", "1.0.0", "--zone", "b")
    assert sorted((n["name"], n["zone"], n["result"]) for n in report["nodes"]) == [
        ("node1", "a", "held"), ("node2", "b", "updated"), ("node3", "c", "held")]
    assert fleet.versions() == {"node1": "1.1.0", "node2": "1.0.0", "node3": "1.1.0"}


@pytest.fixture(scope="module")
def lb(swarm_lab, fleet):
    """This module's HAProxy in front of the swarm nodes' port 18970."""
    paths = LabPaths.default()
    info = lab_balancer.balancer_up(paths, fleet.service, FRONTEND_PORT, fleet.port,
                                    swarm_lab["nodes"])
    yield info
    lab_balancer.balancer_down(paths, fleet.service)


def test_a_swarm_roll_behind_haproxy_drains_each_node_and_drops_no_request(on_1_1_0, lb,
                                                                          tmp_path):
    fleet = on_1_1_0
    config = fleet.write_config(tmp_path / "dockship.toml", balancer={
        "kind": "haproxy", "socket": lb.socket, "drain_timeout": 10, "ready_timeout": 20})
    wait_for(lambda: all(s.up for s in RuntimeAPI(lb.socket).servers(lb.backend)), timeout=30)
    with Load(lb.frontend_url + "/") as load:
        proc = dockship("--config", str(config), "roll", "--env", ENV, "--service",
                        fleet.service, "--tag", "1.0.0", "--json")
    assert proc.returncode == 0, proc.stderr
    assert load.failures == [], load.summary()
    assert load.served["1.0.0"] > 0 and load.served["1.1.0"] > 0, load.summary()
    assert proc.stderr.count("drained in") == 3, proc.stderr
    assert all(s.up for s in RuntimeAPI(lb.socket).servers(lb.backend))


def test_the_swarm_lease_is_atomic_renewed_by_the_managers_clock_and_gone_once_removed(fleet):
    from dockship.config import load
    from dockship.lock import Gone, Taken
    from dockship.swarmmanager import SwarmManager
    from dockship.swarmstate import SwarmLockStore

    manager = SwarmManager(load(fleet.config).environment(ENV))
    store = SwarmLockStore(manager.call, ENV, f"{fleet.service}-lease")
    info = LockInfo(ENV, f"{fleet.service}-lease", "me", "d1", "1.0.0", utc_now(), 60.0)
    held = store.create(info)
    try:
        with pytest.raises(Taken):
            store.create(info)
        wait_for(lambda: store.read().idle >= 1.0, timeout=10)
        store.renew(held)
        found = store.read()
        assert found.container_id == held and found.idle < 1.0 and not found.expired
        assert found.info.holder == "me"
    finally:
        assert store.remove(held) is True
    assert store.remove(held) is False and store.read() is None
    with pytest.raises(Gone):
        store.renew(held)
    manager.close()
