"""A service checked by TCP instead of HTTP, rolled on the lab's three nodes."""

from __future__ import annotations

import json

import pytest

from conftest import dockship
from dockship import configfile
from rollkit import make_fleet

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def fleet(lab, run_id, tmp_path_factory):
    fleet = make_fleet(lab, run_id, tmp_path_factory.mktemp("kinds"), prefix="k", port=18800,
                       versions={"1.0.0": "ok", "1.1.0": "crash"})
    yield fleet
    fleet.cleanup()


def tcp_config(fleet):
    data = fleet.config_data(health={"kind": "tcp"})
    del data["services"][fleet.service]["health"]["path"]    # a tcp check has no path
    return configfile.write(fleet.config.with_name("tcp.toml"), data)


def test_a_tcp_checked_service_rolls_and_a_crashing_release_is_put_back(fleet):
    config = tcp_config(fleet)
    good = dockship("--config", str(config), "roll", "--env", "lab", "--service", fleet.service,
                    "--tag", "1.0.0", "--json")
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout)["result"] == "succeeded"
    status = dockship("--config", str(config), "status", "--env", "lab", "--service",
                      fleet.service, "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    assert {n["health"] for n in json.loads(status.stdout)["nodes"]} == {"healthy"}

    bad = dockship("--config", str(config), "roll", "--env", "lab", "--service", fleet.service,
                   "--tag", "1.1.0", "--json")
    assert bad.returncode == 1, bad.stderr
    report = json.loads(bad.stdout)
    assert report["result"] in ("rolled_back", "failed") and report["failed_node"] == "node1"
    assert set(fleet.versions().values()) == {"1.0.0"}
