"""Secrets, per-environment settings, settings drift and the host port on the lab (design §11).

The module rolls its own service (`svcs`, container port 18650, a fresh
package per session) through the real CLI onto the lab's engines, and reads
the nodes back through their local sockets. Each test starts from a clean
slate (cleanup), so none depends on another's order.
"""

from __future__ import annotations

import json
import secrets as random
from pathlib import Path

import pytest

from conftest import dockship
from dockship import configfile
from rollkit import make_fleet, wait_for

pytestmark = pytest.mark.lab

SERVICE = "svcs"
PORT = 18650
EDGE_PORT = 18651          # where environment `edge` publishes the same container port


@pytest.fixture(scope="module")
def fleet(lab, run_id, tmp_path_factory):
    return make_fleet(lab, run_id, tmp_path_factory.mktemp("secrets"), prefix="s", port=PORT,
                      versions={"1.0.0": "ok"})


@pytest.fixture
def fresh(fleet):
    fleet.cleanup()
    yield fleet
    fleet.cleanup()


def _value(tag: str) -> str:
    return f"{tag}-{random.token_hex(12)}"


def write(fleet, *, secrets: list[str] = (), secrets_file: str | None = None,
          env: dict | None = None, hooks: dict | None = None, edge: dict | None = None) -> Path:
    """The module's config with secrets; `edge` adds an environment `edge` on node2 and node3
    (and narrows `lab` to node1) with these service overrides."""
    data = fleet.config_data(hooks=hooks)
    svc = data["services"][SERVICE]
    svc["secrets"] = list(secrets)
    svc["env"].update(env or {})
    lab = data["environments"]["lab"]
    if secrets_file:
        lab["secrets_file"] = secrets_file
    if edge is not None:
        nodes = lab["nodes"]
        data["environments"]["edge"] = {**lab, "nodes": nodes[1:],
                                        "services": {SERVICE: edge}}
        lab["nodes"] = nodes[:1]
    return configfile.write(fleet.config, data)


def run(fleet, *args: str, env: dict | None = None, expect: int = 0):
    proc = dockship("--config", str(fleet.config), *args, env=env)
    assert proc.returncode == expect, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def containers(fleet, node: dict, *, all: bool = True) -> list[dict]:
    with fleet.engine(node) as client:
        return [c.attrs for c in client.containers.list(
            all=all, filters={"label": f"io.dockship.service={SERVICE}"})]


def env_inside(fleet, node: dict) -> dict[str, str]:
    """The running container's environment, read by `env` run in it through the engine API."""
    with fleet.engine(node) as client:
        (c,) = client.containers.list(filters={"label": f"io.dockship.service={SERVICE}"})
        exec_id = client.api.exec_create(c.id, ["env"])["Id"]
        out = client.api.exec_start(exec_id).decode()
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def everything_on_the_nodes(fleet) -> str:
    """Every label and name of this module's containers (service, lock, ledger) on every node."""
    text = []
    for node in fleet.nodes:
        with fleet.engine(node) as client:
            for c in client.api.containers(all=True):      # no inspect: others remove theirs
                labels = c.get("Labels") or {}
                mine = {labels.get(f"io.dockship.{k}") for k in
                        ("service", "lock.service", "ledger.service")}
                if SERVICE in mine:
                    text.append(f"{c['Id']} {c.get('State')} " + json.dumps(labels, sort_keys=True))
    return "\n".join(sorted(text))


def test_a_missing_secret_exits_2_and_touches_nothing(fresh):
    write(fresh)
    run(fresh, "roll", "--env", "lab", "--service", SERVICE, "--tag", "1.0.0")
    before = everything_on_the_nodes(fresh)
    assert SERVICE in before
    write(fresh, secrets=["SVCS_NEVER_SET"], secrets_file="absent.env", env={"NEW": "1"})
    for args in (("--dry-run",), ()):
        proc = run(fresh, "roll", "--env", "lab", "--service", SERVICE, *args, "--json",
                   expect=2)
        error = json.loads(proc.stdout)["error"]
        assert "services.svcs.secrets: SVCS_NEVER_SET is not set" in error
        assert "dockship's environment" in error and "environments.lab.secrets_file" in error
    assert everything_on_the_nodes(fresh) == before


def test_a_secret_reaches_the_container_and_nothing_else(fresh, tmp_path):
    from_env, from_file, overridden = _value("env"), _value("file"), _value("file-loses")
    hook_dir = tmp_path / "hooks"
    hook_dir.mkdir()
    hook = tmp_path / "dump-env.sh"
    hook.write_text(f'#!/bin/sh\nenv > "{hook_dir}/$DOCKSHIP_NODE.env"\n')
    hook.chmod(0o755)
    (fresh.config.parent / "lab.env").write_text(
        f"SVCS_FILE_SECRET='{from_file}'\nSVCS_ENV_SECRET={overridden}\n")
    write(fresh, secrets=["SVCS_ENV_SECRET", "SVCS_FILE_SECRET"], secrets_file="lab.env",
          hooks={"post_node": [str(hook)]})
    ci = {"SVCS_ENV_SECRET": from_env}
    values = (from_env, from_file, overridden)

    outputs = [run(fresh, "roll", "--env", "lab", "--service", SERVICE, "--json", env=ci)]
    report = json.loads(outputs[0].stdout)
    assert report["result"] == "succeeded", report
    for node in fresh.nodes:
        inside = env_inside(fresh, node)
        assert inside["SVCS_ENV_SECRET"] == from_env          # dockship's environment wins
        assert inside["SVCS_FILE_SECRET"] == from_file
    outputs += [run(fresh, "roll", "--env", "lab", "--service", SERVICE, "--dry-run", "--json",
                    env=ci),
                run(fresh, "history", "--env", "lab", "--service", SERVICE, "--json"),
                run(fresh, "history", "--env", "lab", "--service", SERVICE),
                run(fresh, "status", "--env", "lab", "--service", SERVICE, "--json"),
                run(fresh, "config", "show", "--json"),
                run(fresh, "config", "show", "--env", "lab")]
    shown = "".join(p.stdout + p.stderr for p in outputs)
    shown += everything_on_the_nodes(fresh)
    shown += "".join(json.dumps(c["Config"]["Labels"]) for n in fresh.nodes
                     for c in containers(fresh, n))
    hooks_saw = "".join(p.read_text() for p in hook_dir.iterdir())
    assert len(list(hook_dir.iterdir())) == len(fresh.nodes)
    for value in values:
        assert value not in shown
        assert value not in hooks_saw
    assert "SVCS_ENV_SECRET" not in hooks_saw
    assert "SVCS_ENV_SECRET" in shown                             # names may be shown


def test_a_changed_setting_rolls_the_same_tag_again(fresh):
    write(fresh, env={"LOG_LEVEL": "info"})
    first = json.loads(run(fresh, "roll", "--env", "lab", "--service", SERVICE, "--tag", "1.0.0",
                           "--json").stdout)
    assert first["result"] == "succeeded"
    ids = {n["name"]: {c["Id"] for c in containers(fresh, n, all=False)} for n in fresh.nodes}

    same = json.loads(run(fresh, "roll", "--env", "lab", "--service", SERVICE, "--tag", "1.0.0",
                          "--json").stdout)
    assert {n["result"] for n in same["nodes"]} == {"unchanged"}

    write(fresh, env={"LOG_LEVEL": "debug"})
    plan = json.loads(run(fresh, "roll", "--env", "lab", "--service", SERVICE, "--tag", "1.0.0",
                          "--dry-run", "--json").stdout)
    steps = [s for b in plan["batches"] for s in b["nodes"]]
    assert {(s["action"], s["why"], tuple(s["changed"])) for s in steps} == {
        ("deploy", "settings", ("env.LOG_LEVEL",))}
    assert "debug" not in json.dumps(plan)

    drift = json.loads(run(fresh, "roll", "--env", "lab", "--service", SERVICE, "--tag", "1.0.0",
                           "--json").stdout)
    assert drift["result"] == "succeeded", drift
    assert {(n["result"], n["from"], n["to"], tuple(n["changed"])) for n in drift["nodes"]} == {
        ("updated", "1.0.0", "1.0.0", ("env.LOG_LEVEL",))}
    for node in fresh.nodes:
        now = {c["Id"] for c in containers(fresh, node, all=False)}
        assert now and now.isdisjoint(ids[node["name"]])          # a new container
        assert env_inside(fresh, node)["LOG_LEVEL"] == "debug"


def test_an_override_changes_one_environment_only_and_probes_its_host_port(fresh, lab):
    write(fresh, env={"LOG_LEVEL": "info"},
          edge={"env": {"LOG_LEVEL": "debug"}, "publish": EDGE_PORT,
                "health": {"timeout": 15}})
    for env in ("lab", "edge"):
        report = json.loads(run(fresh, "roll", "--env", env, "--service", SERVICE, "--tag",
                                "1.0.0", "--json").stdout)
        assert report["result"] == "succeeded", report
    node1, *edge_nodes = fresh.nodes
    assert env_inside(fresh, node1)["LOG_LEVEL"] == "info"
    assert fresh.version_on(node1) == "1.0.0"                      # container port on the host
    for node in edge_nodes:
        assert env_inside(fresh, node)["LOG_LEVEL"] == "debug"
        (c,) = containers(fresh, node, all=False)
        bound = c["HostConfig"]["PortBindings"][f"{PORT}/tcp"]
        assert [b["HostPort"] for b in bound] == [str(EDGE_PORT)]
        import requests
        answer = wait_for(lambda: requests.get(f"http://{node['address']}:{EDGE_PORT}/",
                                               timeout=3).json())
        assert answer["version"] == "1.0.0"
    status = json.loads(run(fresh, "status", "--env", "edge", "--service", SERVICE,
                            "--json").stdout)
    assert {n["health"] for n in status["nodes"]} == {"healthy"}
    again = json.loads(run(fresh, "roll", "--env", "lab", "--service", SERVICE, "--tag", "1.0.0",
                           "--json").stdout)
    assert {n["result"] for n in again["nodes"]} == {"unchanged"}
