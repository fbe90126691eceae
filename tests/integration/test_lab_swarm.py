"""`dockship lab up --swarm` on the real lab: the node engines as one Docker Swarm.

The module forms (or reuses) the swarm once, then checks it the way the
Swarm backend and its failure tests will use it: three ready managers,
labelled nodes, `lab status --json`'s `swarm`, the `labswarm` environment,
traffic between the nodes (Swarm's own ports, an overlay network, a host-mode
published port on every node), a second `lab up --swarm` that changes
nothing, leftovers repaired, and one engine stopped and started again.
Every test leaves the swarm whole: other sessions roll on it.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import docker
import docker.types
import pytest
import requests

import dockship_lab as lab
from dockship import config as config_mod
from dockship_lab import balancer, swarm
from dockship_lab.engine import engine_answers
from dockship_lab.nodes import existing_nodes, engine_running
from dockship_lab.paths import LabPaths

from conftest import dockship, json_out

pytestmark = pytest.mark.lab

PATHS = LabPaths.default()
SERVICE_PORT = 18790        # this module's host-mode published port (others use 185xx/186xx)


@pytest.fixture(scope="module")
def formed(swarm_lab) -> dict:
    """The lab with its swarm, as `lab status --json` reports it."""
    return swarm_lab


@pytest.fixture(scope="module")
def nodes(formed):
    found = existing_nodes(PATHS)
    assert [n.name for n in found] == ["node1", "node2", "node3"]
    return found


def api(n) -> docker.APIClient:
    return docker.APIClient(base_url=n.docker_unix, timeout=60)


def listed(n) -> list[dict]:
    client = api(n)
    try:
        return client.nodes()
    finally:
        client.close()


def swarm_id(n) -> str:
    client = api(n)
    try:
        return client.inspect_swarm()["ID"]
    finally:
        client.close()


def wait_for(check, what: str, timeout: float = 90):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not within {timeout:.0f}s"
        time.sleep(0.5)


def whole(nodes) -> bool:
    """Three managers, each ready and reachable, each engine in it by its own ID."""
    entries = listed(nodes[0])
    local = {n.name: swarm.local_state(n) for n in nodes}
    by_address = {e["Status"]["Addr"]: e for e in entries}
    return len(entries) == 3 and all(
        (e := by_address.get(n.address)) is not None
        and e["ID"] == local[n.name].node_id and e["Spec"]["Role"] == "manager"
        and e["Status"]["State"] == "ready"
        and e["ManagerStatus"]["Reachability"] == "reachable" for n in nodes)


# --- the swarm as formed --------------------------------------------------------------

def test_the_lab_nodes_form_one_swarm_of_three_ready_managers(formed, nodes):
    assert whole(nodes)
    entries = listed(nodes[0])
    assert sum(bool(e["ManagerStatus"].get("Leader")) for e in entries) == 1
    assert {swarm_id(n) for n in nodes} == {swarm_id(nodes[0])}   # one swarm, not three
    for n in nodes:
        own = swarm.local_state(n)
        assert own is not None and own.state == "active" and own.is_manager, n.name


def test_swarm_nodes_carry_name_zone_and_roles_of_the_lab_nodes(formed, nodes):
    """The labels, not the hostnames, are how the Swarm backend tells nodes apart."""
    cfg = config_mod.load(Path(formed["config"]))
    static = {n.name: n for n in cfg.environment("lab").nodes}
    by_address = {e["Status"]["Addr"]: e for e in listed(nodes[0])}
    for n in nodes:
        labels = by_address[n.address]["Spec"]["Labels"]
        assert labels["dockship.name"] == n.name
        assert labels["dockship.zone"] == static[n.name].zone == n.zone
        assert labels["dockship.roles"] == ",".join(static[n.name].roles) == "web"
    assert sorted(e["Description"]["Hostname"] for e in by_address.values()) == \
        ["node1", "node2", "node3"]   # here each node has its own UTS namespace


def test_lab_status_json_names_the_swarm_and_its_managers(formed, nodes):
    status = json_out(dockship("lab", "status", "--json"))
    found = status["swarm"]
    assert found["manager"] == "ssh://root@10.77.0.11" == nodes[0].docker
    assert found["managers"] == sorted(n.address for n in nodes)
    assert found["nodes"] == 3
    assert found["node_ids"] == {n.name: swarm.local_state(n).node_id for n in nodes}
    assert found["balancer"]["url"] == "http://127.0.0.1:8082"
    rich = dockship("lab", "status")
    assert rich.returncode == 0, rich.stderr
    assert "swarm     manager ssh://root@10.77.0.11" in rich.stderr


def test_the_lab_config_has_labswarm_on_the_swarm_without_a_node_list(formed):
    path = Path(formed["config"])
    raw = tomllib.loads(path.read_text())["environments"]["labswarm"]
    assert "nodes" not in raw
    cfg = config_mod.load(path)
    env = cfg.environment("labswarm")
    assert env.swarm is not None and env.swarm.manager == formed["swarm"]["manager"]
    assert env.nodes is None
    assert env.ssh == cfg.environment("lab").ssh
    assert cfg.service_for("labswarm", "hello").host_port == 8001
    assert cfg.service_for("lab", "hello").host_port == 8000
    assert env.balancer is not None and env.balancer.backend == "hello-swarm"
    assert balancer.swarm_balancer_answers(PATHS)


# --- traffic between the nodes ----------------------------------------------------------

def _connect_from(n, address: str, port: int) -> subprocess.CompletedProcess[str]:
    probe = f"import socket; socket.create_connection(({address!r}, {port}), timeout=5).close()"
    return subprocess.run(["nsenter", f"--net=/run/netns/{n.netns}", sys.executable, "-c", probe],
                          capture_output=True, text=True, timeout=30)


def test_every_node_reaches_every_other_on_swarms_ports(formed, nodes):
    for a in nodes:
        for b in nodes:
            if a is b:
                continue
            for port in (2377, 7946):
                proc = _connect_from(a, b.address, port)
                assert proc.returncode == 0, f"{a.name} -> {b.name}:{port}: {proc.stderr}"


@pytest.fixture
def cleanup(nodes):
    """Remove what a test made on the swarm: ("service" | "network", name) pairs."""
    made: list[tuple[str, str]] = []
    yield made
    client = docker.DockerClient(base_url=nodes[0].docker_unix, timeout=60)
    try:
        for kind, name in made:
            try:
                (client.services if kind == "service" else client.networks).get(name).remove()
            except docker.errors.NotFound:
                pass
    finally:
        client.close()


def test_containers_on_two_nodes_talk_over_an_overlay_network(formed, nodes, run_id, cleanup):
    """VXLAN (4789/udp) and gossip (7946) between the nodes, not just the managers' 2377."""
    image, net = formed["base_image"], f"lsw-{run_id}-net"
    one = docker.DockerClient(base_url=nodes[0].docker_unix, timeout=120)
    two = docker.DockerClient(base_url=nodes[1].docker_unix, timeout=120)
    try:
        one.networks.create(net, driver="overlay", attachable=True)
        cleanup.append(("network", net))
        server = one.containers.run(image, ["python3", "-m", "http.server", "8000"], name=f"lsw-{run_id}-srv",
                                    network=net, detach=True, auto_remove=True)
        try:
            server.reload()
            ip = server.attrs["NetworkSettings"]["Networks"][net]["IPAddress"]
            assert ip.startswith("10.210."), ip       # the lab swarm's address pool
            probe = ("import time, urllib.request\n"
                     "for _ in range(50):\n"
                     "    try:\n"
                     f"        print(urllib.request.urlopen('http://{ip}:8000/', timeout=2).status); break\n"
                     "    except OSError: time.sleep(0.2)\n")
            out = two.containers.run(image, ["python3", "-c", probe], network=net, remove=True)
            assert out.decode().strip() == "200"
        finally:
            server.remove(force=True)
    finally:
        one.close()
        two.close()


def test_a_global_service_answers_on_its_host_mode_port_on_every_node(formed, nodes, run_id, cleanup):
    """What the Swarm backend relies on here (no IPVS): host-mode ports, dnsrr endpoints."""
    name = f"lsw-{run_id}-web"
    client = docker.DockerClient(base_url=nodes[0].docker_unix, timeout=120)
    try:
        client.services.create(
            formed["base_image"], ["python3", "-m", "http.server", "8000"], name=name,
            mode=docker.types.ServiceMode("global"),
            endpoint_spec=docker.types.EndpointSpec(
                mode="dnsrr", ports={SERVICE_PORT: (8000, "tcp", "host")}))
        cleanup.append(("service", name))
    finally:
        client.close()

    def all_answer() -> bool:
        for n in nodes:
            try:
                if requests.get(f"http://{n.address}:{SERVICE_PORT}/", timeout=2).status_code != 200:
                    return False
            except requests.RequestException:
                return False
        return True

    wait_for(all_answer, f"service {name} on every node's port {SERVICE_PORT}", timeout=120)


# --- idempotence and repair ------------------------------------------------------------

def test_a_second_lab_up_swarm_keeps_the_same_swarm(formed, nodes):
    before = (swarm_id(nodes[0]), {n.name: swarm.local_state(n).node_id for n in nodes})
    proc = dockship("lab", "up", "--swarm")
    assert proc.returncode == 0, proc.stderr
    assert "reusing the swarm of 3 node(s)" in proc.stderr
    after = (swarm_id(nodes[0]), {n.name: swarm.local_state(n).node_id for n in nodes})
    assert after == before
    assert whole(nodes)


def test_a_node_left_in_a_swarm_of_its_own_is_brought_back(formed, nodes):
    """As an interrupted run leaves it: node3 left (forced) and formed a swarm alone."""
    keep = swarm_id(nodes[0])
    kept_ids = {n.name: swarm.local_state(n).node_id for n in nodes[:2]}
    odd = api(nodes[2])
    try:
        odd.leave_swarm(force=True)
        odd.init_swarm(advertise_addr=nodes[2].address, listen_addr=f"{nodes[2].address}:2377")
        assert odd.inspect_swarm()["ID"] != keep
    finally:
        odd.close()
    proc = dockship("lab", "up", "--swarm")
    assert proc.returncode == 0, proc.stderr
    assert "node3 rejoins" in proc.stderr
    assert swarm_id(nodes[2]) == keep == swarm_id(nodes[0])     # repaired, not formed anew
    assert {n.name: swarm.local_state(n).node_id for n in nodes[:2]} == kept_ids
    wait_for(lambda: whole(nodes), "the repaired swarm")


# --- one engine stopped and started (the failure tests' tool) -----------------------------

@pytest.mark.parametrize("kill", [True, False], ids=["killed", "stopped"])
def test_a_manager_engine_stops_and_comes_back_into_the_swarm(formed, nodes, kill):
    target = nodes[2]
    node_id = swarm.local_state(target).node_id
    lab.stop_engine(target.name, kill=kill)
    try:
        assert not engine_answers(target.docker_unix, timeout=2)
        assert not engine_running(PATHS, target)
        socket.create_connection((target.address, 22), timeout=5).close()   # its sshd stays up

        def unreachable() -> bool:
            entry = next(e for e in listed(nodes[0]) if e["ID"] == node_id)
            return entry["ManagerStatus"]["Reachability"] != "reachable"

        wait_for(unreachable, f"the swarm to notice {target.name} gone", timeout=60)
    finally:
        lab.start_engine(target.name)
    assert engine_running(PATHS, target)
    assert swarm.local_state(target).node_id == node_id       # the same node, rejoined
    wait_for(lambda: whole(nodes), f"{target.name} back in the swarm", timeout=60)
