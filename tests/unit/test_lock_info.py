"""LockInfo labels and messages, state container names: pure, no engine."""

from __future__ import annotations

import itertools
import re
from datetime import datetime, timedelta, timezone

import pytest

from dockship.lock import DeployLock, LockInfo, human_duration, lock_name, parse_time
from dockship.stateimage import state_name

T0 = datetime(2026, 5, 7, 12, 1, 2, 345678, tzinfo=timezone.utc)
INFO = LockInfo(env="stage", service="hello", holder="alice@ci-7 pid 1234",
                deploy_id="4f2a9c1b77d04e0f8a2b", tag="1.4.0", acquired_at=T0,
                expires_at=T0 + timedelta(minutes=30))


def test_labels_round_trip_exactly_with_microseconds():
    labels = INFO.to_labels()
    assert labels["io.dockship.lock.acquired_at"] == "2026-05-07T12:01:02.345678Z"
    assert labels["io.dockship.lock.holder"] == "alice@ci-7 pid 1234"
    assert set(labels) == {f"io.dockship.lock.{k}" for k in
                           ("env", "service", "holder", "deploy_id", "tag", "acquired_at",
                            "expires_at")}
    assert LockInfo.from_labels(labels) == INFO


def test_labels_from_another_timezone_are_read_as_utc():
    labels = INFO.to_labels() | {"io.dockship.lock.acquired_at": "2026-05-07T14:01:02.345678+02:00"}
    assert LockInfo.from_labels(labels).acquired_at == T0
    assert LockInfo.from_labels(labels).acquired_at.tzinfo == timezone.utc


@pytest.mark.parametrize("broken", [
    {"io.dockship.lock.deploy_id": None},
    {"io.dockship.lock.expires_at": "soon"},
    {"io.dockship.lock.expires_at": "2026-05-07T12:31:02"},  # no timezone: ambiguous
])
def test_unreadable_labels_raise_valueerror(broken):
    labels = {k: v for k, v in (INFO.to_labels() | broken).items() if v is not None}
    with pytest.raises(ValueError):
        LockInfo.from_labels(labels)


def test_naive_times_are_refused_when_writing():
    with pytest.raises(ValueError):
        LockInfo(**{**INFO.__dict__, "acquired_at": T0.replace(tzinfo=None)}).to_labels()


def test_expired_is_judged_against_the_given_now():
    assert not INFO.expired(T0 + timedelta(minutes=29, seconds=59))
    assert INFO.expired(T0 + timedelta(minutes=30))


def test_describe_is_the_one_line_the_user_reads():
    now = T0 + timedelta(minutes=2)
    assert INFO.describe(now) == (
        "environment 'stage' service 'hello' is locked by alice@ci-7 pid 1234 since "
        "12:01:02Z (deploy 4f2a9c1b77d0..., tag 1.4.0), expires in 28m")


def test_describe_shows_the_date_of_a_lock_from_another_day_and_short_ids_whole():
    info = LockInfo(**{**INFO.__dict__, "deploy_id": "abc123", "tag": ""})
    now = T0 + timedelta(days=1)
    assert info.describe(now) == (
        "environment 'stage' service 'hello' is locked by alice@ci-7 pid 1234 since "
        "2026-05-07 12:01:02Z (deploy abc123), expired 23h30m ago")


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (44.6, "45s"), (59, "59s"), (60, "1m"), (28 * 60 + 59, "28m"),
    (3600, "1h00m"), (3900, "1h05m"), (86400 + 3 * 3600, "1d03h"), (-5, "0s")])
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text


def test_parse_time_accepts_z():
    assert parse_time("2026-05-07T12:01:02.345678Z") == T0


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


def test_deploy_lock_refuses_nonsense_before_touching_any_engine():
    with pytest.raises(ValueError, match="ttl"):
        DeployLock([], env="e", service="s", tag="t", deploy_id="d", ttl=0)
    with pytest.raises(ValueError, match="wait"):
        DeployLock([], env="e", service="s", tag="t", deploy_id="d", wait=-1)
    with pytest.raises(ValueError, match="deploy id"):
        DeployLock([], env="e", service="s", tag="t", deploy_id="")
    with pytest.raises(ValueError, match="duplicate"):
        DeployLock([("n1", None), ("n1", None)], env="e", service="s", tag="t", deploy_id="d")


def test_engines_are_locked_in_node_name_order_whatever_the_order_given():
    dl = DeployLock([("node3", None), ("node1", None), ("node2", None)], env="e", service="s",
                    tag="t", deploy_id="d")
    assert [n for n, _ in dl.engines] == ["node1", "node2", "node3"]
