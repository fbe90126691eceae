"""`dockship roll` / `rollback` on the lab: real nodes, real health checks, real failures.

The versions are published and built once for the module (`fleet`); what runs
on the nodes is set up by each test's own fixtures (`empty`, `on_1_0_0`, …),
so every test passes alone (`-k`) and in any order.
"""

from __future__ import annotations

import json
import time

import pytest

from conftest import dockship, json_out
from dockship import configfile
from rollkit import make_fleet, refusing_hook, roll_json, roll_to

pytestmark = pytest.mark.lab

ROLL_KEYS = ["env", "service", "tag", "digest", "result", "nodes"]
NODE_KEYS = ["name", "zone", "from", "to", "result", "seconds"]


@pytest.fixture(scope="module")
def fleet(lab, run_id, tmp_path_factory):
    fleet = make_fleet(lab, run_id, tmp_path_factory.mktemp("roll"), prefix="r", port=18200,
                       versions={"1.0.0": "ok", "1.1.0": "ok", "0.9.1": "crash",
                                 "0.9.2": "unhealthy", "0.9.3": "slow:30"})
    yield fleet
    fleet.cleanup()


@pytest.fixture
def empty(fleet):
    """Nothing of the service on the nodes: no container, no lock, no history."""
    fleet.cleanup()
    return fleet


@pytest.fixture
def on_1_0_0(fleet):
    """Every node runs 1.0.0."""
    roll_to(fleet, "1.0.0")
    return fleet


@pytest.fixture
def on_1_1_0(fleet):
    """Every node runs 1.1.0."""
    roll_to(fleet, "1.1.0")
    return fleet


@pytest.fixture
def on_1_1_0_after_1_0_0(fleet):
    """Every node runs 1.1.0, rolled from 1.0.0 (its previous tag, retained)."""
    roll_to(fleet, "1.0.0", "1.1.0")
    return fleet


@pytest.fixture
def history_of_rolls(empty):
    """From nothing: roll 1.0.0, roll 1.1.0, a sick release rolled back, rollback, rollback --tag 1.1.0."""
    roll_to(empty, "1.0.0", "1.1.0")
    assert roll_json(empty, "--tag", "0.9.2", expect=1)["result"] == "rolled_back"
    for extra in ((), ("--tag", "1.1.0")):
        json_out(dockship("--config", str(empty.config), "rollback", "--env", "lab",
                          "--service", empty.service, "--json", *extra))
    return empty


@pytest.mark.usefixtures("empty")
def test_dry_run_prints_canary_and_batches_and_touches_nothing(fleet):
    proc = fleet.roll("--tag", "1.0.0", "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert [b["name"] for b in plan["batches"]] == ["canary", "batch 1", "batch 2"]
    assert [n["name"] for b in plan["batches"] for n in b["nodes"]] == ["node1", "node2", "node3"]
    assert plan["digest"] == fleet.digests["1.0.0"]
    assert "dry run: nothing touched" in proc.stderr
    assert all(fleet.running(n) == [] for n in fleet.nodes)


@pytest.mark.usefixtures("empty")
def test_roll_puts_the_tag_on_every_node_by_digest(fleet):
    report = roll_json(fleet, "--tag", "1.0.0")
    assert report["schema"] == 1                          # design §12: every JSON document
    assert [k for k in report if k != "schema"][:6] == ROLL_KEYS
    assert report["result"] == "succeeded" and report["tag"] == "1.0.0"
    assert [list(n)[:6] for n in report["nodes"]] == [NODE_KEYS] * 3
    assert [(n["name"], n["zone"], n["from"], n["to"], n["result"]) for n in report["nodes"]] == [
        ("node1", "a", None, "1.0.0", "updated"), ("node2", "b", None, "1.0.0", "updated"),
        ("node3", "c", None, "1.0.0", "updated")]
    assert fleet.versions() == {"node1": "1.0.0", "node2": "1.0.0", "node3": "1.0.0"}
    for node in fleet.nodes:
        (container,) = fleet.running(node)
        assert container["Config"]["Image"] == f"{fleet.lab['registry']}/{fleet.image}@{fleet.digests['1.0.0']}"
        assert container["HostConfig"]["Init"] is True


@pytest.mark.usefixtures("on_1_0_0")
def test_roll_without_tag_takes_the_highest_final_release_in_the_registry(fleet):
    report = roll_json(fleet)
    assert report["tag"] == "1.1.0" and report["digest"] == fleet.digests["1.1.0"]
    assert [(n["from"], n["to"], n["result"]) for n in report["nodes"]] == [("1.0.0", "1.1.0", "updated")] * 3
    assert set(fleet.versions().values()) == {"1.1.0"}


@pytest.mark.usefixtures("on_1_1_0")
def test_rolling_what_already_runs_changes_nothing(fleet):
    before = {n["name"]: fleet.running(n)[0]["Id"] for n in fleet.nodes}
    report = roll_json(fleet, "--tag", "1.1.0")
    assert report["result"] == "succeeded"
    assert [n["result"] for n in report["nodes"]] == ["unchanged"] * 3
    assert {n["name"]: fleet.running(n)[0]["Id"] for n in fleet.nodes} == before


@pytest.mark.usefixtures("on_1_1_0")
@pytest.mark.parametrize("version, reason, log", [
    ("0.9.1", "crash", "crashing at start on purpose"),
    ("0.9.2", "answered 503 (expected 200)", None),
    ("0.9.3", "not healthy within 10s", None),
])
def test_a_sick_release_stops_at_the_canary_and_the_fleet_keeps_running(fleet, version, reason, log):
    report = roll_json(fleet, "--tag", version, expect=1)
    assert report["result"] == "rolled_back"
    assert report["failed_node"] == "node1"
    assert [n["result"] for n in report["nodes"]] == ["failed", "not_reached", "not_reached"]
    canary = report["nodes"][0]
    if reason == "crash":
        assert "exited" in canary["reason"] or "crash loop" in canary["reason"]
    else:
        assert reason in canary["reason"]
    if log:
        assert any(log in line for line in canary["logs"])
    assert fleet.versions() == {"node1": "1.1.0", "node2": "1.1.0", "node3": "1.1.0"}
    assert all(len(fleet.running(n)) == 1 for n in fleet.nodes)
    # Containers made ahead for node2 and node3 (never started) went with the canary's.
    assert all(version not in fleet.tags_on(n) for n in fleet.nodes)


@pytest.mark.usefixtures("on_1_1_0")
def test_a_failure_on_a_later_node_puts_the_updated_nodes_back(fleet, tmp_path):
    hook = refusing_hook(tmp_path / "fail-on-node3", "node3")
    config = fleet.write_config(tmp_path / "dockship.toml", hooks={"pre_node": [str(hook)]})
    proc = dockship("--config", str(config), "roll", "--env", "lab", "--service", fleet.service,
                    "--tag", "1.0.0", "--json")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["result"] == "rolled_back"
    assert [(n["name"], n["result"]) for n in report["nodes"]] == [
        ("node1", "rolled_back"), ("node2", "rolled_back"), ("node3", "failed")]
    assert "node3 refuses" in report["reason"] and "exited 7" in report["reason"]
    assert fleet.versions() == {"node1": "1.1.0", "node2": "1.1.0", "node3": "1.1.0"}


@pytest.mark.usefixtures("on_1_1_0")
def test_hooks_see_the_deployment_in_their_environment(fleet, tmp_path):
    log = tmp_path / "hooks.log"
    hook = tmp_path / "record"
    hook.write_text(f'#!/bin/sh\necho "$1 $DOCKSHIP_ENV $DOCKSHIP_SERVICE ${{DOCKSHIP_NODE:-}} '
                    f'${{DOCKSHIP_ZONE:-}} $DOCKSHIP_FROM_TAG $DOCKSHIP_TO_TAG" >> {log}\n')
    hook.chmod(0o755)
    config = fleet.write_config(tmp_path / "dockship.toml", hooks={
        name: [str(hook), name] for name in ("pre_roll", "pre_node", "post_node", "post_roll")})
    proc = dockship("--config", str(config), "roll", "--env", "lab", "--service", fleet.service,
                    "--tag", "1.0.0")
    assert proc.returncode == 0, proc.stderr
    lines = log.read_text().splitlines()
    assert lines[0] == f"pre_roll lab {fleet.service}    1.0.0"
    assert lines[1] == f"pre_node lab {fleet.service} node1 a 1.1.0 1.0.0"
    assert lines[2] == f"post_node lab {fleet.service} node1 a 1.1.0 1.0.0"
    assert lines[-1] == f"post_roll lab {fleet.service}    1.0.0"
    assert len(lines) == 8


@pytest.mark.usefixtures("on_1_0_0")
def test_rollback_without_tag_returns_each_node_to_its_previous_tag_without_pulling(fleet):
    roll_json(fleet, "--tag", "1.1.0")
    since = int(time.time()) - 1
    proc = dockship("--config", str(fleet.config), "rollback", "--env", "lab",
                    "--service", fleet.service, "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["result"] == "succeeded" and report["tag"] == "1.0.0"
    assert [(n["from"], n["to"]) for n in report["nodes"]] == [("1.1.0", "1.0.0")] * 3
    assert set(fleet.versions().values()) == {"1.0.0"}
    until = int(time.time()) + 1
    for node in fleet.nodes:
        with fleet.engine(node) as client:
            pulls = [e for e in client.events(since=since, until=until, decode=True,
                                              filters={"type": "image", "event": "pull"})
                     if f"/{fleet.image}@" in e.get("id", "") or f"/{fleet.image}:" in e.get("id", "")]
        assert pulls == [], f"{node['name']} pulled during the rollback: {pulls}"


@pytest.mark.usefixtures("on_1_0_0")
def test_rollback_with_a_tag_is_a_roll_to_that_tag(fleet):
    proc = dockship("--config", str(fleet.config), "rollback", "--env", "lab",
                    "--service", fleet.service, "--tag", "1.1.0", "--json")
    report = json_out(proc)
    assert report["tag"] == "1.1.0" and report["result"] == "succeeded"
    assert set(fleet.versions().values()) == {"1.1.0"}


@pytest.mark.usefixtures("on_1_1_0_after_1_0_0")
def test_status_reads_what_every_node_runs(fleet):
    status = json_out(dockship("--config", str(fleet.config), "status", "--env", "lab",
                               "--service", fleet.service, "--json"))
    assert status["tags"] == ["1.1.0"] and status["split"] is False
    for node in status["nodes"]:
        assert node["tag"] == "1.1.0" and node["digest"] == fleet.digests["1.1.0"]
        assert node["health"] == "healthy" and node["previous"] == "1.0.0"
        assert "1.0.0" in node["retained"]
        assert len(node["retained"]) <= 3


@pytest.mark.usefixtures("history_of_rolls")
def test_history_lists_every_roll_newest_first(fleet):
    out = json_out(dockship("--config", str(fleet.config), "history", "--env", "lab",
                            "--service", fleet.service, "--json"))
    records = out["records"]
    assert records[0]["kind"] == "rollback" and records[0]["tag"] == "1.1.0"
    assert records[1]["kind"] == "rollback" and records[1]["tag"] == "1.0.0"
    results = [r["result"] for r in records]
    assert "rolled_back" in results and "succeeded" in results
    first = records[-1]
    assert first["tag"] == "1.0.0" and [n["from"] for n in first["nodes"]] == [None] * 3
    assert all(r["user"] for r in records)


def test_an_unknown_tag_is_bad_input_and_names_what_exists(fleet):
    proc = fleet.roll("--tag", "7.7.7")
    assert proc.returncode == 2
    assert "7.7.7" in proc.stderr and "1.1.0" in proc.stderr


def test_an_unknown_environment_is_bad_input(fleet):
    proc = dockship("--config", str(fleet.config), "roll", "--env", "lba")
    assert proc.returncode == 2 and "unknown environment 'lba'" in proc.stderr and "lab" in proc.stderr


def test_unix_socket_engines_are_read_like_ssh_ones(fleet, tmp_path):
    roll_json(fleet, "--tag", "1.1.0")
    config = fleet.write_config(tmp_path / "dockship.toml")
    for node in fleet.nodes:
        config.write_text(config.read_text().replace(
            f'docker = "{node["docker"]}"',
            f'docker = "unix:///run/dockship-lab/{node["name"]}/docker.sock"'))
    status = json_out(dockship("--config", str(config), "status", "--env", "lab",
                               "--service", fleet.service, "--json"))
    assert [(n["name"], n["tag"], n["health"]) for n in status["nodes"]] == [
        ("node1", "1.1.0", "healthy"), ("node2", "1.1.0", "healthy"), ("node3", "1.1.0", "healthy")]


def test_nodes_pull_from_an_authenticated_registry_with_the_build_side_credentials(fleet, tmp_path):
    auth = fleet.lab["registry_auth"]
    password = open(auth["password_file"]).read().strip()
    creds = {"DOCKSHIP_REGISTRY_USER": auth["user"], "DOCKSHIP_REGISTRY_PASSWORD": password}
    roll_json(fleet, "--tag", "1.1.0")
    data = fleet.config_data()
    data["registry"]["url"] = auth["url"]
    config = configfile.write(tmp_path / "dockship.toml", data)
    built = json_out(dockship("--config", str(config), "build", fleet.package, "1.0.0", "--json",
                              env=creds))
    assert built["image"].startswith(auth["url"] + "/")

    denied = dockship("--config", str(config), "roll", "--env", "lab", "--service", fleet.service,
                      "--tag", "1.0.0", env={"DOCKER_CONFIG": str(tmp_path / "none")})
    assert denied.returncode == 2 and "DOCKSHIP_REGISTRY_USER" in denied.stderr
    assert fleet.versions() == {"node1": "1.1.0", "node2": "1.1.0", "node3": "1.1.0"}

    proc = dockship("--config", str(config), "roll", "--env", "lab", "--service", fleet.service,
                    "--tag", "1.0.0", "--json", env=creds)
    report = json_out(proc)
    assert report["result"] == "succeeded" and report["digest"] == built["digest"]
    assert set(fleet.versions().values()) == {"1.0.0"}
    assert password not in proc.stdout + proc.stderr
