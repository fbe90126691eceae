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
from pathlib import Path

import docker
import docker.errors
import pytest
from conftest import remove_containers

from dockship import stateimage
from dockship.errors import LockHeld, Unreachable
from dockship.lock import DeployLock, LeaseKeeper, LockLost, docker_stores, lock_name, read_lock

pytestmark = pytest.mark.lab


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
    return DeployLock(docker_stores(engines, env, service), env=env, service=service, tag=tag,
                      deploy_id=deploy, holder=holder or f"tester@box pid {deploy[-4:]}", **kw)


def holder_of(client, env, service="hello") -> str | None:
    found = read_lock(client, env, service)
    return found.info.deploy_id if found is not None else None


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


def test_the_engine_stamps_each_renewal_with_its_own_clock(engine, names):
    env, service = names
    dl = lock([("node1", engine)], env, ttl=600).acquire()
    first = read_lock(engine, env, service)
    time.sleep(1.0)
    aged = read_lock(engine, env, service)
    assert aged.idle > first.idle            # idle grows on the engine's clock...
    dl.renew()
    renewed = read_lock(engine, env, service)
    assert renewed.idle < aged.idle          # ...and a renewal, stamped by the engine, resets it
    assert not renewed.expired
    dl.release()


# --- acquire / release ---------------------------------------------------------------

def test_acquire_puts_a_labelled_lock_on_the_engine_and_release_removes_it(engine, names):
    env, service = names
    dl = lock([("node1", engine)], env, ttl=600, message="https://ci.example/job/7")
    dl.acquire()
    assert dl.held == {"node1": read_lock(engine, env, service).container_id}
    found = read_lock(engine, env, service)
    assert found.info == dl.info and found.info.ttl == 600
    container = engine.api.inspect_container(lock_name(env, service))
    labels = container["Config"]["Labels"]
    assert labels["io.dockship.lock.holder"] == dl.info.holder
    assert labels["io.dockship.lock.message"] == "https://ci.example/job/7"
    assert dl.release() == []
    assert read_lock(engine, env, service) is None
    assert not dl.held


def test_second_deployment_gets_lockheld_naming_the_holder_and_its_message(engine, names):
    env, service = names
    holder = lock([("node1", engine)], env, deploy="4f2a9c1b77d04e0f8a2b", tag="1.4.0",
                  holder="alice@ci-7 pid 1234", ttl=1800, message="ci job 42").acquire()
    other = lock([("node1", engine)], env, deploy="b" * 20)
    with pytest.raises(LockHeld) as caught:
        other.acquire()
    err = caught.value
    assert err.exit_code == 3
    assert err.found.info.deploy_id == "4f2a9c1b77d04e0f8a2b" and err.node == "node1"
    message = str(err)
    assert "\n" not in message
    assert message.startswith(f"environment '{env}' service 'hello' is locked by "
                              "alice@ci-7 pid 1234 since ")
    assert "(deploy 4f2a9c1b77d0..., tag 1.4.0, ci job 42), expires in " in message
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
    assert holder_of(engine, env) == "alice-deploy"
    # Even when bob believes he holds it on that node, release goes by container id.
    bob.held["node1"] = "0" * 64
    bob._touched.add("node1")
    assert bob.release() == []
    assert holder_of(engine, env) == "alice-deploy"
    alice.release()


# --- waiting ---------------------------------------------------------------------------

def test_wait_succeeds_when_the_holder_releases_during_the_wait(engine, names):
    env, service = names
    holder = lock([("node1", engine)], env, deploy="first").acquire()
    timer = threading.Timer(1.0, holder.release)
    timer.start()
    try:
        waiter = lock([("node1", engine)], env, deploy="second", wait=60,
                      poll_every=0.3).acquire()
    finally:
        timer.join()
    assert holder_of(engine, env) == "second"
    waiter.release()


def test_wait_gives_up_at_the_deadline_and_says_how_long_it_waited(engine, names):
    env, _ = names
    holder = lock([("node1", engine)], env, deploy="first").acquire()
    with pytest.raises(LockHeld, match=r"\(waited 1s\); retry later, pass a longer --lock-wait"):
        lock([("node1", engine)], env, deploy="second", wait=1.2, poll_every=0.3).acquire()
    holder.release()


# --- the lease ---------------------------------------------------------------------------

def test_a_lease_not_renewed_for_its_ttl_is_taken_over_and_its_old_holder_learns_it(engine, names):
    env, service = names
    crashed = lock([("node1", engine)], env, deploy="crashed", ttl=1).acquire()
    old_id = crashed.held["node1"]
    with pytest.raises(LockHeld):   # not yet: the node's clock has not seen a whole TTL
        lock([("node1", engine)], env, deploy="taker").acquire()
    time.sleep(1.3)
    taker = lock([("node1", engine)], env, deploy="taker").acquire()
    assert holder_of(engine, env) == "taker"
    assert stateimage.inspect(engine, old_id) is None
    with pytest.raises(LockLost, match=r"lost on node1: .*; it is now held by "
                                       r"tester@box pid aker \(deploy taker, tag 1.4.0\)$"):
        crashed.renew()
    assert not crashed.held
    assert crashed.release() == []     # and its release must not touch the new lock
    assert holder_of(engine, env) == "taker"
    taker.release()


def test_a_lease_kept_renewed_is_never_taken_over(engine, names):
    env, _ = names
    long_roll = lock([("node1", engine)], env, deploy="long-roll", ttl=1.5).acquire()
    lost: list[str] = []
    with LeaseKeeper(long_roll, on_lost=lost.append, every=0.3):
        for _ in range(4):              # well past the TTL, on the node's own clock
            time.sleep(0.5)
            with pytest.raises(LockHeld):
                lock([("node1", engine)], env, deploy="other").acquire()
    assert lost == [] and holder_of(engine, env) == "long-roll"
    long_roll.release()


def test_expired_lock_race_has_exactly_one_winner(engine, names):
    env, service = names
    lock([("node1", engine)], env, deploy="crashed", ttl=1).acquire()
    time.sleep(1.3)
    outcomes: dict[str, object] = {}
    barrier = threading.Barrier(6)

    def contend(i: int) -> None:
        client = docker.from_env()
        dl = lock([("node1", client)], env, deploy=f"contender-{i}")
        barrier.wait()
        try:
            dl.acquire()
            outcomes[dl.info.deploy_id] = "won"
        except LockHeld as exc:
            outcomes[dl.info.deploy_id] = exc

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [d for d, o in outcomes.items() if o == "won"]
    assert len(outcomes) == 6 and len(winners) == 1, outcomes
    assert holder_of(engine, env) == winners[0]
    for d, o in outcomes.items():
        if o != "won" and o.found is not None:
            assert o.found.info.deploy_id == winners[0], f"{d} was told {o}"
    assert len(engine.api.containers(all=True, filters={"name": lock_name(env, service)})) == 1


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
    assert holder_of(c2, env) == "holds-node2"
    other.release()
    mine.acquire()
    assert holder_of(c1, env) == holder_of(c2, env) == "wants-both"
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
            outcomes[dl.info.deploy_id] = dl.acquire()
        except Exception as exc:
            outcomes[dl.info.deploy_id] = exc

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [d for d, o in outcomes.items() if isinstance(o, DeployLock)]
    assert len(winners) == 1, outcomes
    assert all(isinstance(o, LockHeld) for d, o in outcomes.items() if d not in winners), outcomes
    assert holder_of(engine, env) == winners[0]


def test_work_under_the_lock_runs_on_every_node_while_it_is_held_there(names, two_nodes):
    # on_taken: right after a node is taken; before: just before it is given back (the roll
    # readies and writes its history ledger this way). Both see the lock in place.
    env, service = names
    clients = dict(two_nodes)
    seen: dict[str, list[str]] = {"taken": [], "before": []}

    def under_lock(phase: str):
        def work(node: str) -> None:
            assert holder_of(clients[node], env) == "with-work"
            seen[phase].append(node)
        return work

    dl = lock(two_nodes, env, deploy="with-work")
    dl.acquire(on_taken=under_lock("taken"))
    assert sorted(seen["taken"]) == sorted(clients) and seen["before"] == []
    assert dl.release(before=under_lock("before")) == []
    assert sorted(seen["before"]) == sorted(clients)
    assert all(read_lock(c, env, service) is None for c in clients.values())


def test_failing_work_under_the_lock_never_costs_the_lock_or_its_release(names, two_nodes):
    env, service = names
    (n1, c1), (n2, c2) = two_nodes

    def before(node: str) -> None:
        if node == n2:
            raise RuntimeError("disk full")

    dl = lock(two_nodes, env, deploy="failing-work")
    dl.acquire(on_taken=lambda node: 1 / 0)      # best effort: never costs the lock
    assert dl.held
    assert dl.release(before=before) == []
    assert read_lock(c1, env, service) is None and read_lock(c2, env, service) is None
