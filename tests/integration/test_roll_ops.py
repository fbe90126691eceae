"""Operating rolls on the lab: the lock, Ctrl-C, Chef discovery, `make rollback`, host keys,
status and history, and a node whose engine dies in the middle of a roll.

Every test runs the real CLI in a subprocess against the lab's real engines,
registry, index and Chef server. The module rolls its own service (`svco`,
port 18300, a fresh package per session) and never touches other services'
containers. The tests build on each other in file order (each one starts
from what the previous left on the nodes), and the one that stops a node's
engine comes last.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import dockship
from dockship import configfile
from dockship import lock as lockmod
from dockship.lock import DeployLock, docker_stores, read_lock
from rollkit import make_fleet, wait_for

pytestmark = pytest.mark.lab

ENV = "lab"
SERVICE = "svco"
ROOT = Path(__file__).resolve().parents[2]
LAB_RUN = Path("/run/dockship-lab")

# JSON reports of the rolls this module made, oldest first (checked against `history`).
REPORTS: list[dict] = []


@pytest.fixture(scope="module")
def fleet(lab, run_id, tmp_path_factory):
    return make_fleet(lab, run_id, tmp_path_factory.mktemp("ops"), prefix="o", port=18300,
                      versions={"1.0.0": "ok", "1.1.0": "ok", "1.2.0": "slow:4"})


# -- helpers ---------------------------------------------------------------------------------

def roll_json(fleet, *args: str, config: Path | None = None, expect: int = 0) -> dict:
    """`roll --json` with the module's config (or `config`); the report, remembered for history."""
    cfg = str(config or fleet.config)
    proc = dockship("--config", cfg, "roll", "--env", ENV, "--service", SERVICE, *args, "--json")
    assert proc.returncode == expect, f"exit {proc.returncode}\n{proc.stderr}"
    report = json.loads(proc.stdout)
    REPORTS.append(report)
    return report


def ensure_on(fleet, tag: str) -> None:
    """Every node runs `tag` of this session's image (rolled there if needed)."""
    report = roll_json(fleet, "--tag", tag)
    assert report["result"] == "succeeded", report
    assert set(fleet.versions().values()) == {tag}


def snapshot(fleet) -> dict[str, list[tuple[str, str, str | None]]]:
    """Every container of the service on every node: (id, state, tag); what "unchanged" means."""
    out = {}
    for node in fleet.nodes:
        with fleet.engine(node) as client:
            found = client.api.containers(all=True, filters={"label": f"io.dockship.service={SERVICE}"})
            out[node["name"]] = sorted((c["Id"], c["State"], c["Labels"].get("io.dockship.tag"))
                                       for c in found)
    return out


def running_tags(fleet) -> dict[str, list[str]]:
    return {n["name"]: [c["Config"]["Labels"]["io.dockship.tag"] for c in fleet.running(n)]
            for n in fleet.nodes}


def locks(fleet) -> dict[str, object]:
    out = {}
    for node in fleet.nodes:
        with fleet.engine(node) as client:
            out[node["name"]] = read_lock(client, ENV, SERVICE)
    return out


def one_line(text: str) -> str:
    return " ".join(text.split())


def ssh_peers(pid: int) -> set[str]:
    """Addresses process `pid` holds an established TCP connection to, on port 22."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
        lines = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return set()
    peers = set()
    for line in lines:
        fields = line.split()
        remote, state, inode = fields[2], fields[3], fields[9]
        ip_hex, port_hex = remote.split(":")
        if inode in inodes and state == "01" and int(port_hex, 16) == 22:
            peers.add(socket.inet_ntoa(struct.pack("<I", int(ip_hex, 16))))
    return peers


def fleet_roll(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return dockship("--config", str(config), "roll", "--env", ENV, "--service", SERVICE, *args)


def chef_config(fleet, path: Path, **chef_overrides) -> Path:
    """The module's config with its node list replaced by discovery from the lab's Chef server."""
    chef = {"url": fleet.lab["chef"]["url"], "client": fleet.lab["chef"]["client"],
            "key": fleet.lab["chef"]["key"], "environment": "lab",
            "docker": "ssh://root@{address}", **chef_overrides}
    role = chef.pop("role", "web")
    data = fleet.config_data()
    env = data["environments"]["lab"]
    del env["nodes"]
    env["chef"] = chef
    data["services"][fleet.service]["role"] = role
    return configfile.write(path, data)


# -- 1. the deploy lock ----------------------------------------------------------------------

def test_a_held_deploy_lock_makes_roll_exit_3_naming_the_holder_and_lock_wait_outlasts_it(fleet):
    ensure_on(fleet, "1.0.0")
    clients = sorted(((n["name"], fleet.engine(n)) for n in fleet.nodes), key=lambda e: e[0])
    holder = f"ops-test-holder-{uuid.uuid4().hex[:6]}@lab pid {os.getpid()}"
    lock = DeployLock(docker_stores(clients, ENV, SERVICE), env=ENV, service=SERVICE, tag="9.9.9",
                      deploy_id="opstest" + uuid.uuid4().hex[:8], holder=holder, ttl=600)
    try:
        lock.acquire()
        before = snapshot(fleet)

        proc = fleet.roll("--tag", "1.1.0")
        assert proc.returncode == 3, proc.stderr
        assert holder in one_line(proc.stderr)
        assert "--lock-wait" in proc.stderr
        assert snapshot(fleet) == before
        assert set(fleet.versions().values()) == {"1.0.0"}
        assert all(info is not None and info.info.holder == holder for info in locks(fleet).values())

        # Now wait for it: the holder lets go ~2 s after the roll has connected to every node
        # (so the roll is already waiting on the lock, not merely started late).
        addresses = {n["address"] for n in fleet.nodes}
        cmd = [sys.executable, "-m", "dockship", "--config", str(fleet.config), "roll",
               "--env", ENV, "--service", SERVICE, "--tag", "1.1.0", "--lock-wait", "5", "--json"]
        waiting = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        released: list[str] = []

        def let_go() -> None:
            deadline = time.monotonic() + 120
            while waiting.poll() is None and time.monotonic() < deadline:
                if ssh_peers(waiting.pid) >= addresses:
                    break
                time.sleep(0.05)
            time.sleep(2)
            released.extend(lock.release())
            released.append("done")

        releaser = threading.Thread(target=let_go, daemon=True)
        releaser.start()
        out, err = waiting.communicate(timeout=600)
        releaser.join(timeout=60)
        assert released == ["done"], released
        assert waiting.returncode == 0, err
        report = json.loads(out)
        REPORTS.append(report)
        assert report["result"] == "succeeded"
        assert [n["result"] for n in report["nodes"]] == ["updated"] * 3
        assert set(fleet.versions().values()) == {"1.1.0"}
        assert set(locks(fleet).values()) == {None}
    finally:
        lock.release()
        for _, client in clients:
            client.close()


def test_lock_status_names_the_holder_and_a_forced_release_lets_a_waiting_roll_proceed(fleet):
    ensure_on(fleet, "1.0.0")
    clients = sorted(((n["name"], fleet.engine(n)) for n in fleet.nodes), key=lambda e: e[0])
    holder = f"gone-ci-agent@elsewhere pid {os.getpid()}"
    stuck = DeployLock(docker_stores(clients, ENV, SERVICE), env=ENV, service=SERVICE, tag="9.9.9",
                       deploy_id="stuck" + uuid.uuid4().hex[:8], holder=holder, ttl=1800,
                       message="https://ci.example/job/77")
    cfg = str(fleet.config)
    try:
        stuck.acquire()
        status = dockship("lock", "status", "--env", ENV, "--service", SERVICE, "--config", cfg,
                          "--json")
        assert status.returncode == 0, status.stderr
        [held] = json.loads(status.stdout)["locks"]
        assert (held["locked"], held["holder"], held["deploy_id"], held["tag"], held["message"]) \
            == (True, holder, stuck.info.deploy_id, "9.9.9", "https://ci.example/job/77")
        assert [n["locked"] for n in held["nodes"]] == [True] * 3
        assert "https://ci.example/job/77" in one_line(status.stderr)

        # A live lease of another machine is not released without --force, and stays.
        refused = dockship("--config", cfg, "lock", "release", "--env", ENV, "--service", SERVICE)
        assert refused.returncode == 3 and "--force" in refused.stderr, refused.stderr
        assert all(f is not None and f.info.holder == holder for f in locks(fleet).values())

        cmd = [sys.executable, "-m", "dockship", "--config", cfg, "roll", "--env", ENV,
               "--service", SERVICE, "--tag", "1.1.0", "--lock-wait", "300", "--json"]
        waiting = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        addresses = {n["address"] for n in fleet.nodes}
        wait_for(lambda: waiting.poll() is not None or ssh_peers(waiting.pid) >= addresses,
                 timeout=120, interval=0.05)
        forced = dockship("--config", cfg, "lock", "release", "--env", ENV, "--service", SERVICE,
                          "--force", "--json")
        assert forced.returncode == 0, forced.stderr
        [released] = json.loads(forced.stdout)["released"]
        assert released["released"] and released["failed_nodes"] == []
        out, err = waiting.communicate(timeout=600)
        assert waiting.returncode == 0, err
        report = json.loads(out)
        REPORTS.append(report)
        assert report["result"] == "succeeded"
        assert set(fleet.versions().values()) == {"1.1.0"}
        assert set(locks(fleet).values()) == {None}

        hist = dockship("--config", cfg, "history", "--env", ENV, "--service", SERVICE, "--json")
        records = json.loads(hist.stdout)["records"]
        release_rec = next(r for r in records if r["kind"] == "lock_release")
        assert stuck.info.deploy_id in release_rec["reason"] and "--force" in release_rec["reason"]
        assert holder in release_rec["reason"]
    finally:
        stuck.release()
        for _, client in clients:
            client.close()


def test_a_lock_left_behind_by_a_killed_roll_stops_blocking_once_it_expired(fleet):
    clients = sorted(((n["name"], fleet.engine(n)) for n in fleet.nodes), key=lambda e: e[0])
    killed = DeployLock(docker_stores(clients, ENV, SERVICE), env=ENV, service=SERVICE, tag="9.9.9",
                        deploy_id="killed" + uuid.uuid4().hex[:8],
                        holder="killed-roll@lab pid 1", ttl=1)
    try:
        killed.acquire()   # and never released, as by a roll killed with SIGKILL
        assert all(info is not None and info.info.holder == "killed-roll@lab pid 1"
                   for info in locks(fleet).values())
        time.sleep(1.5)
        report = roll_json(fleet, "--tag", "1.0.0")
        assert report["result"] == "succeeded"
        assert set(fleet.versions().values()) == {"1.0.0"}
        assert set(locks(fleet).values()) == {None}
    finally:
        for _, client in clients:
            client.close()


# -- 3. Ctrl-C -------------------------------------------------------------------------------

def test_sigint_mid_roll_exits_1_puts_every_node_back_and_releases_the_lock(fleet):
    ensure_on(fleet, "1.1.0")
    before = fleet.versions()
    assert set(before.values()) == {"1.1.0"}

    cmd = [sys.executable, "-m", "dockship", "--config", str(fleet.config), "roll",
           "--env", ENV, "--service", SERVICE, "--tag", "1.2.0", "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    node1_updated = threading.Event()
    node2_health = threading.Event()

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            parts = line.split()
            if parts[:2] == ["node1", "updated"]:
                node1_updated.set()
            if parts[:2] == ["node2", "health"] and node1_updated.is_set():
                node2_health.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 300
        while not node2_health.is_set() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert node2_health.is_set(), "".join(lines)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=30)
    stderr = "".join(lines)
    assert code == 1, stderr
    assert "SIGINT" in stderr
    assert proc.stdout is not None
    report = json.loads(proc.stdout.read())
    REPORTS.append(report)
    results = {n["name"]: n["result"] for n in report["nodes"]}
    assert results == {"node1": "rolled_back", "node2": "failed", "node3": "not_reached"}, report
    assert report["result"] == "rolled_back"

    assert running_tags(fleet) == {n["name"]: ["1.1.0"] for n in fleet.nodes}
    assert fleet.versions() == before
    assert set(locks(fleet).values()) == {None}
    # node3's container, made ahead of its turn, went too: it never ran, so nothing is kept
    assert "1.2.0" not in fleet.tags_on(fleet.nodes[2])
    assert not [c for cs in snapshot(fleet).values() for c in cs if c[1] == "created"]


def test_a_roll_killed_outright_leaves_every_node_running_and_the_next_roll_clears_its_leftovers(fleet):
    ensure_on(fleet, "1.0.0")
    cmd = [sys.executable, "-m", "dockship", "--config", str(fleet.config), "roll",
           "--env", ENV, "--service", SERVICE, "--tag", "1.2.0"]   # 1.2.0 takes 4 s to answer
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    node3 = fleet.nodes[2]
    try:
        # killed once node3's container is made (ahead of its turn) and the canary is mid-swap:
        # its new container runs and is being watched for health (1.2.0 takes 4 s to answer)
        wait_for(lambda: "1.2.0" in fleet.tags_on(node3)
                 and running_tags(fleet)["node1"] == ["1.2.0"], timeout=120, interval=0.05)
    finally:
        proc.kill()
        proc.wait()
    assert all(len(fleet.running(n)) == 1 for n in fleet.nodes)   # a container runs everywhere
    assert locks(fleet)["node1"] is not None    # SIGKILL leaves the lock (it expires); its
    # holder was a process of this machine that is gone, so it is released without --force
    released = dockship("--config", str(fleet.config), "lock", "release", "--env", ENV,
                        "--service", SERVICE)
    assert released.returncode == 0, released.stderr
    assert set(locks(fleet).values()) == {None}

    report = roll_json(fleet, "--tag", "1.1.0")
    assert report["result"] == "succeeded", report
    assert set(fleet.versions().values()) == {"1.1.0"}
    for node in fleet.nodes[1:]:   # the never-started 1.2.0 containers are gone
        assert "1.2.0" not in fleet.tags_on(node), node["name"]


# -- 4. Chef discovery -----------------------------------------------------------------------

def test_chef_discovery_plans_every_lab_node_with_its_zone_and_rolls_through_it(fleet, tmp_path):
    config = chef_config(fleet, tmp_path / "chef.toml")
    plan = dockship("--config", str(config), "roll", "--env", ENV, "--service", SERVICE,
                    "--tag", "1.2.0", "--dry-run", "--json")
    assert plan.returncode == 0, plan.stderr
    data = json.loads(plan.stdout)
    nodes = [(n["name"], n["zone"]) for b in data["batches"] for n in b["nodes"]]
    assert nodes == [("node1", "a"), ("node2", "b"), ("node3", "c")]
    assert set(fleet.versions().values()) == {"1.1.0"}   # a dry run touches nothing

    report = roll_json(fleet, "--tag", "1.2.0", config=config)
    assert report["result"] == "succeeded", report
    assert [(n["name"], n["zone"], n["result"]) for n in report["nodes"]] == [
        ("node1", "a", "updated"), ("node2", "b", "updated"), ("node3", "c", "updated")]
    assert set(fleet.versions().values()) == {"1.2.0"}


def test_a_chef_key_that_is_not_a_key_exits_2_with_one_line_naming_the_setting(fleet, tmp_path):
    bad = tmp_path / "not-a-key.pem"
    bad.write_text("this is not a private key\n")
    config = chef_config(fleet, tmp_path / "chef.toml", key=str(bad))
    before = snapshot(fleet)
    proc = fleet_roll(config, "--tag", "1.1.0")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "environments.lab.chef.key" in lines[0] and str(bad) in lines[0]
    assert snapshot(fleet) == before


def test_an_unknown_chef_client_exits_2(fleet, tmp_path):
    config = chef_config(fleet, tmp_path / "chef.toml", client=f"nobody-{uuid.uuid4().hex[:6]}")
    proc = fleet_roll(config, "--tag", "1.1.0")
    assert proc.returncode == 2, proc.stderr
    assert "environments.lab.chef" in proc.stderr


def test_an_unreachable_chef_server_exits_1_naming_its_url(fleet, tmp_path):
    config = chef_config(fleet, tmp_path / "chef.toml", url="http://127.0.0.1:9")
    proc = fleet_roll(config, "--tag", "1.1.0")
    assert proc.returncode == 1, proc.stderr
    assert "http://127.0.0.1:9" in proc.stderr


def test_a_role_that_no_chef_node_has_exits_2_no_nodes(fleet, tmp_path):
    config = chef_config(fleet, tmp_path / "chef.toml", role=f"norole{uuid.uuid4().hex[:6]}")
    proc = fleet_roll(config, "--tag", "1.1.0")
    assert proc.returncode == 2, proc.stderr
    assert "no nodes" in proc.stderr


# -- 5. make rollback ------------------------------------------------------------------------

def _make(*args: str, config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TAG", "ENV", "SERVICE", "MAKEFLAGS")}
    env["DOCKSHIP_CONFIG"] = str(config)
    return subprocess.run(["make", "-C", str(ROOT), *args], capture_output=True, text=True,
                          env=env, timeout=900, stdin=subprocess.DEVNULL)


def test_make_rollback_rolls_the_given_tag_and_without_tag_prints_usage_and_exits_2(fleet):
    proc = _make("rollback", "TAG=1.0.0", f"ENV={ENV}", f"SERVICE={SERVICE}", config=fleet.config)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert running_tags(fleet) == {n["name"]: ["1.0.0"] for n in fleet.nodes}
    assert set(fleet.versions().values()) == {"1.0.0"}

    before = snapshot(fleet)
    proc = _make("rollback", config=fleet.config)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert re.search(r"(?m)^usage: make rollback TAG=", proc.stderr), proc.stderr
    assert snapshot(fleet) == before


# -- 6. SSH host keys ------------------------------------------------------------------------

def test_an_empty_known_hosts_file_refuses_the_nodes_exits_2_and_changes_nothing(fleet, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")
    data = fleet.config_data()
    data["environments"]["lab"]["ssh"]["known_hosts"] = known
    config = configfile.write(tmp_path / "strict.toml", data)
    before = snapshot(fleet)
    proc = fleet_roll(config, "--tag", "1.1.0")
    assert proc.returncode == 2, proc.stderr
    message = one_line(proc.stderr)
    assert str(known) in message
    assert re.search(r"not in|unknown", message), message
    assert "ssh-keyscan" in message and fleet.nodes[0]["address"] in message
    assert snapshot(fleet) == before
    assert set(fleet.versions().values()) == {"1.0.0"}


# -- 8. status and history -------------------------------------------------------------------

def test_status_json_shows_each_nodes_tag_digest_health_and_retained_tags(fleet):
    proc = dockship("--config", str(fleet.config), "status", "--env", ENV, "--service", SERVICE,
                    "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["service"] == SERVICE and data["tags"] == ["1.0.0"] and data["split"] is False
    assert [n["name"] for n in data["nodes"]] == [n["name"] for n in fleet.nodes]
    for n in data["nodes"]:
        assert n["tag"] == "1.0.0", n
        assert n["digest"] == fleet.digests["1.0.0"], n
        assert n["health"] == "healthy", n
        assert n["zone"] in ("a", "b", "c")
        # newest first: what it ran just before `make rollback` is the first one kept, and
        # no more old containers are kept than the service's `retain` (default 3)
        assert n["retained"] and n["retained"][0] == "1.2.0", n
        assert len(n["retained"]) <= 3, n


def test_versions_lists_the_registry_tags_newest_first_and_where_each_runs(fleet):
    proc = dockship("--config", str(fleet.config), "versions", SERVICE, "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["repository"].endswith("/" + fleet.image)
    assert [v["tag"] for v in data["versions"]] == ["1.2.0", "1.1.0", "1.0.0"]
    running = {v["tag"]: sorted(p["node"] for p in v["running"]) for v in data["versions"]}
    on = fleet.versions()
    assert running == {t: sorted(n for n, v in on.items() if v == t) for t in running}
    assert data["unread"] == []


def test_history_json_lists_this_modules_rolls_newest_first_with_per_node_outcomes(fleet):
    proc = dockship("--config", str(fleet.config), "history", "--env", ENV, "--service", SERVICE,
                    "--json")
    assert proc.returncode == 0, proc.stderr
    records = json.loads(proc.stdout)["records"]
    ours = {r["deploy_id"]: r for r in REPORTS}
    seen = [r for r in records if r["deploy_id"] in ours]
    assert [r["deploy_id"] for r in seen] == [r["deploy_id"] for r in reversed(REPORTS)]
    starts = [r["started_at"] for r in records]
    assert starts == sorted(starts, reverse=True)
    for rec in seen:
        report = ours[rec["deploy_id"]]
        assert (rec["env"], rec["service"], rec["kind"]) == (ENV, SERVICE, "roll")
        assert rec["result"] == report["result"] and rec["tag"] == report["tag"]
        assert [(n["name"], n["from"], n["to"], n["result"]) for n in rec["nodes"]] == [
            (n["name"], n["from"], n["to"], n["result"]) for n in report["nodes"]]
    assert {"succeeded", "rolled_back"} <= {r["result"] for r in seen}
    interrupted = next(r for r in seen if r["result"] == "rolled_back")
    assert {n["name"]: (n["from"], n["to"], n["result"]) for n in interrupted["nodes"]} == {
        "node1": ("1.1.0", "1.2.0", "rolled_back"), "node2": ("1.1.0", "1.2.0", "failed"),
        "node3": ("1.1.0", "1.2.0", "not_reached")}
    # `make rollback` (no --json here) is recorded too, as the newest roll of the service
    newest = records[0]
    assert newest["deploy_id"] not in ours and newest["tag"] == "1.0.0"
    assert newest["result"] == "succeeded"
    assert {n["to"] for n in newest["nodes"]} == {"1.0.0"}


# -- 6a. logs and exec ----------------------------------------------------------------------

def test_logs_prints_each_nodes_container_output_named_by_node(fleet):
    ensure_on(fleet, "1.0.0")
    on = fleet.versions()
    proc = dockship("--config", str(fleet.config), "logs", "--env", ENV, "--service", SERVICE,
                    "--tail", "50")
    assert proc.returncode == 0, proc.stderr
    for node, tag in on.items():
        assert f"{node} | hello-svc {tag} listening on :{fleet.port}" in proc.stdout, proc.stdout
    one = dockship("--config", str(fleet.config), "logs", "--env", ENV, "--service", SERVICE,
                   "--node", "node2", "--json")
    lines = json.loads(one.stdout)["lines"]
    assert lines and {line["node"] for line in lines} == {"node2"}
    bad = dockship("--config", str(fleet.config), "logs", "--env", ENV, "--node", "node9",
                   "--service", SERVICE)
    assert bad.returncode == 2 and "node1, node2, node3" in bad.stderr


def test_logs_follow_prints_new_lines_as_they_come(fleet):
    import urllib.request

    ensure_on(fleet, "1.0.0")
    cmd = [sys.executable, "-m", "dockship", "--config", str(fleet.config), "logs", "--env", ENV,
           "--service", SERVICE, "--node", "node1", "--tail", "0", "-f"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    marker = f"/follow-{uuid.uuid4().hex[:8]}"
    seen: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            seen.append(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        address = fleet.nodes[0]["address"]

        def requested() -> bool:
            try:
                urllib.request.urlopen(f"http://{address}:{fleet.port}{marker}", timeout=5)
            except OSError:
                pass    # a 404 is what we want: the server logs the request line
            return any(marker in line for line in seen)
        wait_for(requested, timeout=60, interval=0.5)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert any(line.startswith("node1 | ") and marker in line for line in seen)


def test_exec_runs_an_argv_in_each_nodes_container_and_reports_each_exit_code(fleet):
    ensure_on(fleet, "1.0.0")
    proc = dockship("--config", str(fleet.config), "exec", "--env", ENV, "--service", SERVICE,
                    "--json", "--", "sh", "-c", 'echo "tag=$0"; exit 0', "; rm -rf /nothing")
    assert proc.returncode == 0, proc.stderr
    nodes = json.loads(proc.stdout)["nodes"]
    assert [(n["name"], n["exit_code"], n["stdout"]) for n in nodes] == [
        (n["name"], 0, "tag=; rm -rf /nothing\n") for n in fleet.nodes]   # an argv, never a shell line
    failing = dockship("--config", str(fleet.config), "exec", "--env", ENV, "--service", SERVICE,
                       "--node", "node3", "--", "sh", "-c", "echo oops >&2; exit 5")
    assert failing.returncode == 1
    assert "node3 | oops" in failing.stderr and "exit 5" in failing.stderr


# -- 6b. the lease lost mid-roll --------------------------------------------------------------

TAKE_OVER_HOOK = r"""
import sys, time
import docker
node, sock, name, marker = sys.argv[1:5]
import os
if os.environ.get("DOCKSHIP_NODE") != node:
    sys.exit(0)
client = docker.DockerClient(base_url=f"unix://{sock}", version="1.41", timeout=10)
client.api.remove_container(name, force=True)      # as a takeover does, by another deployment
open(marker, "w").write("removed")
time.sleep(4)                                       # the holder's next renewals find it gone
"""


def test_a_lease_lost_mid_roll_stops_the_roll_puts_nodes_back_and_is_in_history(fleet, tmp_path):
    ensure_on(fleet, "1.0.0")
    hook = tmp_path / "take_over.py"
    hook.write_text(TAKE_OVER_HOOK)
    marker = tmp_path / "lock-removed"
    config = fleet.write_config(tmp_path / "lease.toml", hooks={
        "pre_node": [sys.executable, str(hook), "node2", str(LAB_RUN / "node1" / "docker.sock"),
                     lockmod.lock_name(ENV, SERVICE), str(marker)]})
    proc = dockship("--config", str(config), "roll", "--env", ENV, "--service", SERVICE,
                    "--tag", "1.1.0", "--lock-ttl", "3", "--json")
    assert marker.exists(), proc.stderr
    assert proc.returncode == 1, proc.stderr
    report = json.loads(proc.stdout)
    shown = json.dumps(report, indent=1)
    assert report["result"] == "rolled_back", shown
    assert "deploy lock" in report["reason"] and "lost on node1" in report["reason"], shown
    assert {n["name"]: n["result"] for n in report["nodes"]}["node3"] == "not_reached", shown
    assert set(fleet.versions().values()) == {"1.0.0"}
    hist = dockship("--config", str(config), "history", "--env", ENV, "--service", SERVICE,
                    "--json")
    record = next(r for r in json.loads(hist.stdout)["records"]
                  if r["deploy_id"] == report["deploy_id"])
    assert record["result"] == "rolled_back" and "lost on node1" in record["reason"]
    assert set(locks(fleet).values()) == {None}    # what was still ours was given back


# -- 7. a node's engine dies mid-roll (last: it restarts a lab engine) -----------------------

STOP_ENGINE_HOOK = r'''
import os, signal, socket, sys, time

if os.environ.get("DOCKSHIP_NODE") != "node3":
    sys.exit(0)
run_dir, marker = sys.argv[1], sys.argv[2]
with open(os.path.join(run_dir, "dockerd.pid")) as f:
    pid = int(f.read().strip())
os.kill(pid, signal.SIGTERM)


def answers() -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        s.connect(os.path.join(run_dir, "docker.sock"))
        s.sendall(b"GET /_ping HTTP/1.0\r\n\r\n")
        return s.recv(16).startswith(b"HTTP/")
    except OSError:
        return False
    finally:
        s.close()


def alive() -> bool:
    # dockerd keeps serving connections it already has while it shuts down, so
    # "stopped" means the process is gone (a zombie counts as gone).
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


deadline = time.monotonic() + 120
while answers() or alive():
    if time.monotonic() > deadline:
        sys.exit("node3's engine is still up 120 s after SIGTERM")
    time.sleep(0.2)
with open(marker, "w") as f:
    f.write(str(pid))
'''


def test_a_node_whose_engine_stops_mid_roll_fails_the_roll_and_the_others_are_put_back(
        fleet, tmp_path):
    import dockship_lab as lab_mod

    hook = tmp_path / "stop_engine.py"
    hook.write_text(STOP_ENGINE_HOOK)
    marker = tmp_path / "engine-stopped"
    config = fleet.write_config(tmp_path / "hooked.toml", hooks={
        "pre_node": [sys.executable, str(hook), str(LAB_RUN / "node3"), str(marker)]})
    node3 = next(n for n in fleet.nodes if n["name"] == "node3")
    ensure_on(fleet, "1.0.0")
    assert set(locks(fleet).values()) == {None}
    try:
        proc = dockship("--config", str(config), "roll", "--env", ENV, "--service", SERVICE,
                        "--tag", "1.1.0", "--json")
        assert marker.exists(), proc.stderr   # the hook really stopped node3's engine
        # node3 could not be put back (its engine is gone): exit 4, and the report names it.
        assert proc.returncode == 4, proc.stderr
        assert proc.stdout.strip(), f"no JSON report on stdout; stderr:\n{proc.stderr}"
        report = json.loads(proc.stdout)
        nodes = {n["name"]: n for n in report["nodes"]}
        shown = json.dumps(report, indent=1)
        assert report["failed_node"] == "node3", shown
        assert nodes["node3"]["result"] == "broken", shown
        assert re.search(r"unreachable", nodes["node3"].get("reason", ""), re.I), shown
        assert re.search(r"unreachable", report.get("reason", ""), re.I), shown
        assert nodes["node1"]["result"] == "rolled_back", shown
        assert nodes["node2"]["result"] == "rolled_back", shown
        for n in fleet.nodes[:2]:
            assert fleet.version_on(n) == "1.0.0"
            assert [c["Config"]["Labels"]["io.dockship.tag"] for c in fleet.running(n)] == ["1.0.0"]
    finally:
        lab_mod.up(nodes=3)
        # The failed roll could not give its lock back on the stopped engine (there was none
        # before it, and svco is this module's alone); left there it would block rolls of
        # svco for its whole TTL, so the test removes it.
        with fleet.engine(node3) as client:
            left = read_lock(client, ENV, SERVICE)
            if left is not None and left.info is not None and left.info.tag == "1.1.0":
                client.api.remove_container(lockmod.lock_name(ENV, SERVICE), force=True)
    wait_for(lambda: len(fleet.running(node3)) == 1, timeout=180, interval=1)
    assert [c["Config"]["Labels"]["io.dockship.tag"] for c in fleet.running(node3)] == ["1.0.0"]
    assert wait_for(lambda: fleet.version_on(node3), timeout=60, interval=0.5) == "1.0.0"
