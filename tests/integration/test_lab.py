"""`dockship lab up | status | down` against the real machine: real daemons, no mocks.

The lab tests run in order on the default (real) lab: up, a second up that
must change nothing, killed services repaired by up, down, and up again with
the swarm (the module leaves the lab up, as `make lab` makes it, for the tests
that follow). Set
DOCKSHIP_LAB_TEST_COLD=1 to start from nothing, base image cache included
(adds about 30 s), and see the cold timing.

The first tests need no servers: the generated config and the TLS files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import time
import tomllib
from pathlib import Path

import docker
import pytest
import requests

import dockship_lab as lab
from dockship import config as config_mod
from dockship.chef import ChefClient
from dockship_lab import chefserver, etcdserver, labconfig, pypi, registry, tls
from dockship_lab.baseimage import base_image_ref, tarball_path
from dockship_lab.engine import lab_pid
from dockship_lab.network import link_exists
from dockship_lab.paths import BRIDGE, LabPaths
from labkit import config_values

FIXED_KEYS = {"index_url", "index_upload_url", "registry", "base_image", "nodes", "ssh", "chef", "config"}
TIMINGS: dict[str, float] = {}


def timed(name: str, fn):
    start = time.monotonic()
    result = fn()
    TIMINGS[name] = round(time.monotonic() - start, 1)
    print(f"\n[lab timing] {name}: {TIMINGS[name]} s")
    return result


# --- without servers -----------------------------------------------------------

def _values(tmp: Path) -> labconfig.LabConfigValues:
    return config_values(tmp, ca_bundle=tmp / 'ca "quoted".crt', etcd_url="http://127.0.0.1:2379",
                         etcd_prefix="/dockship/nodes/labetcd")


def test_generated_config_is_valid_toml_and_a_valid_dockship_config(tmp_path):
    paths = LabPaths(root=tmp_path, run=tmp_path / "run", cache=tmp_path / "cache", subnet="10.77.0")
    path = labconfig.write_config(paths, _values(tmp_path))
    data = tomllib.loads(path.read_text())
    assert data["registry"]["url"] == "10.77.0.1:5000"
    cfg = config_mod.load(path)
    env = cfg.environment("lab")
    assert [n.name for n in env.nodes] == ["node1", "node2", "node3"]
    assert env.nodes[0].docker == "ssh://root@10.77.0.11" and env.nodes[0].roles == ("web",)
    assert env.ssh.key == tmp_path / "id_ed25519"
    chef = cfg.environment("lab-chef").chef
    assert (chef.url, chef.client, chef.environment) == ("http://127.0.0.1:4545", "dockship", "lab")
    hello = cfg.services["hello"]
    assert (hello.package, hello.image, hello.port, hello.role, hello.health.path) == \
        ("hello-svc", "hello", 8000, "web", "/health")
    assert cfg.build.base_image.endswith("/dockship-lab/python:3-bookworm")


def test_labetcd_finds_its_nodes_in_etcd_and_rolls_as_lab_does(tmp_path):
    paths = LabPaths(root=tmp_path, run=tmp_path / "run", cache=tmp_path / "cache", subnet="10.77.0")
    values = dataclasses.replace(_values(tmp_path), balancer_socket=tmp_path / "haproxy.sock")
    cfg = config_mod.load(labconfig.write_config(paths, values))
    lab_env, etcd_env = cfg.environment("lab"), cfg.environment("labetcd")
    assert etcd_env.etcd == config_mod.EtcdSettings(url="http://127.0.0.1:2379",
                                                    prefix="/dockship/nodes/labetcd")
    assert etcd_env.nodes is None and etcd_env.chef is None
    assert (etcd_env.ssh, etcd_env.rollout) == (lab_env.ssh, lab_env.rollout)
    assert dataclasses.replace(etcd_env.balancer, at="") == dataclasses.replace(lab_env.balancer, at="")
    assert "[environments.labetcd]" in labconfig.config_path(paths).read_text()


def test_the_etcd_entry_of_a_node_says_what_environment_lab_says_of_it(tmp_path):
    from dockship.etcdnodes import parse_entry

    cfg = config_mod.load(labconfig.write_config(
        LabPaths(root=tmp_path, run=tmp_path / "run", cache=tmp_path / "cache", subnet="10.77.0"),
        _values(tmp_path)))
    for node, listed in zip(_values(tmp_path).nodes, cfg.environment("lab").nodes):
        value = json.dumps(etcdserver.node_entry(node)).encode()
        found = parse_entry(b"/k", value, cfg.environment("labetcd").etcd, setting="labetcd")
        assert found == listed


def test_tls_reuses_the_ca_and_reissues_the_server_cert_for_a_new_address(tmp_path):
    a = LabPaths(root=tmp_path, run=tmp_path / "run", cache=tmp_path / "cache", subnet="10.77.3")
    files = tls.ensure_tls(a)
    ca, cert = files.ca_cert.read_bytes(), files.cert.read_bytes()
    assert oct(files.ca_key.stat().st_mode & 0o777) == "0o600"
    assert oct(files.key.stat().st_mode & 0o777) == "0o600"
    assert tls.ensure_tls(a) == files and files.cert.read_bytes() == cert
    b = LabPaths(root=tmp_path, run=tmp_path / "run", cache=tmp_path / "cache", subnet="10.77.4")
    tls.ensure_tls(b)
    assert files.ca_cert.read_bytes() == ca and files.cert.read_bytes() != cert


def test_a_pid_file_naming_another_program_is_not_taken_for_the_daemon(tmp_path):
    pidfile = tmp_path / "registry.pid"
    pidfile.write_text(f"{os.getpid()}\n")            # alive, but this is pytest
    assert lab_pid(pidfile, "docker-registry") is None
    pidfile.write_text("999999999\n")                 # no such process
    assert lab_pid(pidfile, "docker-registry") is None


# --- the real lab ----------------------------------------------------------------

@pytest.fixture(scope="module")
def paths() -> LabPaths:
    if os.geteuid() != 0:
        pytest.fail("the lab needs root (network namespaces, engines); run the tests as root")
    return LabPaths.default()


def _cold_start(paths: LabPaths) -> None:
    """Nothing of the lab left, not even the base image cache or the imported image."""
    lab.down(paths)
    tarball_path(paths).unlink(missing_ok=True)
    client = docker.from_env()
    try:
        client.images.remove(base_image_ref(paths), force=True)
    except docker.errors.ImageNotFound:
        pass
    finally:
        client.close()


@pytest.fixture(scope="module")
def first_up(paths) -> lab.LabStatus:
    steps: list[tuple[str, str]] = []
    if os.environ.get("DOCKSHIP_LAB_TEST_COLD") == "1":
        _cold_start(paths)
        name = "up, cold (no cache)"
    else:
        name = "up, first in this run"
    status = timed(name, lambda: lab.up(nodes=3, paths=paths,
                                        progress=lambda s, d: steps.append((s, d))))
    assert steps and {s for s, _ in steps} <= set(lab.STEPS)
    return status


def _snapshot(paths: LabPaths) -> dict:
    """What a no-op `up` must leave exactly as it was."""
    files = [paths.root / "tls" / "ca.crt", paths.root / "tls" / "server.crt",
             paths.root / "ssh" / "id_ed25519", paths.root / "ssh" / "known_hosts",
             chefserver.client_key_path(paths), registry.password_file(paths),
             labconfig.config_path(paths)]
    # every daemon's pid file, the nodes' too: a restarted daemon has a new pid
    pids = {str(p.relative_to(paths.run)): p.read_text().strip()
            for p in sorted([*paths.run.glob("*.pid"), *paths.run.glob("node*/*.pid")])}
    return {"files": {str(f): f.read_bytes() for f in files}, "pids": pids}


def _chef_nodes(paths: LabPaths) -> list[dict]:
    with ChefClient(chefserver.URL, chefserver.CLIENT, chefserver.client_key_path(paths)) as chef:
        return chef.search("node", "role:web AND chef_environment:lab",
                           keys={"name": ["name"], "address": ["automatic", "ipaddress"],
                                 "zone": ["zone"]})


@pytest.mark.lab
def test_up_brings_every_component_up(first_up, paths):
    doc = first_up.to_json()
    assert FIXED_KEYS <= set(doc)
    assert json.loads(json.dumps(doc)) == doc
    assert doc["up"]["all"], doc["up"]
    assert [n["name"] for n in doc["nodes"]] == ["node1", "node2", "node3"]
    for i, node in enumerate(doc["nodes"], start=1):
        assert {"name", "address", "docker", "zone"} <= set(node)
        assert node["address"] == paths.node_address(i)
        assert node["docker"] == f"ssh://root@{node['address']}"
    assert set(doc["ssh"]) >= {"user", "key", "known_hosts"} and doc["ssh"]["user"] == "root"
    assert set(doc["chef"]) >= {"url", "client", "key", "environment"}
    assert doc["etcd"] == {"url": "http://127.0.0.1:2379", "prefix": "/dockship/nodes/labetcd"}
    assert doc["registry"] == f"{paths.host_address}:5000"
    assert doc["index_url"] == "http://127.0.0.1:8081/simple/"
    assert doc["index_upload_url"] == "http://127.0.0.1:8081/"
    assert doc["base_image"] == f"{paths.host_address}:5000/dockship-lab/python:3-bookworm"
    for port in (5000, 5001):
        assert Path(f"/etc/docker/certs.d/{paths.host_address}:{port}/ca.crt").read_bytes() == \
            Path(doc["ca_bundle"]).read_bytes()
    # status is an independent probe and agrees
    assert lab.status(paths).to_json() == doc


@pytest.mark.lab
def test_the_generated_config_loads(first_up):
    cfg = config_mod.load(Path(first_up.config))
    assert cfg.registry == first_up.registry and cfg.index_url == first_up.index_url
    assert [n.address for n in cfg.environment("lab").nodes] == [n.address for n in first_up.nodes]
    assert cfg.environment("lab-chef").chef.key == Path(first_up.chef.key)


@pytest.mark.lab
def test_chef_finds_the_lab_nodes(first_up, paths):
    found = _chef_nodes(paths)
    assert [(n["name"], n["address"], n["zone"]) for n in found] == \
        [(n.name, n.address, n.zone) for n in first_up.nodes]


@pytest.mark.lab
def test_etcd_lists_the_lab_nodes_as_environment_lab_does(first_up):
    from dockship.inventory import nodes_for

    cfg = config_mod.load(Path(first_up.config))
    hello = cfg.services["hello"]
    assert nodes_for(cfg.environment("labetcd"), hello) == nodes_for(cfg.environment("lab"), hello)


@pytest.mark.lab
def test_the_auth_registry_wants_the_generated_password(first_up, paths):
    auth = first_up.registry_auth
    password_file = Path(auth.password_file)
    assert oct(password_file.stat().st_mode & 0o777) == "0o600"
    url = f"https://{auth.url}/v2/"
    assert requests.get(url, verify=first_up.ca_bundle, timeout=5).status_code == 401
    good = requests.get(url, auth=(auth.user, password_file.read_text().strip()),
                        verify=first_up.ca_bundle, timeout=5)
    assert good.status_code == 200
    assert password_file.read_text().strip() not in json.dumps(first_up.to_json())


@pytest.mark.lab
def test_a_second_up_restarts_nothing_and_changes_nothing(first_up, paths):
    before = _snapshot(paths)
    assert any(name.startswith("node") for name in before["pids"]), before["pids"]
    status = timed("up, warm (all running)", lambda: lab.up(nodes=3, paths=paths))
    assert status.ok
    assert _snapshot(paths) == before
    assert chefserver.chef_answers(paths)          # the same client key still works


@pytest.mark.lab
def test_up_repairs_killed_services(first_up, paths):
    killed = {}
    for name in ("registry", "registry-auth", "pypiserver", "goiardi", "etcd"):
        pid = int((paths.run / f"{name}.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        killed[name] = pid
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and lab.status(paths).up.chef:
        time.sleep(0.2)
    broken = lab.status(paths).up
    assert not (broken.registry or broken.registry_auth or broken.index or broken.chef
                or broken.etcd), broken
    assert broken.engine and broken.nodes
    old_key = chefserver.client_key_path(paths).read_bytes()

    status = timed("up, repairing 5 killed daemons", lambda: lab.up(nodes=3, paths=paths))
    assert status.ok, status.up
    for name, pid in killed.items():
        assert int((paths.run / f"{name}.pid").read_text()) != pid
    # goiardi keeps nothing across a restart: the client was made again, nodes re-registered
    assert chefserver.client_key_path(paths).read_bytes() != old_key
    assert len(_chef_nodes(paths)) == 3


def _lab_netns(paths: LabPaths) -> list[str]:
    from dockship_lab.network import name_prefix

    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines()
            if line.split() and line.split()[0].startswith(name_prefix(paths))]


@pytest.mark.lab
def test_down_removes_everything_but_the_cache(first_up, paths):
    pids = {p.name: int(p.read_text()) for p in paths.run.glob("*.pid")}
    assert pids and _lab_netns(paths)
    engine_was_ours = lab.status(paths).engine_started_by_lab
    lab.down(paths)
    for name, pid in pids.items():
        assert not Path(f"/proc/{pid}").exists() or \
            Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", name
    assert _lab_netns(paths) == []
    for port in (5000, 5001):
        assert not Path(f"/etc/docker/certs.d/{paths.host_address}:{port}").exists()
    assert not paths.root.exists() and not paths.run.exists()
    assert tarball_path(paths).exists()
    # the node-to-node accept rule (design §5) goes with the bridge (kept while another lab,
    # on another subnet, still uses it)
    bridge_rule = ["-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"]
    for chain in ("DOCKER-USER", "FORWARD"):
        assert link_exists(BRIDGE) or subprocess.run(
            ["iptables", "-C", chain, *bridge_rule], capture_output=True).returncode != 0, chain
    after = lab.status(paths)
    assert not (after.up.registry or after.up.index or after.up.chef or after.up.nodes)
    # an engine the lab did not start is left alone; one it started is stopped with it
    assert after.up.engine is not engine_was_ours
    lab.down(paths)                         # nothing there: no error


@pytest.mark.lab
def test_up_after_down_works(paths):
    status = timed("up after down, with the swarm (cache warm)",
                   lambda: lab.up(nodes=3, paths=paths, swarm=True))
    assert status.ok, status.up
    assert status.swarm is not None and status.swarm.nodes == 3
    assert len(_chef_nodes(paths)) == 3
    assert requests.get(pypi.INDEX_URL, timeout=5).status_code == 200
    print("\n[lab timing] summary: " + json.dumps(TIMINGS))
