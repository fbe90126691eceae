"""The lab swarm's pure rules: roles, labels, when a swarm is reused or repaired, and the
`labswarm` environment of the lab config. No engines here (tests/integration/test_lab_swarm.py
forms the real swarm)."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from dockship import config as config_mod
from dockship import configfile
from dockship_lab import labconfig
from dockship_lab.nodes import node
from dockship_lab.paths import LabPaths
from labkit import config_values
from dockship_lab.swarm import (LABEL_NAME, LABEL_ROLES, LABEL_ZONE, LocalState, SwarmInfo,
                                SwarmNode, is_exactly, labels_update, node_labels, repair_plan,
                                wanted_role)

PATHS = LabPaths(root=Path("/nonexistent/lab"), run=Path("/nonexistent/run"),
                 cache=Path("/nonexistent/cache"), subnet="10.77.0")


def lab_nodes(count: int = 3):
    return [node(PATHS, i) for i in range(1, count + 1)]


def healthy(count: int = 3) -> tuple[list[SwarmNode], dict[str, LocalState]]:
    """A swarm exactly as `lab up --swarm` leaves it: what the manager lists, what each engine says."""
    listed, local = [], {}
    for position, n in enumerate(lab_nodes(count)):
        listed.append(SwarmNode(id=f"id-{n.name}", address=n.address, role=wanted_role(position),
                                ready=True, reachable=True, labels=node_labels(n), version=7))
        local[n.name] = LocalState(state="active", node_id=f"id-{n.name}",
                                   is_manager=wanted_role(position) == "manager")
    return listed, local


def test_the_first_three_nodes_manage_and_the_rest_work():
    assert [wanted_role(i) for i in range(5)] == ["manager"] * 3 + ["worker"] * 2


def test_labels_name_the_node_its_zone_and_roles():
    n1, n2, _ = lab_nodes()
    assert node_labels(n1) == {LABEL_NAME: "node1", LABEL_ZONE: "a", LABEL_ROLES: "web"}
    assert node_labels(n2, ("web", "worker")) == {LABEL_NAME: "node2", LABEL_ZONE: "b",
                                                  LABEL_ROLES: "web,worker"}
    assert (LABEL_NAME, LABEL_ZONE, LABEL_ROLES) == ("dockship.name", "dockship.zone", "dockship.roles")


def test_labels_are_updated_only_when_one_differs_and_other_labels_stay():
    wanted = {LABEL_NAME: "node1", LABEL_ZONE: "a"}
    assert labels_update({**wanted, "team": "x"}, wanted) is None
    assert labels_update({LABEL_NAME: "node1", LABEL_ZONE: "b", "team": "x"}, wanted) == \
        {LABEL_NAME: "node1", LABEL_ZONE: "a", "team": "x"}
    assert labels_update({}, wanted) == wanted


@pytest.mark.parametrize("count", [1, 3, 5])
def test_a_healthy_swarm_of_exactly_the_lab_nodes_is_reused(count):
    listed, local = healthy(count)
    assert is_exactly(listed, local, lab_nodes(count))
    assert repair_plan(listed, local, lab_nodes(count)).nothing


def test_a_node_that_left_rejoins_and_its_stale_entry_goes():
    listed, local = healthy()
    local["node3"] = LocalState(state="inactive", node_id="", is_manager=False)
    listed[2] = replace(listed[2], ready=False, reachable=False)
    plan = repair_plan(listed, local, lab_nodes())
    assert plan.rejoin == ("node3",)
    assert [s.id for s in plan.remove] == ["id-node3"]
    assert not is_exactly(listed, local, lab_nodes())


def test_a_node_in_another_swarm_rejoins():
    listed, local = healthy()
    local["node2"] = LocalState(state="active", node_id="id-elsewhere", is_manager=True)
    plan = repair_plan(listed, local, lab_nodes())
    assert plan.rejoin == ("node2",) and [s.id for s in plan.remove] == ["id-node2"]


def test_entries_of_nodes_long_gone_are_removed():
    listed, local = healthy()
    gone = SwarmNode(id="id-old", address="10.77.0.14", role="worker", ready=False,
                     reachable=True, labels={}, version=1)
    plan = repair_plan([*listed, gone], local, lab_nodes())
    assert plan.rejoin == () and plan.remove == (gone,)


@pytest.mark.parametrize("change", [
    {"role": "worker"},                  # node2 should manage
    {"ready": False},                    # down, as after its engine died
    {"reachable": False},                # a manager the others cannot reach
    {"address": "10.77.0.99"},           # listed under another address
])
def test_a_node_out_of_shape_rejoins(change):
    listed, local = healthy()
    listed[1] = replace(listed[1], **change)
    plan = repair_plan(listed, local, lab_nodes())
    assert plan.rejoin == ("node2",)
    assert [s.id for s in plan.remove] == ["id-node2"]


def test_a_fourth_node_missing_from_the_swarm_joins_as_a_worker():
    listed, local = healthy(3)
    local["node4"] = LocalState(state="inactive", node_id="", is_manager=False)
    plan = repair_plan(listed, local, lab_nodes(4))
    assert plan.rejoin == ("node4",) and plan.remove == ()


def test_status_json_of_the_swarm():
    info = SwarmInfo(manager="ssh://root@10.77.0.11", managers=("10.77.0.11", "10.77.0.12"),
                     nodes=2, node_ids={"node1": "a", "node2": "b"})
    assert info.to_json() == {"manager": "ssh://root@10.77.0.11",
                              "managers": ["10.77.0.11", "10.77.0.12"], "nodes": 2,
                              "node_ids": {"node1": "a", "node2": "b"}}


# --- the labswarm environment of the lab config -----------------------------------------

def values(tmp: Path, **swarm) -> labconfig.LabConfigValues:
    return config_values(tmp, balancer_socket=tmp / "haproxy-hello.sock",
                         balancer_url="http://127.0.0.1:8080", **swarm)


SWARM = {"swarm_manager": "ssh://root@10.77.0.11", "swarm_publish": 8001,
         "swarm_balancer_socket": Path("/run/dockship-lab/haproxy-hello-swarm.sock"),
         "swarm_balancer_url": "http://127.0.0.1:8082"}


def written(tmp: Path, v: labconfig.LabConfigValues) -> Path:
    path = tmp / "dockship.toml"
    configfile.write(path, labconfig.data(v), comment=labconfig.comment(v, path))
    return path


def test_labswarm_is_written_only_while_the_nodes_form_a_swarm(tmp_path):
    plain = tomllib.loads(written(tmp_path, values(tmp_path)).read_text())
    assert "labswarm" not in plain["environments"]
    assert "[environments.labswarm]" not in labconfig.comment(values(tmp_path), tmp_path / "dockship.toml")


def test_labswarm_has_the_manager_no_node_list_and_its_own_port(tmp_path):
    path = written(tmp_path, values(tmp_path, **SWARM))
    data = tomllib.loads(path.read_text())
    env = data["environments"]["labswarm"]
    assert env["swarm"] == {"manager": "ssh://root@10.77.0.11"}
    assert "nodes" not in env and "chef" not in env
    assert env["ssh"] == data["environments"]["lab"]["ssh"]
    assert env["rollout"] == data["environments"]["lab"]["rollout"] == \
        {"canary": 1, "batch": 1, "auto_rollback": True}
    assert env["services"] == {"hello": {"publish": 8001}}
    assert env["balancer"] == {"kind": "haproxy", "socket": str(SWARM["swarm_balancer_socket"]),
                               "backend": "hello-swarm"}
    assert "[environments.labswarm]" in path.read_text()   # the comment explains it


def test_labswarm_loads_as_a_swarm_environment(tmp_path):
    cfg = config_mod.load(written(tmp_path, values(tmp_path, **SWARM)))
    env = cfg.environment("labswarm")
    assert env.swarm is not None and env.swarm.manager == "ssh://root@10.77.0.11"
    assert env.nodes is None and env.chef is None
    hello = cfg.service_for("labswarm", "hello")
    assert (hello.port, hello.host_port) == (8000, 8001)      # same image, another host port
    assert cfg.service_for("lab", "hello").host_port == 8000
    assert env.balancer is not None and env.balancer.backend == "hello-swarm"
    assert (env.rollout.canary, env.rollout.auto_rollback) == (1, True)
