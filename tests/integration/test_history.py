"""Deploy history: the record format (pure) and the ledgers on a real Docker engine.

Engine tests run on the build engine, with their own environment names, and
remove their ledgers afterwards. "Several nodes" that each keep their own
ledger are the build engine plus the lab's node engines when they answer;
the build engine alone still covers everything but that.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import docker
import pytest
from conftest import remove_containers

from dockship import history, stateimage
from dockship.errors import Unreachable
from dockship.history import HistoryRecord, Kind
from dockship.report import NodeOutcome, NodeResult, Result

T0 = datetime(2026, 5, 7, 12, 0, 0, tzinfo=timezone.utc)
lab = pytest.mark.lab


def rec(n: int, *, env: str = "stage", service: str = "hello", result: str = "succeeded",
        deploy_id: str | None = None, finished_late: float = 0, nodes=None) -> HistoryRecord:
    started = T0 + timedelta(minutes=n)
    return HistoryRecord(
        deploy_id=deploy_id or f"deploy-{n:04d}", kind="roll", env=env, service=service,
        user="alice@ci-7", started_at=started,
        finished_at=started + timedelta(seconds=42 + finished_late),
        tag=f"1.{n}.0", digest=f"sha256:{n:064x}", result=result,
        reason=None if result == "succeeded" else "node2: health check timed out after 30s",
        nodes=nodes if nodes is not None else (
            NodeOutcome("node1", "a", f"1.{n - 1}.0", f"1.{n}.0", NodeResult.UPDATED, 12.5),
            NodeOutcome("node2", None, None, f"1.{n}.0", NodeResult.UPDATED, 11.25)))


def record(engines, r: HistoryRecord, *, keep: int = history.DEFAULT_KEEP) -> list[str]:
    """Write r into the ledger of every engine, as a roll does under its lock; failed nodes."""
    ledger = history.Ledger(r.env, r.service, keep=keep)
    failed = []
    for node, client in engines:
        try:
            ledger.append(node, client, r)
        except Exception:  # noqa: BLE001 - an engine that does not answer
            failed.append(node)
    return failed


# --- the record (no engine) -----------------------------------------------------------

def test_json_round_trip_with_the_roll_report_node_keys():
    r = rec(3, result="rolled_back")
    data = r.to_json()
    assert data["nodes"][0] == {"name": "node1", "zone": "a", "from": "1.2.0", "to": "1.3.0",
                                "result": "updated", "seconds": 12.5}
    assert data["kind"] == "roll" and data["result"] == "rolled_back"
    assert data["started_at"] == "2026-05-07T12:03:00.000000Z" and data["duration"] == 42
    assert HistoryRecord.from_json(json.loads(json.dumps(data))) == r
    assert r.kind is Kind.ROLL and r.result is Result.ROLLED_BACK
    assert r.duration == 42.0


@pytest.mark.parametrize("change", [
    {"kind": "deploy"}, {"result": "ok"}, {"started_at": "2026-05-07T12:03:00"},
    {"nodes": [{"name": "n1"}]}, {"deploy_id": 7}, {"nodes": "node1"}])
def test_from_json_refuses_what_is_not_a_record(change):
    with pytest.raises(ValueError):
        HistoryRecord.from_json(rec(1).to_json() | change)


def test_unknown_keys_from_a_newer_writer_are_ignored():
    assert HistoryRecord.from_json(rec(1).to_json() | {"schema": 2, "extra": [1]}) == rec(1)


def test_file_names_sort_in_start_order_and_are_safe():
    names = [rec(n).file_name for n in (10, 2, 1000)]
    assert sorted(names) == [rec(2).file_name, rec(10).file_name, rec(1000).file_name]
    assert rec(1, deploy_id="a/../b c").file_name == "20260507T120100.000000Z-a_.._b_c.json"


def test_merge_keeps_one_per_deploy_newest_first_and_the_later_finished_copy():
    partial = rec(2, nodes=())
    whole = rec(2, finished_late=5)
    merged = history.merge([rec(1), partial, rec(3), whole, rec(1)])
    assert [r.deploy_id for r in merged] == ["deploy-0003", "deploy-0002", "deploy-0001"]
    assert merged[1] == whole


# --- ledgers on the engine ----------------------------------------------------------

@pytest.fixture(scope="module")
def engine(build_engine) -> docker.DockerClient:
    return build_engine


def _cleanup(clients, env: str) -> None:
    remove_containers(clients, label=f"io.dockship.ledger.env={env}")


@pytest.fixture
def env(engine):
    name = "t" + uuid.uuid4().hex[:10]
    yield name
    _cleanup([engine], name)


def ledger_by_hand(client, name: str, env: str, *records: HistoryRecord) -> str:
    """A ledger container written directly, as another node, an older dockship or a
    rotation cut short leaves one; its id."""
    cid = stateimage.create_state_container(
        client, name, "ledger", {"io.dockship.ledger.env": env, "io.dockship.ledger.service": "hello"})
    for r in records:
        stateimage.put_files(client, cid, {f"{history.HISTORY_DIR}/{r.file_name}":
                                           json.dumps(r.to_json()).encode()})
    return cid


def ledgers(client, env, service="hello"):
    return client.api.containers(all=True, filters={"label": [
        f"io.dockship.ledger.env={env}", f"io.dockship.ledger.service={service}"]})


@lab
def test_record_then_read_round_trips_newest_first(engine, env):
    nodes = [("node1", engine)]
    for n in (1, 3, 2):
        assert record(nodes, rec(n, env=env)) == []
    got = history.read(nodes, env, "hello")
    assert got == [rec(3, env=env), rec(2, env=env), rec(1, env=env)]
    found = ledgers(engine, env)
    assert [c["Names"] for c in found] == [[f"/dockship-ledger-{env}-hello-n3"]]  # its count
    assert found[0]["State"] == "created"
    files = stateimage.get_files(engine, found[0]["Id"], history.HISTORY_DIR)
    assert sorted(files) == sorted(rec(n, env=env).file_name for n in (1, 2, 3))


@lab
def test_recording_the_same_deploy_again_replaces_it(engine, env):
    nodes = [("node1", engine)]
    record(nodes, rec(1, env=env, result="failed"))
    record(nodes, rec(1, env=env, result="succeeded"))
    assert [r.result for r in history.read(nodes, env)] == [Result.SUCCEEDED]


@lab
def test_service_filter_and_all_services(engine, env):
    nodes = [("node1", engine)]
    record(nodes, rec(1, env=env, service="hello"))
    record(nodes, rec(2, env=env, service="billing"))
    record(nodes, rec(3, env=env + "x", service="hello"))  # another env: never seen
    try:
        assert [r.deploy_id for r in history.read(nodes, env, "hello")] == ["deploy-0001"]
        assert [r.deploy_id for r in history.read(nodes, env, "billing")] == ["deploy-0002"]
        assert [r.deploy_id for r in history.read(nodes, env)] == ["deploy-0002", "deploy-0001"]
        assert history.read(nodes, env, "nothing") == []
    finally:
        _cleanup([engine], env + "x")


@lab
def test_read_unions_ledgers_across_nodes_by_deploy_id(engine, env):
    # Two ledgers for the same env/service, as two nodes (or an interrupted
    # rotation) leave them: one by record(), one written by hand.
    nodes = [("node1", engine)]
    record(nodes, rec(1, env=env))
    record(nodes, rec(2, env=env))
    other = ledger_by_hand(engine, f"dockship-ledger-{env}-hello-elsewhere", env,
                           rec(2, env=env), rec(3, env=env))
    stateimage.put_files(engine, other, {f"{history.HISTORY_DIR}/junk.json": b"{not json"})
    got = history.read_all(nodes, env, "hello")
    assert [r.deploy_id for r in got.records] == ["deploy-0003", "deploy-0002", "deploy-0001"]
    assert got.unreadable == ("node1:junk.json",) and got.failed == ()


@lab
def test_read_skips_an_unreachable_node_and_says_so(engine, env, tmp_path: Path):
    down = docker.DockerClient(base_url=f"unix://{tmp_path}/none.sock", version="1.41", timeout=5)
    record([("node1", engine)], rec(1, env=env))
    got = history.read_all([("node1", engine), ("node2", down)], env)
    assert [r.deploy_id for r in got.records] == ["deploy-0001"] and got.failed == ("node2",)
    assert record([("node1", engine), ("node2", down)], rec(2, env=env)) == ["node2"]
    with pytest.raises(Unreachable, match="no node of environment .* answered"):
        history.read([("node2", down)], env)


@lab
def test_ledger_is_pruned_to_the_newest_records_by_rotation(engine, env):
    nodes = [("node1", engine)]
    for n in range(1, 6):                       # keep=4 tolerates 5 before rotating
        record(nodes, rec(n, env=env), keep=4)
    first = ledgers(engine, env)
    assert len(first) == 1
    assert len(history.read(nodes, env)) == 5
    record(nodes, rec(6, env=env), keep=4)
    after = ledgers(engine, env)
    assert len(after) == 1 and after[0]["Id"] != first[0]["Id"]
    assert after[0]["Names"] == [f"/dockship-ledger-{env}-hello-n4"]
    assert [r.deploy_id for r in history.read(nodes, env)] == [
        "deploy-0006", "deploy-0005", "deploy-0004", "deploy-0003"]
    record(nodes, rec(7, env=env), keep=4)   # back to normal appends
    assert ledgers(engine, env)[0]["Id"] == after[0]["Id"]
    assert ledgers(engine, env)[0]["Names"] == [f"/dockship-ledger-{env}-hello-n5"]


@lab
def test_a_ledger_without_a_count_in_its_name_is_folded_into_a_counted_one(engine, env):
    nodes = [("node1", engine)]
    ledger_by_hand(engine, f"dockship-ledger-{env}-hello", env, rec(1, env=env))   # no count
    record(nodes, rec(2, env=env))
    (only,) = ledgers(engine, env)
    assert only["Names"] == [f"/dockship-ledger-{env}-hello-n2"]
    assert [r.deploy_id for r in history.read(nodes, env)] == ["deploy-0002", "deploy-0001"]


@lab
def test_rotation_folds_leftover_ledgers_back_into_one(engine, env):
    nodes = [("node1", engine)]
    record(nodes, rec(1, env=env))
    ledger_by_hand(engine, f"dockship-ledger-{env}-hello-r0000dead", env,  # a cut-short rotation
                   rec(0, env=env))
    record(nodes, rec(2, env=env))
    assert len(ledgers(engine, env)) == 1
    assert [r.deploy_id for r in history.read(nodes, env)] == [
        "deploy-0002", "deploy-0001", "deploy-0000"]


@lab
def test_concurrent_first_records_share_one_ledger(engine, env):
    import threading
    errors: list[list[str]] = []
    barrier = threading.Barrier(4)

    def write(n: int) -> None:
        client = docker.from_env()
        barrier.wait()
        errors.append(record([("node1", client)], rec(n, env=env)))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(1, 5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [[]] * 4
    assert len(ledgers(engine, env)) == 1
    assert len(history.read([("node1", engine)], env)) == 4


@lab
def test_history_is_whole_when_each_node_saw_only_some_deploys(env, node_engines):
    nodes = node_engines[:2]
    try:
        record(nodes[:1], rec(1, env=env))
        record(nodes[1:], rec(2, env=env))
        record(nodes, rec(3, env=env))
        assert [r.deploy_id for r in history.read(nodes, env, "hello")] == [
            "deploy-0003", "deploy-0002", "deploy-0001"]
    finally:
        _cleanup([c for _, c in nodes], env)
