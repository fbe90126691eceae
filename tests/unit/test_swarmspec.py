"""The Swarm layout (swarmspec.py) and the Swarm config names (swarmstate.py): pure data."""

from __future__ import annotations

import http.server
import re
import subprocess
import sys
import threading

import pytest
from hypothesis import given, strategies as st

from dockship.config import HealthCheck
from dockship.swarmspec import (container_spec, cursor_label, healthcheck, node_info,
                                previous_label, revision_name, running_task, service_spec,
                                start_problem, stopped)
from dockship.swarmstate import config_name

NAMES = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", fullmatch=True)
SWARM_SERVICE_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")


@given(env=NAMES, service=NAMES, deploy=st.from_regex(r"[0-9a-f]{12}", fullmatch=True))
def test_revision_names_are_valid_swarm_service_names(env, service, deploy):
    name = revision_name(env, service, deploy)
    assert len(name) <= 63 and SWARM_SERVICE_NAME.fullmatch(name)
    assert name.endswith(deploy)


def test_each_deploy_has_its_own_revision():
    assert revision_name("lab", "hello", "aaaa") != revision_name("lab", "hello", "bbbb")
    assert revision_name("lab", "hello", "0123456789ab") == "hello-lab-0123456789ab"


@given(env=NAMES, service=NAMES)
def test_config_names_fit_and_never_collide_across_pairs(env, service):
    name = config_name("lock", env, service)
    assert len(name) <= 64 and re.fullmatch(r"[A-Za-z0-9._-]+", name)
    assert config_name("lock", env, service) == name
    assert config_name("lock", env + "x", service) != name


def test_config_names_with_dashes_cannot_be_confused():
    # "a-b"/"c" and "a"/"b-c" would both read dockship-lock-a-b-c if spelled plainly.
    assert config_name("lock", "a-b", "c") != config_name("lock", "a", "b-c")


def test_node_info_reads_identity_from_labels_then_hostname():
    raw = {"ID": "n1", "Version": {"Index": 7},
           "Spec": {"Labels": {"dockship.name": "node1", "dockship.zone": "a",
                               "dockship.roles": "web, api"}, "Availability": "active"},
           "Description": {"Hostname": "host"}, "Status": {"State": "ready", "Addr": "10.0.0.1"},
           "ManagerStatus": {"Addr": "10.0.0.1:2377"}}
    info = node_info(raw)
    assert (info.name, info.zone, info.roles, info.version) == ("node1", "a", ("web", "api"), 7)
    assert info.ready and info.active and info.manager_addr == "10.0.0.1:2377"
    assert info.runs("web") and not info.runs("db") and info.runs(None)
    bare = node_info({"ID": "n2", "Spec": {"Availability": "drain"},
                      "Description": {"Hostname": "box"}, "Status": {"State": "down"}})
    assert (bare.name, bare.zone, bare.roles) == ("box", None, ())
    assert not bare.ready and not bare.active and bare.runs("web")


def test_a_revision_is_global_host_published_and_follows_the_cursor_label():
    container = container_spec(ref="r/hello@sha256:" + "a" * 64, command=("serve", "--x"),
                               env={"B": "2", "A": "1"}, labels={"k": "v"}, stop_timeout=7,
                               health=healthcheck(HealthCheck(), 8000))
    spec = service_spec(name="hello-lab-abc", env="lab", service="hello", container=container,
                        labels={"k": "v"}, port=8000, host_port=8001, min_healthy=3)
    assert spec["Mode"] == {"Global": {}}
    assert spec["TaskTemplate"]["Placement"]["Constraints"] == [
        f"node.labels.{cursor_label('lab', 'hello')} == hello-lab-abc"]
    assert spec["EndpointSpec"] == {"Mode": "dnsrr", "Ports": [
        {"Protocol": "tcp", "TargetPort": 8000, "PublishedPort": 8001, "PublishMode": "host"}]}
    cs = spec["TaskTemplate"]["ContainerSpec"]
    assert cs["Args"] == ["serve", "--x"] and "Command" not in cs     # CMD, not ENTRYPOINT
    assert cs["Env"] == ["A=1", "B=2"] and cs["Init"] is True
    assert cs["StopGracePeriod"] == 7 * 10 ** 9
    assert spec["UpdateConfig"]["Order"] == "stop-first"
    assert cursor_label("lab", "hello") != previous_label("lab", "hello")


def _task(tid, desired, state, created, err=""):
    return {"ID": tid, "DesiredState": desired, "CreatedAt": created,
            "Status": {"State": state, "Err": err}}


def test_task_states_decide_start_and_stop():
    old = _task("t1", "shutdown", "shutdown", "2026-01-01T00:00:00Z")
    failed = _task("t2", "running", "failed", "2026-01-01T00:00:01Z", "task: non-zero exit (3)")
    up = _task("t3", "running", "running", "2026-01-01T00:00:02Z")
    assert running_task([old, failed]) is None
    assert running_task([old, failed, up]) is up
    assert start_problem([old, failed], "") == "the task failed: task: non-zero exit (3)"
    assert start_problem([old], "") is None
    assert stopped([old, failed]) and not stopped([old, up])
    assert not stopped([_task("t4", "running", "preparing", "2026-01-01T00:00:03Z")])


class _Health(http.server.BaseHTTPRequestHandler):
    answer = 200

    def do_GET(self):  # noqa: N802 - the stdlib's name
        self.send_response(self.answer if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("answer, kind, expected", [(200, "http", 0), (503, "http", 1),
                                                    (503, "tcp", 0)])
def test_the_container_healthcheck_really_probes(answer, kind, expected):
    """The HEALTHCHECK's Python runs as a container would run it, against a real server."""
    handler = type("H", (_Health,), {"answer": answer})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        test = healthcheck(HealthCheck(kind=kind), server.server_port)["Test"]
        assert test[:3] == ["CMD", "python3", "-c"]
        code = subprocess.run([sys.executable, *test[2:]], timeout=30).returncode
        assert code == expected
    finally:
        server.shutdown()


def test_healthcheck_values_travel_as_arguments_never_as_code():
    test = healthcheck(HealthCheck(path="/x'); import os; ('", host="evil\"'"), 8000)["Test"]
    code = test[3]
    assert "evil" not in code and "import os" not in code
    assert "http://127.0.0.1:8000/x'); import os; ('" in test


def test_other_managers_are_dialled_like_the_configured_one():
    from dockship.swarmmanager import manager_url

    assert manager_url("ssh://root@10.0.0.1", "10.0.0.2") == "ssh://root@10.0.0.2"
    assert manager_url("ssh://ops@m1:2222", "10.0.0.3") == "ssh://ops@10.0.0.3:2222"
    assert manager_url("tcp://10.0.0.1:2376", "fd00::2") == "tcp://[fd00::2]:2376"
    assert manager_url("unix:///var/run/docker.sock", "10.0.0.2") is None


def _node(nid, name=None, zone=None, roles=None, state="ready", addr="10.0.0.1", hostname="h"):
    labels = {k: v for k, v in (("dockship.name", name), ("dockship.zone", zone),
                                ("dockship.roles", roles)) if v is not None}
    return {"ID": nid, "Spec": {"Labels": labels, "Availability": "active"},
            "Description": {"Hostname": hostname}, "Status": {"State": state, "Addr": addr}}


def test_usable_nodes_are_ready_by_role_and_in_name_order():
    from dockship.swarmspec import usable_nodes

    raw = [_node("b", "web2", "b", "web"), _node("a", "web1", "a", "web,api"),
           _node("c", "db1", roles="db"), _node("d", "web3", state="down")]
    got = usable_nodes(raw, env="prod", service="hello", role="web")
    assert [(n.name, n.zone) for n in got] == [("web1", "a"), ("web2", "b")]


@pytest.mark.parametrize("bad, says", [
    (_node("x", "-rm", hostname="h"), "bad name"),
    (_node("x", "ok", zone="a b"), "label dockship.zone"),
    (_node("x", "ok", roles="web,\x1b[31m"), "label dockship.roles"),
    (_node("x", "ok", addr="attacker@127.0.0.1:47107"), "address"),
])
def test_a_swarm_node_with_bad_labels_refuses_the_whole_answer_naming_it(bad, says):
    from dockship.errors import ConfigError
    from dockship.swarmspec import usable_nodes

    with pytest.raises(ConfigError) as err:
        usable_nodes([_node("good", "web1"), bad], env="prod", service="hello", role=None)
    assert str(err.value).startswith("environments.prod.swarm: swarm node") and says in str(err.value)
    assert "\x1b" not in str(err.value)


def test_two_swarm_nodes_of_one_name_or_none_at_all_are_refused():
    from dockship.errors import ConfigError, UsageError
    from dockship.swarmspec import usable_nodes

    with pytest.raises(ConfigError, match="two swarm nodes are named 'same'"):
        usable_nodes([_node("a", hostname="same"), _node("b", hostname="same")], env="e",
                     service="s", role=None)
    with pytest.raises(UsageError, match="no ready swarm nodes with role 'web'"):
        usable_nodes([_node("a", "db1", roles="db")], env="e", service="s", role="web")
