"""The deploy lock as a lease (design §9), on in-memory engines with their own clocks.

Time on a node is the fake engine's clock, moved by the test; the lease
keeper's clock is a number the test sets. Nothing here waits on the wall
clock except the keeper's thread, which runs with tiny periods and is
awaited on Events with generous timeouts.
"""

from __future__ import annotations

import inspect
import threading
import time
from datetime import timedelta
from unittest import mock

import pytest
from fakelock import FakeLockStore, stores
from hypothesis import given, settings, strategies as st

from dockship import lock as lock_mod
from dockship.errors import LockHeld, Unreachable
from dockship.halt import Halt, Halted
from dockship.lock import DeployLock, LeaseKeeper, LockInfo, LockLost
from dockship.times import utc_now

TTL = 1800.0
WAIT = 10.0   # generous: how long a test waits for the keeper's thread before failing


def deploy_lock(nodes, deploy="deploy-alice", holder="alice@ci-7 pid 1", tag="1.4.0",
                message="", ttl=TTL, **kw) -> DeployLock:
    return DeployLock(nodes, env="stage", service="hello", tag=tag, deploy_id=deploy, ttl=ttl,
                      holder=holder, message=message, **kw)


def contender(nodes, **kw) -> DeployLock:
    return deploy_lock(nodes, **{"deploy": "deploy-bob", "holder": "bob@ci-9 pid 2",
                                 "tag": "1.5.0", "message": "ci job 77", **kw})


def holders(nodes) -> dict[str, str | None]:
    return {n.node: n.holder.deploy_id if n.holder else None for n in nodes}


def advance(nodes, seconds: float) -> None:
    for n in nodes:
        n.advance(seconds)


def other_info(deploy="deploy-carol") -> LockInfo:
    return LockInfo("stage", "hello", "carol@laptop pid 3", deploy, "1.3.0", utc_now(), TTL)


# -- take: all nodes or none -----------------------------------------------------------------

def test_acquire_takes_the_lock_on_every_node():
    nodes = stores("node1", "node2", "node3")
    dl = deploy_lock(nodes).acquire()
    assert holders(nodes) == {f"node{i}": "deploy-alice" for i in (1, 2, 3)}
    assert dl.held == {n.node: n.container_id for n in nodes}
    assert dl.release() == []
    assert holders(nodes) == {f"node{i}": None for i in (1, 2, 3)}


def test_a_conflict_on_a_later_node_gives_back_the_earlier_ones():
    nodes = stores("node1", "node2", "node3")
    theirs = nodes[2].plant(other_info())
    with pytest.raises(LockHeld) as caught:
        deploy_lock(nodes).acquire()
    assert caught.value.node == "node3"
    assert holders(nodes) == {"node1": None, "node2": None, "node3": "deploy-carol"}
    assert nodes[2].container_id == theirs


def test_an_engine_that_does_not_answer_fails_the_take_and_gives_back_the_others():
    nodes = stores("node1", "node2", "node3")
    nodes[1].down = True
    with pytest.raises(Unreachable, match="node2"):
        deploy_lock(nodes).acquire()
    assert holders([nodes[0], nodes[2]]) == {"node1": None, "node3": None}


def test_reacquiring_with_the_same_deploy_id_keeps_the_same_containers():
    nodes = stores("node1", "node2")
    first = dict(deploy_lock(nodes).acquire().held)
    again = deploy_lock(nodes).acquire()
    assert again.held == first


# -- a second deployment ---------------------------------------------------------------------

def test_a_second_deployment_gets_lockheld_naming_holder_deploy_tag_and_message():
    nodes = stores("node1", "node2")
    deploy_lock(nodes, message="https://ci.test/job/42").acquire()
    advance(nodes, 120)
    with pytest.raises(LockHeld) as caught:
        contender(nodes).acquire()
    text = str(caught.value)
    assert caught.value.exit_code == 3
    assert caught.value.node == "node1"          # contenders meet at the first node
    for part in ("environment 'stage' service 'hello'", "alice@ci-7 pid 1",
                 "deploy deploy-alice", "tag 1.4.0", "https://ci.test/job/42",
                 "expires in 28m unless renewed", "--lock-wait"):
        assert part in text, (part, text)
    assert holders(nodes) == {"node1": "deploy-alice", "node2": "deploy-alice"}


def test_a_container_under_the_lock_name_that_is_not_a_lock_blocks_with_advice():
    nodes = stores("node1")
    nodes[0].plant_labels({"something": "else"}, idle=10 ** 6)
    with pytest.raises(LockHeld, match="not a dockship lock.*docker rm"):
        deploy_lock(nodes).acquire()
    assert nodes[0].box is not None               # never removed, however old


# -- expiry is the node engine's business ----------------------------------------------------

def test_there_is_no_contender_clock_in_the_api():
    assert list(inspect.signature(DeployLock.acquire).parameters) == ["self", "on_taken", "halt"]
    assert not {"now", "clock"} & set(inspect.signature(DeployLock).parameters)


def test_a_contender_whose_clock_is_31_minutes_ahead_cannot_take_a_live_lock():
    nodes = stores("node1", "node2", node2=-7 * 86400)   # engines disagree too
    holder = deploy_lock(nodes).acquire()
    ids = dict(holder.held)
    advance(nodes, 29 * 60)                              # renewed 29 minutes ago
    ahead = lambda: utc_now() + timedelta(minutes=31)    # noqa: E731
    with mock.patch.object(lock_mod, "utc_now", ahead):
        with pytest.raises(LockHeld, match="expires in 1m unless renewed"):
            contender(nodes).acquire()
    assert holder.renew() == []
    assert {n.node: n.container_id for n in nodes} == ids


@settings(max_examples=30, deadline=None)
@given(gaps=st.lists(st.integers(0, int(TTL * 1000) - 1).map(lambda ms: ms / 1000),
                     min_size=1, max_size=5),   # milliseconds: exact enough on any engine clock
       engine_clocks=st.tuples(st.integers(-10 ** 9, 10 ** 9), st.integers(-10 ** 9, 10 ** 9)),
       skew=st.integers(-10 ** 6, 10 ** 6))
def test_a_lock_renewed_within_its_ttl_is_never_taken_over(gaps, engine_clocks, skew):
    nodes = [FakeLockStore("node1", clock=engine_clocks[0]),
             FakeLockStore("node2", clock=engine_clocks[1])]
    holder = deploy_lock(nodes).acquire()
    ids = dict(holder.held)
    skewed = lambda: utc_now() + timedelta(seconds=skew)   # noqa: E731
    for gap in gaps:
        advance(nodes, gap)
        with mock.patch.object(lock_mod, "utc_now", skewed):
            with pytest.raises(LockHeld):
                contender(nodes).acquire()
        assert holder.renew() == []
    assert {n.node: n.container_id for n in nodes} == ids


def test_a_lock_not_renewed_for_its_ttl_is_taken_over_and_its_holder_learns_who_has_it():
    nodes = stores("node1", "node2", node2=123456.0)
    crashed = deploy_lock(nodes, ttl=60).acquire()
    advance(nodes, 60)                                   # a whole TTL on the nodes' clocks
    newcomer = contender(nodes).acquire()
    assert holders(nodes) == {"node1": "deploy-bob", "node2": "deploy-bob"}
    with pytest.raises(LockLost) as caught:
        crashed.renew()
    text = str(caught.value)
    assert "lost on node1, node2" in text
    assert "now held by bob@ci-9 pid 2 (deploy deploy-bob, tag 1.5.0)" in text
    assert caught.value.exit_code == 1
    ran = []
    assert crashed.release(before=ran.append) == []
    assert ran == []                                     # nothing of ours is held any more
    assert {n.node: n.container_id for n in nodes} == newcomer.held


def test_a_lock_just_short_of_its_ttl_on_one_node_is_not_taken_anywhere():
    nodes = stores("node1", "node2")
    deploy_lock(nodes, ttl=60).acquire()
    nodes[0].advance(60)
    nodes[1].advance(59.9)
    with pytest.raises(LockHeld) as caught:
        contender(nodes).acquire()
    assert caught.value.node == "node2"
    assert holders(nodes) == {"node1": None, "node2": "deploy-alice"}   # node1 was expired


def test_a_renewal_between_the_contenders_look_and_its_removal_saves_the_lock():
    nodes = stores("node1", "node2")
    holder = deploy_lock(nodes, ttl=60).acquire()
    ids = dict(holder.held)
    advance(nodes, 61)
    nodes[0].after_read(holder.renew)      # lands right after the contender saw it expired
    with pytest.raises(LockHeld):
        contender(nodes).acquire()
    assert "remove" not in nodes[0].verbs()
    assert holder.renew() == []
    assert {n.node: n.container_id for n in nodes} == ids


def test_of_two_contenders_for_an_expired_lock_the_late_remover_removes_nothing():
    nodes = stores("node1")
    deploy_lock(nodes, ttl=60).acquire()
    advance(nodes, 60)
    first = contender(nodes, deploy="d-first")
    # the other contender removes the expired lock and takes it just before our removal
    second = contender(nodes, deploy="d-second")
    nodes[0].before_remove(lambda: second.acquire())
    with pytest.raises(LockHeld, match="deploy d-second"):
        first.acquire()
    assert holders(nodes) == {"node1": "d-second"}


# -- the lease keeper ------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_keeper_renews_every_third_of_the_ttl_and_gives_up_at_half_by_default():
    keeper = LeaseKeeper(deploy_lock(stores("node1")).acquire(), on_lost=print)
    assert (keeper.every, keeper.give_up) == (TTL / 3, TTL / 2)


def test_the_keeper_renews_every_node_every_round():
    nodes = stores("node1", "node2", node2=5e8)
    lost: list[str] = []
    keeper = LeaseKeeper(deploy_lock(nodes).acquire(), on_lost=lost.append, clock=Clock())
    for _ in range(3):
        advance(nodes, 600)
        assert keeper.renew_once() is True
        assert [n.read().idle for n in nodes] == [0, 0]
    assert [n.box.renewals for n in nodes] == [3, 3]
    assert lost == [] and keeper.lost is None


def test_the_keepers_thread_renews_until_stopped():
    nodes = stores("node1", "node2")
    dl = deploy_lock(nodes).acquire()
    renewed = threading.Event()
    real = nodes[1].renew

    def renew(cid):
        real(cid)
        if nodes[1].box.renewals >= 3:
            renewed.set()
    nodes[1].renew = renew
    lost: list[str] = []
    with LeaseKeeper(dl, on_lost=lost.append, every=0.005, give_up=WAIT):
        assert renewed.wait(WAIT)
    count = nodes[0].verbs().count("renew")
    time.sleep(0.03)
    assert nodes[0].verbs().count("renew") == count      # stopped on exit
    assert lost == []


def test_a_takeover_calls_on_lost_once_with_the_reason_and_the_keeper_stops():
    nodes = stores("node1", "node2")
    dl = deploy_lock(nodes, ttl=60).acquire()
    advance(nodes, 60)
    contender(nodes).acquire()
    lost: list[str] = []
    tripped = threading.Event()

    def on_lost(reason):
        lost.append(reason)
        tripped.set()
    with LeaseKeeper(dl, on_lost=on_lost, every=0.005, give_up=WAIT) as keeper:
        assert tripped.wait(WAIT)
        count = nodes[0].verbs().count("renew")
        time.sleep(0.03)
        assert nodes[0].verbs().count("renew") == count  # no renewal after the loss
    assert len(lost) == 1
    assert "lost on node1, node2" in lost[0] and "bob@ci-9 pid 2" in lost[0]
    assert keeper.lost == lost[0]
    assert holders(nodes) == {"node1": "deploy-bob", "node2": "deploy-bob"}


def test_a_takeover_seen_by_one_round_is_reported_by_renew_once():
    nodes = stores("node1")
    dl = deploy_lock(nodes, ttl=60).acquire()
    lost: list[str] = []
    keeper = LeaseKeeper(dl, on_lost=lost.append, clock=Clock())
    advance(nodes, 60)
    contender(nodes).acquire()
    assert keeper.renew_once() is False
    assert len(lost) == 1 and "lost on node1" in lost[0]


def test_an_engine_silent_for_give_up_seconds_trips_on_lost():
    nodes = stores("node1", "node2")
    clock = Clock()
    lost: list[str] = []
    keeper = LeaseKeeper(deploy_lock(nodes).acquire(), on_lost=lost.append, clock=clock)
    nodes[1].down = True
    for t in (300, 600):
        clock.now = t
        assert keeper.renew_once() is True
    clock.now = 900                                       # TTL/2 without a renewal on node2
    assert keeper.renew_once() is False
    assert len(lost) == 1
    assert lost[0] == ("the deploy lock could not be renewed on node2 for 15m (its engine did "
                       "not answer); stopping before another deployment may take it over")
    assert nodes[0].box.renewals == 3                     # node1 kept being renewed meanwhile


def test_transient_failures_shorter_than_give_up_do_not_trip():
    nodes = stores("node1", "node2")
    clock = Clock()
    lost: list[str] = []
    keeper = LeaseKeeper(deploy_lock(nodes).acquire(), on_lost=lost.append, clock=clock)
    for t in range(300, 3600, 300):
        clock.now = t
        nodes[1].down = t % 900 != 0                      # answers only every third round
        assert keeper.renew_once() is True
    nodes[0].fail("renew", times=2)
    for t in (3600, 3900, 4200):
        clock.now = t
        nodes[1].down = False
        assert keeper.renew_once() is True
    assert lost == [] and keeper.lost is None


def test_a_renewal_that_raises_outright_counts_as_failed_everywhere():
    nodes = stores("node1", "node2")
    dl = deploy_lock(nodes).acquire()
    clock = Clock()
    lost: list[str] = []
    keeper = LeaseKeeper(dl, on_lost=lost.append, clock=clock, give_up=100)
    with mock.patch.object(dl, "renew", side_effect=RuntimeError("thread pool gone")):
        clock.now = 50
        assert keeper.renew_once() is True
        clock.now = 100
        assert keeper.renew_once() is False
    assert "node1, node2" in lost[0] and "thread pool gone" in lost[0]


# -- release and work under the lock ---------------------------------------------------------

def _lose_node2(nodes, dl) -> str:
    """Someone takes node2's lock from under dl (its container replaced)."""
    nodes[1].box = None
    theirs = nodes[1].plant(other_info())
    with pytest.raises(LockLost):
        dl.renew()
    return theirs


def test_release_runs_before_only_on_nodes_still_held_and_leaves_others_locks():
    nodes = stores("node1", "node2", "node3")
    dl = deploy_lock(nodes).acquire()
    theirs = _lose_node2(nodes, dl)
    ran: list[tuple[str, str | None]] = []
    assert dl.release(before=lambda n: ran.append((n, nodes[int(n[-1]) - 1].container_id))) == []
    assert sorted(n for n, _ in ran) == ["node1", "node3"]
    assert all(cid is not None for _, cid in ran)        # ran while the lock was still there
    assert holders(nodes) == {"node1": None, "node2": "deploy-carol", "node3": None}
    assert nodes[1].container_id == theirs


def test_release_never_raises_and_returns_the_nodes_where_removal_failed():
    nodes = stores("node1", "node2", "node3")
    dl = deploy_lock(nodes).acquire()

    def before(node):
        raise RuntimeError(f"history on {node} failed")
    nodes[2].fail("remove")
    nodes[1].down = True
    assert sorted(dl.release(before=before)) == ["node2", "node3"]
    assert holders([nodes[0]]) == {"node1": None}
    nodes[1].down = False
    assert dl.release() == []                            # what failed is tried again
    assert holders(nodes) == {f"node{i}": None for i in (1, 2, 3)}


def test_on_taken_runs_on_each_node_taken_and_its_failures_do_not_break_acquire():
    nodes = stores("node1", "node2", "node3")
    seen: list[tuple[str, str | None]] = []
    guard = threading.Lock()

    def on_taken(node):
        with guard:
            seen.append((node, nodes[int(node[-1]) - 1].holder.deploy_id))
        if node == "node2":
            raise RuntimeError("pruning failed")
    dl = deploy_lock(nodes).acquire(on_taken=on_taken)
    assert sorted(seen) == [(f"node{i}", "deploy-alice") for i in (1, 2, 3)]
    assert seen[0][0] == "node1"
    assert sorted(dl.held) == ["node1", "node2", "node3"]


# -- a signal while waiting for a busy lock --------------------------------------------------

def test_a_halt_while_waiting_for_a_busy_lock_ends_the_wait_holding_nothing():
    nodes = stores("node1", "node2")
    deploy_lock(nodes).acquire()
    halt = Halt()
    threading.Timer(0.2, halt.trip, args=("interrupted by SIGTERM",), kwargs={"signum": 15}).start()
    waiting = contender(nodes, wait=3600.0)
    with pytest.raises(Halted, match="interrupted by SIGTERM while waiting for the deploy lock") as e:
        waiting.acquire(halt=halt)
    assert e.value.exit_code == 143
    assert waiting.held == {} and holders(nodes) == {"node1": "deploy-alice", "node2": "deploy-alice"}


def test_a_halt_before_the_lock_is_taken_takes_nothing():
    nodes = stores("node1")
    halt = Halt()
    halt.trip("interrupted by SIGINT", signum=2)
    with pytest.raises(Halted) as e:
        deploy_lock(nodes).acquire(halt=halt)
    assert e.value.exit_code == 130 and holders(nodes) == {"node1": None}
