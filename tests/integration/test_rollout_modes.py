"""Canary-only rolls, canary bake, and zone-by-zone rolls on the lab's three zones (a, b, c)."""

from __future__ import annotations

import copy
import json

import pytest

from conftest import dockship, json_out
from dockship import configfile
from rollkit import make_fleet

pytestmark = pytest.mark.lab

BAKE = {"bake": 3, "bake_path": "/", "bake_rate": 20, "bake_max_error_increase": 0.02}


@pytest.fixture(scope="module")
def fleet(lab, run_id, tmp_path_factory):
    fleet = make_fleet(lab, run_id, tmp_path_factory.mktemp("modes"), prefix="m", port=18400,
                       versions={"1.0.0": "ok", "1.1.0": "ok", "1.2.0": "errors:0.25",
                                 "1.3.0": "latency:150", "0.9.0": "sick-after:2"})
    yield fleet
    fleet.cleanup()


def roll(fleet, config, *args):
    return dockship("--config", str(config), "roll", "--env", "lab", "--service", fleet.service,
                    *args, "--json")


def failed_bake(fleet, tmp_path, tag: str) -> dict:
    """Roll `tag` with a canary bake that is expected to fail it: the JSON report."""
    config = fleet.write_config(tmp_path / "dockship.toml", rollout=BAKE)
    proc = roll(fleet, config, "--tag", tag)
    assert proc.returncode == 1, proc.stderr
    return json.loads(proc.stdout)


def test_canary_only_rolls_the_canary_and_status_shows_the_split(fleet):
    json_out(fleet.roll("--tag", "1.0.0", "--json"))
    report = json_out(fleet.roll("--tag", "1.1.0", "--canary-only", "--json"))
    assert report["result"] == "succeeded"
    assert [(n["name"], n["result"]) for n in report["nodes"]] == [
        ("node1", "updated"), ("node2", "held"), ("node3", "held")]
    assert fleet.versions() == {"node1": "1.1.0", "node2": "1.0.0", "node3": "1.0.0"}
    status = json_out(dockship("--config", str(fleet.config), "status", "--env", "lab",
                               "--service", fleet.service, "--json"))
    assert status["split"] is True and status["tags"] == ["1.0.0", "1.1.0"]

    promoted = json_out(fleet.roll("--tag", "1.1.0", "--json"))
    assert {n["name"]: n["result"] for n in promoted["nodes"]} == {
        "node1": "unchanged", "node2": "updated", "node3": "updated"}
    assert set(fleet.versions().values()) == {"1.1.0"}


def test_a_canary_that_bakes_well_is_promoted_with_its_figures_in_the_report(fleet, tmp_path):
    config = fleet.write_config(tmp_path / "dockship.toml", rollout=BAKE)
    report = json_out(roll(fleet, config, "--tag", "1.0.0"))
    assert report["result"] == "succeeded"
    bake = report["bake"]
    assert bake["passed"] is True
    assert bake["canary"]["requests"] > 20 and bake["baseline"]["requests"] > 20
    assert bake["canary"]["errors"] == 0
    assert set(fleet.versions().values()) == {"1.0.0"}


def test_a_canary_with_more_errors_than_the_baseline_is_rolled_back_with_the_figures(fleet, tmp_path):
    report = failed_bake(fleet, tmp_path, "1.2.0")
    assert report["result"] == "rolled_back" and report["failed_node"] == "node1"
    assert report["bake"]["passed"] is False
    assert report["bake"]["canary"]["error_rate"] > 0.2
    assert report["bake"]["baseline"]["errors"] == 0
    assert "canary bake failed: canary error rate" in report["reason"]
    assert [n["result"] for n in report["nodes"]] == ["rolled_back", "not_reached", "not_reached"]
    assert set(fleet.versions().values()) == {"1.0.0"}


def test_a_slower_canary_fails_the_latency_comparison(fleet, tmp_path):
    report = failed_bake(fleet, tmp_path, "1.3.0")
    assert report["bake"]["passed"] is False and "p95 latency" in report["bake"]["reason"]
    assert report["bake"]["canary"]["p95_ms"] >= 150
    assert set(fleet.versions().values()) == {"1.0.0"}


def test_zone_by_zone_follows_the_configured_zone_order(fleet, tmp_path):
    config = fleet.write_config(tmp_path / "dockship.toml",
                                rollout={"by_zone": True, "zones": ["c", "a"], "canary": 1})
    plan = json_out(roll(fleet, config, "--tag", "1.1.0", "--dry-run"))
    assert [(b["name"], [n["name"] for n in b["nodes"]]) for b in plan["batches"]] == [
        ("zone c: canary", ["node3"]), ("zone a: batch 1", ["node1"]), ("zone b: batch 2", ["node2"])]
    proc = roll(fleet, config, "--tag", "1.1.0")
    report = json_out(proc)
    assert [n["name"] for n in report["nodes"]] == ["node3", "node1", "node2"]
    assert "zone c done; verifying" in proc.stderr
    assert set(fleet.versions().values()) == {"1.1.0"}


def test_one_zone_only_holds_the_others(fleet):
    report = json_out(fleet.roll("--tag", "1.0.0", "--zone", "b", "--json"))
    assert {n["name"]: n["result"] for n in report["nodes"]} == {
        "node1": "held", "node2": "updated", "node3": "held"}
    assert fleet.versions() == {"node1": "1.1.0", "node2": "1.0.0", "node3": "1.1.0"}


def test_an_unknown_zone_is_bad_input(fleet):
    proc = fleet.roll("--tag", "1.0.0", "--zone", "z")
    assert proc.returncode == 2 and "zone 'z'" in proc.stderr and "a, b, c" in proc.stderr


def test_an_environment_with_two_services_rolls_each_and_reports_both(fleet, tmp_path):
    data = fleet.config_data()
    second = copy.deepcopy(data["services"][fleet.service])
    second["port"] = fleet.port + 1
    second["env"]["PORT"] = str(fleet.port + 1)
    data["services"][f"{fleet.service}two"] = second
    config = configfile.write(tmp_path / "dockship.toml", data)
    try:
        out = json_out(dockship("--config", str(config), "roll", "--env", "lab", "--json"))
        assert [s["service"] for s in out["services"]] == [fleet.service, f"{fleet.service}two"]
        assert all(s["result"] == "succeeded" and s["tag"] == "1.3.0" for s in out["services"])
        refused = dockship("--config", str(config), "roll", "--env", "lab", "--tag", "1.0.0")
        assert refused.returncode == 2 and "--tag needs --service" in refused.stderr
    finally:
        for node in fleet.nodes:
            with fleet.engine(node) as client:
                for c in client.containers.list(all=True):
                    if c.name.startswith(f"{fleet.service}two-") or c.name.endswith(f"-{fleet.service}two"):
                        c.remove(force=True)


def test_overlapped_windows_still_catch_a_node_that_falls_sick_and_put_everything_back(fleet, tmp_path):
    json_out(fleet.roll("--tag", "1.1.0", "--json"))
    config = fleet.write_config(tmp_path / "dockship.toml", health={"min_healthy": 4},
                                rollout={"canary": 0, "overlap_min_healthy": True})
    proc = roll(fleet, config, "--tag", "0.9.0")
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    assert report["result"] == "rolled_back"
    assert "did not stay healthy 4s" in report["reason"]
    assert set(fleet.versions().values()) == {"1.1.0"}


def test_overlapped_windows_roll_a_healthy_release(fleet, tmp_path):
    config = fleet.write_config(tmp_path / "dockship.toml", health={"min_healthy": 2},
                                rollout={"canary": 1, "overlap_min_healthy": True})
    report = json_out(roll(fleet, config, "--tag", "1.0.0"))
    assert report["result"] == "succeeded"
    assert [n["result"] for n in report["nodes"]] == ["updated"] * 3
    assert set(fleet.versions().values()) == {"1.0.0"}
