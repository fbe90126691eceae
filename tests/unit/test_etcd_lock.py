"""The deploy lock as an etcd lease (design §9), on a real etcd: take, renew, expiry, release.

Expiry is etcd's: a lease of a few seconds is left unrenewed and the server
deletes the key. Waits poll etcd with generous bounds; nothing asserts a
tight wall-clock time.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from dockship.config import EtcdSettings, parse
from dockship.errors import DockshipError, LockHeld
from dockship.etcd import Etcd
from dockship.etcdlock import EtcdLockStore, lock_key, lock_stores
from dockship.halt import Halt
from dockship.lock import DeployLock, DockerLockStore, Gone, LeaseKeeper, LockInfo, Taken
from dockship.times import utc_now

from etcdkit import etcd_url  # noqa: F401 - the fixture

SHORT = 2.0          # seconds: etcd's shortest lease is about this
WAIT = 30.0          # generous bound for etcd to expire a lease


@pytest.fixture
def service(request) -> str:
    """A service name of this test's own: tests share one etcd."""
    return f"svc-{abs(hash(request.node.name)) % 10 ** 8}"


def _store(url: str, service: str, env: str = "stage") -> EtcdLockStore:
    return EtcdLockStore(EtcdSettings(url=url, prefix="/n"), env, service)


def _info(service: str, deploy: str = "deploy-alice", ttl: float = 1800.0,
          holder: str = "alice@ci-7 pid 1") -> LockInfo:
    return LockInfo("stage", service, holder, deploy, "1.4.0", utc_now(), ttl, "ci job 7")


def _deploy_lock(url: str, service: str, deploy: str, ttl: float = 1800.0, **kw) -> DeployLock:
    return DeployLock([_store(url, service)], env="stage", service=service, tag="1.4.0",
                      deploy_id=deploy, ttl=ttl, holder=f"{deploy}@host pid 1",
                      message="ci job 7", **kw)


def _gone_within(store: EtcdLockStore, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if store.read() is None:
            return True
        time.sleep(0.2)
    return False


# --- the store ------------------------------------------------------------------------

def test_create_is_atomic_and_a_second_create_is_taken(etcd_url, service):
    first, second = _store(etcd_url, service), _store(etcd_url, service)
    lease = first.create(_info(service))
    with pytest.raises(Taken):
        second.create(_info(service, deploy="deploy-bob"))
    found = second.read()
    assert found is not None and found.container_id == lease
    assert found.info.deploy_id == "deploy-alice" and found.info.message == "ci job 7"
    assert found.info.ttl == 1800.0 and not found.expired


def test_the_lock_is_one_key_holding_the_lock_info_as_json_under_a_lease(etcd_url, service):
    lease = _store(etcd_url, service).create(_info(service))
    with Etcd(etcd_url) as etcd:
        entry = etcd.get(lock_key("stage", service))
    assert entry.key == f"/dockship/locks/stage/{service}".encode()
    assert format(entry.lease, "x") == lease
    assert json.loads(entry.value)["holder"] == "alice@ci-7 pid 1"


def test_the_losers_lease_is_revoked(etcd_url, service):
    _store(etcd_url, service).create(_info(service))
    with Etcd(etcd_url) as etcd:
        before = _leases(etcd_url)
        with pytest.raises(Taken):
            _store(etcd_url, service).create(_info(service, deploy="deploy-bob"))
        assert _leases(etcd_url) == before


def _leases(url: str) -> set[str]:
    import requests
    answer = requests.post(f"{url}/v3/lease/leases", json={}, timeout=10).json()
    return {lease["ID"] for lease in answer.get("leases") or ()}


def test_idle_is_measured_by_etcd_and_a_renewal_resets_it(etcd_url, service):
    store = _store(etcd_url, service)
    lease = store.create(_info(service, ttl=30))
    time.sleep(2.5)
    idle = store.read().idle
    assert idle >= 2          # etcd's count, not ours: whole seconds
    store.renew(lease)
    assert store.read().idle < idle


def test_an_unrenewed_lease_is_ended_by_etcd_and_then_a_contender_takes_the_lock(etcd_url, service):
    holder = _deploy_lock(etcd_url, service, "deploy-alice", ttl=SHORT).acquire()
    store = holder.stores[0]
    assert store.read().info.deploy_id == "deploy-alice"
    with pytest.raises(LockHeld):
        _deploy_lock(etcd_url, service, "deploy-bob").acquire()
    assert _gone_within(store, WAIT)              # etcd expired it: nobody removed it
    bob = _deploy_lock(etcd_url, service, "deploy-bob").acquire()
    assert store.read().info.deploy_id == "deploy-bob"
    with pytest.raises(Gone):                     # the old holder learns at its next renewal
        store.renew(holder.held["etcd"])
    assert bob.release() == []


def test_a_ttl_shorter_than_etcd_grants_reads_as_the_granted_one_and_never_as_expired(
        etcd_url, service):
    store = _store(etcd_url, service)
    store.create(_info(service, ttl=0.3))          # etcd grants whole seconds, 2 at least
    time.sleep(0.5)
    found = store.read()
    assert found is not None and found.info.ttl >= 2 and not found.expired


def test_a_renewed_lease_outlives_its_ttl(etcd_url, service):
    dl = _deploy_lock(etcd_url, service, "deploy-alice", ttl=SHORT).acquire()
    lost = []
    with LeaseKeeper(dl, on_lost=lost.append, every=0.5):
        time.sleep(3 * SHORT)
        found = dl.stores[0].read()
    assert lost == [] and found is not None and found.info.deploy_id == "deploy-alice"
    assert dl.release() == []


def test_the_lock_held_message_names_holder_deploy_tag_and_message(etcd_url, service):
    _deploy_lock(etcd_url, service, "deploy-alice").acquire()
    with pytest.raises(LockHeld) as info:
        _deploy_lock(etcd_url, service, "deploy-bob").acquire()
    message = str(info.value)
    assert info.value.exit_code == 3
    assert f"environment 'stage' service '{service}' is locked by deploy-alice@host pid 1" in message
    assert "deploy deploy-alice, tag 1.4.0, ci job 7" in message and "expires in" in message


def test_release_deletes_only_our_own_key(etcd_url, service):
    store = _store(etcd_url, service)
    ours = store.create(_info(service))
    assert store.remove(ours) is True and store.read() is None
    assert store.remove(ours) is False                   # already gone
    theirs = store.create(_info(service, deploy="deploy-bob"))
    assert store.remove(ours) is False                   # a stale id removes nothing
    assert store.read().container_id == theirs


def test_a_forced_release_makes_the_holder_lose_its_lease(etcd_url, service):
    holder = _deploy_lock(etcd_url, service, "deploy-alice").acquire()
    other = _store(etcd_url, service)
    assert other.remove(other.read().container_id)
    with pytest.raises(Gone):
        holder.stores[0].renew(holder.held["etcd"])


def test_a_key_deleted_by_hand_is_a_lost_lock(etcd_url, service):
    holder = _deploy_lock(etcd_url, service, "deploy-alice").acquire()
    with Etcd(etcd_url) as etcd:
        etcd.delete(lock_key("stage", service))
    lost = []
    keeper = LeaseKeeper(holder, on_lost=lost.append)
    assert keeper.renew_once() is False
    assert "was lost on etcd" in lost[0]


def test_a_key_that_is_not_a_lock_blocks_with_what_is_wrong(etcd_url, service):
    with Etcd(etcd_url) as etcd:
        etcd.put(lock_key("stage", service), b"garbage")
    found = _store(etcd_url, service).read()
    assert found.info is None and "not JSON" in found.problem
    with pytest.raises(LockHeld) as info:
        _deploy_lock(etcd_url, service, "deploy-alice").acquire()
    assert str(info.value) == (
        f"environment 'stage' service '{service}' is locked on node etcd by something that is "
        f"not a dockship lock (etcd key /dockship/locks/stage/{service}: its value is not JSON); "
        f"if no deployment is running, delete it with `etcdctl del /dockship/locks/stage/{service}`")


def test_a_key_without_a_lease_would_never_expire_and_is_not_taken_for_a_lock(etcd_url, service):
    store = _store(etcd_url, service)
    store.create(_info(service))
    with Etcd(etcd_url) as etcd:                  # the same value, put again without a lease
        etcd.put(lock_key("stage", service), etcd.get(lock_key("stage", service)).value)
    found = store.read()
    assert found.info is None and "has no lease" in found.problem


def test_an_etcd_that_stops_answering_is_a_failed_renewal_then_a_lost_lease(tmp_path, service):
    import etcdkit
    proc, url = etcdkit.start(tmp_path)
    try:
        dl = _deploy_lock(url, service, "deploy-alice").acquire()
        proc.kill()
        proc.wait()
        clock = [0.0]
        lost = []
        keeper = LeaseKeeper(dl, on_lost=lost.append, give_up=10, clock=lambda: clock[0])
        assert keeper.renew_once() is True            # one failed round is not yet a loss
        clock[0] = 11
        assert keeper.renew_once() is False
        assert lost and "could not be renewed on etcd" in lost[0]
        assert f"etcd {url} did not answer" in lost[0]
        assert dl.release() == ["etcd"]               # never raises; says where it failed
    finally:
        etcdkit.stop(proc)


def test_an_unreachable_etcd_fails_the_take_with_one_line_naming_it(service):
    url = "http://127.0.0.1:1"
    with pytest.raises(DockshipError) as info:
        _deploy_lock(url, service, "deploy-alice").acquire(halt=Halt())
    assert info.value.exit_code == 1
    assert str(info.value) == f"node etcd: etcd {url} did not answer (connection refused)"


# --- which store an environment uses ------------------------------------------------------

def _env(**source):
    return parse({"index": {"url": "http://127.0.0.1:8081/simple/"},
                  "registry": {"url": "127.0.0.1:5000"},
                  "environments": {"stage": source}}, base_dir=Path("/")).environment("stage")


def test_an_etcd_environment_locks_in_etcd_and_others_on_their_engines():
    stores = lock_stores(_env(etcd={"url": "http://127.0.0.1:2379"}), [("node1", None)], "hello")
    assert [type(s) for s in stores] == [EtcdLockStore] and stores[0].node == "etcd"
    listed = _env(nodes=[{"name": "node1", "docker": "ssh://root@10.0.0.1"}])
    assert [type(s) for s in lock_stores(listed, [("node1", None), ("node2", None)], "hello")] \
        == [DockerLockStore, DockerLockStore]


def test_lock_status_reads_the_lease_from_etcd_without_touching_a_node(etcd_url, service):
    from dockship.lockops import lock_status

    prefix = f"/nodes-{service}"
    with Etcd(etcd_url) as etcd:     # a node no engine answers for: reading the lock never dials it
        etcd.put(f"{prefix}/node1".encode(), json.dumps(
            {"name": "node1", "address": "192.0.2.1", "docker": "ssh://root@192.0.2.1"}).encode())
    config = parse({"index": {"url": "http://127.0.0.1:8081/simple/"},
                    "registry": {"url": "127.0.0.1:5000"},
                    "services": {service: {"port": 8000}},
                    "environments": {"stage": {"etcd": {"url": etcd_url, "prefix": prefix}}}},
                   base_dir=Path("/"))
    assert lock_status(config, "stage")[0].to_json()["locked"] is False
    _deploy_lock(etcd_url, service, "deploy-alice").acquire()
    doc = lock_status(config, "stage")[0].to_json()
    assert (doc["locked"], doc["deploy_id"], doc["tag"], doc["message"], doc["ttl"]) == \
        (True, "deploy-alice", "1.4.0", "ci job 7", 1800.0)
    assert 1700 < doc["expires_in"] <= 1800
    assert [n["name"] for n in doc["nodes"]] == ["etcd"]
