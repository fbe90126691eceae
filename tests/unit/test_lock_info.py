"""LockInfo labels, Found.describe, times, state container names: pure, no engine."""

from __future__ import annotations

import itertools
import re
from datetime import datetime, timedelta, timezone

import pytest
from fakelock import stores

from dockship.lock import DeployLock, Found, LockInfo, lock_name
from dockship.stateimage import state_name
from dockship.times import format_time, human_duration, parse_time

T0 = datetime(2026, 5, 7, 12, 1, 2, 345678, tzinfo=timezone.utc)
INFO = LockInfo(env="stage", service="hello", holder="alice@ci-7 pid 1234",
                deploy_id="4f2a9c1b77d04e0f8a2b", tag="1.4.0", acquired_at=T0, ttl=1800,
                message="https://ci.test/job/42")
P = "io.dockship.lock."


def test_labels_round_trip_exactly_with_microseconds_message_and_ttl():
    labels = INFO.to_labels()
    assert labels[P + "acquired_at"] == "2026-05-07T12:01:02.345678Z"
    assert labels[P + "holder"] == "alice@ci-7 pid 1234"
    assert labels[P + "ttl"] == "1800"
    assert labels[P + "message"] == "https://ci.test/job/42"
    assert set(labels) == {P + k for k in ("env", "service", "holder", "deploy_id", "tag",
                                           "acquired_at", "ttl", "message")}
    assert LockInfo.from_labels(labels) == INFO


def test_a_fractional_ttl_and_an_empty_message_round_trip():
    info = LockInfo(**{**INFO.__dict__, "ttl": 1.5, "message": ""})
    assert LockInfo.from_labels(info.to_labels()) == info


def test_labels_from_another_timezone_are_read_as_utc():
    labels = INFO.to_labels() | {P + "acquired_at": "2026-05-07T14:01:02.345678+02:00"}
    read = LockInfo.from_labels(labels)
    assert read.acquired_at == T0
    assert read.acquired_at.tzinfo == timezone.utc


def test_an_old_lock_with_expires_at_and_no_ttl_label_still_reads():
    labels = {k: v for k, v in INFO.to_labels().items() if k not in (P + "ttl", P + "message")}
    labels[P + "expires_at"] = "2026-05-07T12:31:02.345678Z"
    read = LockInfo.from_labels(labels)
    assert read.ttl == 1800
    assert read.message == ""
    assert read.deploy_id == INFO.deploy_id


@pytest.mark.parametrize("broken", [
    {P + "deploy_id": None},
    {P + "holder": None},
    {P + "acquired_at": "soon"},
    {P + "acquired_at": "2026-05-07T12:01:02"},          # no timezone: ambiguous
    {P + "ttl": "half an hour"},
    {P + "ttl": "0"},
    {P + "ttl": "-5"},
    {P + "ttl": "nan"},
    {P + "ttl": "inf"},
    {P + "ttl": None},                                   # and no expires_at either
    {P + "ttl": None, P + "expires_at": "2026-05-07T12:00:00Z"},   # expires before it began
    {P + "ttl": None, P + "expires_at": "later"},
])
def test_unreadable_labels_raise_valueerror(broken):
    labels = {k: v for k, v in (INFO.to_labels() | broken).items() if v is not None}
    with pytest.raises(ValueError):
        LockInfo.from_labels(labels)


def test_naive_times_are_refused_when_writing():
    with pytest.raises(ValueError):
        LockInfo(**{**INFO.__dict__, "acquired_at": T0.replace(tzinfo=None)}).to_labels()
    with pytest.raises(ValueError):
        format_time(T0.replace(tzinfo=None))


def test_expired_is_judged_by_idle_on_the_nodes_clock_against_the_ttl():
    assert not Found("c1", INFO, idle=1799.9).expired
    assert Found("c1", INFO, idle=1800).expired
    assert not Found("c1", None, idle=10 ** 9, problem="not ours").expired


def test_describe_is_the_one_line_the_user_reads():
    found = Found("c1", INFO, idle=120)
    assert found.describe(T0 + timedelta(minutes=2)) == (
        "environment 'stage' service 'hello' is locked by alice@ci-7 pid 1234 since "
        "12:01:02Z (deploy 4f2a9c1b77d0..., tag 1.4.0, https://ci.test/job/42), "
        "expires in 28m unless renewed")


def test_describe_counts_expiry_from_the_last_renewal_not_from_acquired_at():
    # held for a day, renewed 5 minutes ago: 25 minutes left, whatever the clocks say
    found = Found("c1", INFO, idle=300)
    assert found.describe(T0 + timedelta(days=1)).endswith("expires in 25m unless renewed")


def test_describe_shows_the_date_of_a_lock_from_another_day_and_short_ids_whole():
    info = LockInfo(**{**INFO.__dict__, "deploy_id": "abc123", "tag": "", "message": ""})
    found = Found("c1", info, idle=1800 + 23 * 3600 + 30 * 60)
    assert found.describe(T0 + timedelta(days=1)) == (
        "environment 'stage' service 'hello' is locked by alice@ci-7 pid 1234 since "
        "2026-05-07 12:01:02Z (deploy abc123), expired 23h30m ago")


def test_describe_of_a_container_that_is_not_a_lock_says_why():
    found = Found("c1", None, problem="label io.dockship.lock.env is missing")
    assert found.describe() == ("a container that is not a dockship lock "
                                "(label io.dockship.lock.env is missing)")


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (44.6, "45s"), (59, "59s"), (60, "1m"), (28 * 60 + 59, "28m"),
    (3600, "1h00m"), (3900, "1h05m"), (86400 + 3 * 3600, "1d03h"), (-5, "0s")])
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text


@pytest.mark.parametrize("text", [
    "2026-05-07T12:01:02.345678Z",
    "2026-05-07T12:01:02.345678921Z",        # an engine's nanoseconds
    "2026-05-07T12:01:02.345678+00:00",
    "2026-05-07T14:01:02.345678+02:00",
])
def test_parse_time_accepts_z_offsets_and_engine_nanoseconds(text):
    parsed = parse_time(text)
    assert parsed == T0 and parsed.tzinfo == timezone.utc


def test_parse_time_reads_back_what_format_time_writes():
    assert parse_time(format_time(T0)) == T0
    assert parse_time("2026-05-07T12:01:02Z") == T0.replace(microsecond=0)


@pytest.mark.parametrize("value", ["2026-05-07T12:01:02", "soon", "", None, 1778155262])
def test_parse_time_refuses_anything_without_a_zone(value):
    with pytest.raises(ValueError):
        parse_time(value)


CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")


def test_lock_name_is_readable_for_plain_names():
    assert lock_name("stage", "hello") == "dockship-lock-stage-hello"
    assert lock_name("stage", "hello-api") == "dockship-lock-stage-hello-api"


def test_state_names_never_clash_and_are_valid_container_names():
    parts = ["a", "b", "a-b", "b-c", "c", "x.y", "x_y", "Stage", "a b", "ü", "-a", "a--b"]
    seen: dict[str, tuple[str, str]] = {}
    for env, service in itertools.product(parts, repeat=2):
        name = state_name("lock", env, service)
        assert CONTAINER_NAME.fullmatch(name), name
        assert seen.setdefault(name, (env, service)) == (env, service), \
            f"{(env, service)} and {seen[name]} share {name}"
    assert state_name("lock", "a", "b") != state_name("ledger", "a", "b")


@pytest.mark.parametrize("kw, match", [
    ({"ttl": 0}, "ttl"), ({"ttl": -1}, "ttl"), ({"ttl": float("nan")}, "ttl"),
    ({"ttl": float("inf")}, "ttl"),
    ({"wait": -1}, "wait"), ({"wait": float("nan")}, "wait"), ({"wait": float("inf")}, "wait"),
    ({"deploy_id": ""}, "deploy id"),
])
def test_deploy_lock_refuses_nonsense_before_touching_any_store(kw, match):
    nodes = stores("n1", "n2")
    with pytest.raises(ValueError, match=match):
        DeployLock(nodes, env="e", service="s", tag="t", **{"deploy_id": "d", **kw})
    assert [n.log for n in nodes] == [[], []]


def test_deploy_lock_refuses_duplicate_nodes_before_touching_any_store():
    nodes = stores("n1", "n1")
    with pytest.raises(ValueError, match="duplicate"):
        DeployLock(nodes, env="e", service="s", tag="t", deploy_id="d")
    assert [n.log for n in nodes] == [[], []]


def test_stores_are_locked_in_node_name_order_whatever_the_order_given():
    nodes = stores("node3", "node1", "node2")
    creates: list[str] = []
    for store in nodes:
        def create(info, store=store, real=store.create):
            creates.append(store.node)
            return real(info)
        store.create = create
    dl = DeployLock(nodes, env="e", service="s", tag="t", deploy_id="d")
    assert dl.nodes == ["node1", "node2", "node3"]
    dl.acquire()
    assert creates[0] == "node1"            # alone, before any other node
    assert sorted(creates) == ["node1", "node2", "node3"]
