"""DeployLock and the state image against a real Docker engine.

Runs on the build engine (/var/run/docker.sock). Each test uses its own
environment/service names, so runs never see each other's locks, and removes
its containers afterwards. Where a second engine is needed, the lab's node
engines are used (the `node_engines` fixture brings the lab up); the all-or-nothing
path against an unreachable node uses a socket path nothing listens on.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import docker
import docker.errors
import pytest
from conftest import remove_containers

from dockship import stateimage
from dockship.errors import LockHeld, Unreachable
from dockship.lock import DeployLock, LockInfo, LockLost, lock_name, read_lock

pytestmark = pytest.mark.lab

T0 = datetime(2026, 5, 7, 12, 1, 2, tzinfo=timezone.utc)


def fixed(t: datetime):
    return lambda: t


@pytest.fixture(scope="module")
def engine(build_engine) -> docker.DockerClient:
    return build_engine


def _cleanup(clients, env: str) -> None:
    remove_containers(clients, label=f"io.dockship.lock.env={env}")
    remove_containers(clients, name=f"dockship-lock-{env}-")


@pytest.fixture
def names(engine):
    env = "t" + uuid.uuid4().hex[:10]
    yield env, "hello"
    _cleanup([engine], env)


def lock(engines, env, service="hello", *, deploy="d-" + "a" * 30, tag="1.4.0", holder=None,
         **kw) -> DeployLock:
    return DeployLock(engines, env=env, service=service, tag=tag, deploy_id=deploy,
                      holder=holder or f"tester@box pid {deploy[-4:]}", **kw)


def unreachable_engine(tmp_path: Path) -> docker.DockerClient:
    # A fixed API version: docker-py would otherwise ask the (absent) engine at construction.
    return docker.DockerClient(base_url=f"unix://{tmp_path}/nothing-listens.sock", version="1.41",
                               timeout=5)


# --- what the design rests on -------------------------------------------------------

def test_state_image_is_empty_labelled_and_reused(engine):
    first = stateimage.ensure_state_image(engine)
    again = stateimage.ensure_state_image(engine)
    assert first == again
    image = engine.api.inspect_image(stateimage.STATE_IMAGE)
    assert image["Size"] == 0
    assert image["Config"]["Labels"][stateimage.STATE_LABEL] == "1"


def test_created_state_container_stores_files_and_its_name_is_taken_atomically(engine):
    name = f"dockship-probe-{uuid.uuid4().hex[:10]}"
    results: list[str] = []

    def contend(i: int) -> None:
        client = docker.from_env()   # one client per thread, like separate processes
        try:
            stateimage.create_state_container(client, name, "probe", {"i": str(i)})
            results.append("won")
        except docker.errors.APIError as exc:
            results.append(str(exc.status_code))

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(10)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == ["409"] * 9 + ["won"]
        container = engine.api.inspect_container(name)
        assert container["State"]["Status"] == "created"      # never started
        assert container["Config"]["Labels"][stateimage.STATE_LABEL] == "1"  # from the image
        stateimage.put_files(engine, container["Id"], {"/dockship/x/a.json": b"1",
                                                       "/dockship/x/b.json": b"2"})
        stateimage.put_files(engine, container["Id"], {"/dockship/x/b.json": b"22"})
        assert stateimage.get_files(engine, container["Id"], "/dockship/x") == {
            "a.json": b"1", "b.json": b"22"}
        assert stateimage.get_files(engine, container["Id"], "/dockship/none") is None
    finally:
        engine.api.remove_container(name, force=True)


# --- acquire / release ---------------------------------------------------------------

def test_acquire_puts_a_labelled_lock_on_the_engine_and_release_removes_it(engine, names):
    env, service = names
    dl = lock([("node1", engine)], env, clock=fixed(T0), ttl=600)
    dl.acquire()
    assert dl.held
    info = read_lock(engine, env, service)
    assert info == LockInfo(env=env, service=service, holder=dl.holder, deploy_id=dl.deploy_id,
                            tag="1.4.0", acquired_at=T0, expires_at=T0 + timedelta(seconds=600))
    container = engine.api.inspect_container(lock_name(env, service))
    assert container["Config"]["Labels"]["io.dockship.lock.holder"] == dl.holder
    assert dl.release() == []
    assert read_lock(engine, env, service) is None
    assert not dl.held


def test_context_manager_releases_even_when_the_body_fails(engine, names):
    env, service = names
    with pytest.raises(RuntimeError):
        with lock([("node1", engine)], env) as dl:
            assert read_lock(engine, env, service) is not None
            raise RuntimeError("roll blew up")
    assert dl.release_failed == []
    assert read_lock(engine, env, service) is None


def test_second_deployment_gets_lockheld_naming_the_holder(engine, names):
    env, service = names
    now = datetime.now(timezone.utc)
    holder = lock([("node1", engine)], env, deploy="4f2a9c1b77d04e0f8a2b", tag="1.4.0",
                  holder="alice@ci-7 pid 1234", ttl=1800).acquire()
    other = lock([("node1", engine)], env, deploy="b" * 20)
    with pytest.raises(LockHeld) as caught:
        other.acquire()
    err = caught.value
    assert err.exit_code == 3
    assert err.info.deploy_id == "4f2a9c1b77d04e0f8a2b" and err.node == "node1"
    message = str(err)
    assert "\n" not in message
    assert message.startswith(f"environment '{env}' service 'hello' is locked by "
                              f"alice@ci-7 pid 1234 since {now:%H}:")
    assert "(deploy 4f2a9c1b77d0..., tag 1.4.0), expires in 29m" in message \
        or "(deploy 4f2a9c1b77d0..., tag 1.4.0), expires in 30m" in message
    assert message.endswith("retry later, pass --lock-wait SECONDS, or wait for it to expire")
    assert not other.held
    holder.release()


def test_reacquiring_with_the_same_deploy_id_is_a_no_op(engine, names):
    env, service = names
    first = lock([("node1", engine)], env).acquire()
    again = lock([("node1", engine)], env).acquire()   # e.g. a retried step of the same deploy
    assert again.held
    assert again.release() == []
    assert read_lock(engine, env, service) is None
    assert first.release() == []


def test_release_never_removes_someone_elses_lock(engine, names):
    env, service = names
    alice = lock([("node1", engine)], env, deploy="alice-deploy").acquire()
    bob = lock([("node1", engine)], env, deploy="bob-deploy")
    with pytest.raises(LockHeld):
        bob.acquire()
    assert bob.release() == []
    assert read_lock(engine, env, service).deploy_id == "alice-deploy"
    # Even when bob believes he holds it on that node, release goes by container id.
    bob._held["node1"] = "0" * 64
    bob._touched.add("node1")
    assert bob.release() == []
    assert read_lock(engine, env, service).deploy_id == "alice-deploy"
    alice.release()


# --- waiting ---------------------------------------------------------------------------

def test_wait_succeeds_when_the_holder_releases_during_the_wait(engine, names):
    env, service = names
    holder = lock([("node1", engine)], env, deploy="first").acquire()
    timer = threading.Timer(1.5, holder.release)
    timer.start()
    start = time.monotonic()
    try:
        waiter = lock([("node1", engine)], env, deploy="second", wait=20, poll=0.3).acquire()
    finally:
        timer.join()
    waited = time.monotonic() - start
    assert 1.4 < waited < 10
    assert read_lock(engine, env, service).deploy_id == "second"
    waiter.release()


def test_wait_gives_up_at_the_deadline(engine, names):
    env, _ = names
    holder = lock([("node1", engine)], env, deploy="first").acquire()
    start = time.monotonic()
    with pytest.raises(LockHeld, match=r"\(waited 1s\); retry later, pass a longer --lock-wait"):
        lock([("node1", engine)], env, deploy="second", wait=1.2, poll=0.3).acquire()
    assert 1.1 < time.monotonic() - start < 5
    holder.release()


# --- expiry ----------------------------------------------------------------------------

def test_an_expired_lock_is_taken_over_and_its_old_holder_cannot_remove_the_new_one(engine, names):
    env, service = names
    crashed = lock([("node1", engine)], env, deploy="crashed", ttl=60,
                   clock=fixed(T0 - timedelta(hours=2))).acquire()
    old_id = crashed._held["node1"]
    taker = lock([("node1", engine)], env, deploy="taker", clock=fixed(T0)).acquire()
    assert read_lock(engine, env, service).deploy_id == "taker"
    assert stateimage.inspect(engine, old_id) is None
    # The crashed holder comes back: its release must not touch the new lock...
    assert crashed.release() == []
    assert read_lock(engine, env, service).deploy_id == "taker"
    taker.release()


def test_expired_lock_race_has_exactly_one_winner(engine, names):
    env, service = names
    lock([("node1", engine)], env, deploy="crashed", ttl=60,
         clock=fixed(T0 - timedelta(hours=2))).acquire()
    outcomes: dict[str, object] = {}
    barrier = threading.Barrier(6)

    def contend(i: int) -> None:
        client = docker.from_env()
        dl = lock([("node1", client)], env, deploy=f"contender-{i}", clock=fixed(T0))
        barrier.wait()
        try:
            dl.acquire()
            outcomes[dl.deploy_id] = "won"
        except LockHeld as exc:
            outcomes[dl.deploy_id] = exc

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [d for d, o in outcomes.items() if o == "won"]
    assert len(outcomes) == 6 and len(winners) == 1, outcomes
    assert read_lock(engine, env, service).deploy_id == winners[0]
    for d, o in outcomes.items():
        if o != "won":
            assert o.info.deploy_id == winners[0], f"{d} was told {o}"
    assert len(engine.api.containers(all=True, filters={"name": lock_name(env, service)})) == 1


def test_refresh_extends_the_lease_so_the_lock_is_not_taken_over(engine, names):
    env, service = names
    now = [T0]
    dl = lock([("node1", engine)], env, deploy="long-roll", ttl=60, clock=lambda: now[0]).acquire()
    now[0] = T0 + timedelta(seconds=50)
    assert dl.refresh() == []
    assert read_lock(engine, env, service).expires_at == T0 + timedelta(seconds=110)
    assert dl.info.expires_at == T0 + timedelta(seconds=110)
    # Past the label's expiry but within the lease: still held.
    with pytest.raises(LockHeld, match="expires in 30s"):
        lock([("node1", engine)], env, deploy="other", clock=fixed(T0 + timedelta(seconds=80))
             ).acquire()
    assert dl.refresh_if_due() == []   # not due yet: no engine call, nothing changes
    dl.release()


def test_refresh_after_a_takeover_raises_locklost(engine, names):
    env, _ = names
    late = lock([("node1", engine)], env, deploy="late", ttl=60,
                clock=fixed(T0 - timedelta(hours=1))).acquire()
    taker = lock([("node1", engine)], env, deploy="taker", clock=fixed(T0)).acquire()
    with pytest.raises(LockLost, match=r"lost on node1: .*; it is now held by "
                                      r"tester@box pid aker \(deploy taker, tag 1.4.0\)$"):
        late.refresh()
    assert not late.held
    taker.release()


def test_a_foreign_container_under_the_lock_name_blocks_with_advice(engine, names):
    env, service = names
    cid = stateimage.create_state_container(engine, lock_name(env, service), "lock", {})
    with pytest.raises(LockHeld, match=rf"not a dockship lock .* `docker rm {cid[:12]}`$"):
        lock([("node1", engine)], env).acquire()


# --- several engines -------------------------------------------------------------------

def test_unreachable_node_fails_acquire_and_gives_back_what_was_taken(engine, names, tmp_path):
    env, service = names
    engines = [("zz-down", unreachable_engine(tmp_path)), ("aa-up", engine)]  # sorted: aa-up first
    dl = lock(engines, env)
    with pytest.raises(Unreachable, match="node zz-down: engine unreachable"):
        dl.acquire()
    assert read_lock(engine, env, service) is None
    assert not dl.held
    # The down node could not be checked: release reports it instead of raising.
    assert dl.release_failed == ["zz-down"]
    assert dl.release() == ["zz-down"]


@pytest.fixture
def two_nodes(names, node_engines):
    nodes = node_engines
    yield nodes[:2]
    _cleanup([c for _, c in nodes[:2]], names[0])


def test_conflict_on_a_later_node_gives_back_the_earlier_ones(names, two_nodes):
    env, service = names
    (n1, c1), (n2, c2) = two_nodes
    other = lock([(n2, c2)], env, deploy="holds-node2").acquire()
    mine = lock(two_nodes, env, deploy="wants-both")
    with pytest.raises(LockHeld) as caught:
        mine.acquire()
    assert caught.value.node == n2
    assert read_lock(c1, env, service) is None          # node1 given back
    assert read_lock(c2, env, service).deploy_id == "holds-node2"
    other.release()
    mine.acquire()
    assert read_lock(c1, env, service).deploy_id == read_lock(c2, env, service).deploy_id \
        == "wants-both"
    assert mine.release() == []


def test_two_deployments_over_overlapping_nodes_never_both_hold(names, two_nodes):
    env, _ = names
    for round in range(5):
        outcomes: dict[str, object] = {}
        barrier = threading.Barrier(2)

        def deploy(name: str, order) -> None:
            dl = lock(order, env, deploy=name)
            barrier.wait()
            try:
                outcomes[name] = dl.acquire()
            except Exception as exc:  # anything but LockHeld fails the assertion below
                outcomes[name] = exc

        # Given in opposite orders: DeployLock sorts them, so they meet at the first node.
        threads = [threading.Thread(target=deploy, args=(f"a{round}", two_nodes)),
                   threading.Thread(target=deploy, args=(f"b{round}", list(reversed(two_nodes))))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        winners = [o for o in outcomes.values() if isinstance(o, DeployLock)]
        losers = [o for o in outcomes.values() if isinstance(o, LockHeld)]
        assert len(winners) == 1 and len(losers) == 1, outcomes
        assert winners[0].held
        assert winners[0].release() == []


def test_many_contenders_for_a_free_lock_exactly_one_wins(engine, names):
    env, service = names
    outcomes: dict[str, object] = {}
    barrier = threading.Barrier(8)

    def contend(i: int) -> None:
        dl = lock([("node1", docker.from_env())], env, deploy=f"c{i}")
        barrier.wait()
        try:
            outcomes[dl.deploy_id] = dl.acquire()
        except Exception as exc:
            outcomes[dl.deploy_id] = exc

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [d for d, o in outcomes.items() if isinstance(o, DeployLock)]
    assert len(winners) == 1, outcomes
    assert all(isinstance(o, LockHeld) for d, o in outcomes.items() if d not in winners), outcomes
    assert read_lock(engine, env, service).deploy_id == winners[0]


def test_work_under_the_lock_runs_on_every_node_while_it_is_held_there(names, two_nodes):
    # prepare: right after a node is taken; finish: just before it is given back (the roll
    # readies and writes its history ledger this way). Both see the lock in place.
    env, service = names
    seen: dict[str, list[str]] = {"prepare": [], "finish": []}

    def under_lock(phase: str):
        def work(node: str, client) -> None:
            assert read_lock(client, env, service).deploy_id == "with-work"
            seen[phase].append(node)
        return work

    dl = lock(two_nodes, env, deploy="with-work")
    dl.prepare, dl.finish = under_lock("prepare"), under_lock("finish")
    with dl:
        assert sorted(seen["prepare"]) == sorted(n for n, _ in two_nodes)
        assert seen["finish"] == []
    assert sorted(seen["finish"]) == sorted(n for n, _ in two_nodes)
    assert dl.release_failed == [] and dl.finish_failed == []
    assert all(read_lock(c, env, service) is None for _, c in two_nodes)


def test_failing_work_under_the_lock_is_listed_and_the_lock_is_still_given_back(names, two_nodes):
    env, service = names
    (n1, c1), (n2, c2) = two_nodes

    def finish(node: str, client) -> None:
        if node == n2:
            raise RuntimeError("disk full")

    dl = lock(two_nodes, env, deploy="failing-work")
    dl.prepare = lambda node, client: 1 / 0      # best effort: never costs the lock
    dl.finish = finish
    with dl:
        assert dl.held
    assert dl.finish_failed == [n2] and dl.release_failed == []
    assert read_lock(c1, env, service) is None and read_lock(c2, env, service) is None
