"""dockship.chef against a real Chef server: goiardi, started here in memory.

Each module run gets its own goiardi on a free port and its own conf root
(where goiardi writes admin.pem), so parallel sessions on one machine never
share keys. The admin seeds a `dockship` client, environments, roles and
nodes the way the lab does; then everything dockship itself does is done as
the `dockship` client.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dockship.chef import (
    ChefClient,
    ChefRequestError,
    create_client,
    ensure_environment,
    ensure_role,
    upsert_node,
)
from dockship.errors import ConfigError, Unreachable

pytestmark = pytest.mark.lab  # goiardi: scripts/install-deps.sh

WEB_STAGE = {f"web{i}": (f"10.77.0.{10 + i}", "abc"[i % 3]) for i in range(1, 6)}
QUERY = "role:web AND chef_environment:stage"
KEYS = {"name": ["name"], "address": ["automatic", "ipaddress"], "zone": ["normal", "zone"]}


@dataclass(frozen=True)
class Goiardi:
    url: str
    conf_root: Path
    admin_key: Path

    def admin(self, **options: object) -> ChefClient:
        return ChefClient(self.url, "admin", self.admin_key, **options)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str, key: Path) -> bool:
    try:
        with ChefClient(url, "admin", key, timeout=1) as admin:
            admin.get("clients")
        return True
    except Exception:  # noqa: BLE001 - any failure means "not up yet"
        return False


@pytest.fixture(scope="module")
def goiardi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Goiardi]:
    conf_root = tmp_path_factory.mktemp("goiardi")
    log_path = conf_root / "goiardi.log"
    for _attempt in range(3):  # the free port may be taken between probe and bind
        port = free_port()
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                ["goiardi", "-A", "-I", "127.0.0.1", "-P", str(port), "-H", "127.0.0.1",
                 "--conf-root", str(conf_root)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        server = Goiardi(f"http://127.0.0.1:{port}", conf_root, conf_root / "admin.pem")
        deadline = time.monotonic() + 15
        while proc.poll() is None and time.monotonic() < deadline:
            if server.admin_key.exists() and answers(server.url, server.admin_key):
                break
            time.sleep(0.1)
        if proc.poll() is None and answers(server.url, server.admin_key):
            break
        proc.kill()
        proc.wait()
    else:
        pytest.fail(f"goiardi did not start: {log_path.read_text(errors='replace')[-500:]}")
    try:
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def dockship_key(goiardi: Goiardi, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seed the server like the lab does and return the dockship client's key file."""
    with goiardi.admin() as admin:
        pem = create_client(admin, "dockship")
        for env in ("stage", "prod"):
            ensure_environment(admin, env)
        for role in ("web", "db"):
            ensure_role(admin, role)
        for name, (address, zone) in WEB_STAGE.items():
            upsert_node(admin, name, environment="stage", run_list=["role[web]"],
                        automatic={"ipaddress": address}, normal={"zone": zone})
        upsert_node(admin, "db1", environment="stage", run_list=["role[db]"],
                    automatic={"ipaddress": "10.77.0.30"}, normal={"zone": "a"})
        upsert_node(admin, "prodweb1", environment="prod", run_list=["role[web]"],
                    automatic={"ipaddress": "10.77.1.11"}, normal={"zone": "a"})
    key_path = tmp_path_factory.mktemp("keys") / "dockship.pem"
    key_path.write_bytes(pem)
    key_path.chmod(0o600)
    return key_path


@pytest.fixture
def chef(goiardi: Goiardi, dockship_key: Path) -> Iterator[ChefClient]:
    with ChefClient(goiardi.url, "dockship", dockship_key) as client:
        yield client


def expected_partial() -> list[dict[str, str]]:
    return [{"name": name, "address": address, "zone": zone}
            for name, (address, zone) in sorted(WEB_STAGE.items())]


# -- search ------------------------------------------------------------------

@pytest.mark.parametrize("rows", [1000, 2, 1, 5])
def test_search_finds_the_web_nodes_of_stage_sorted_by_name(chef, rows):
    nodes = chef.search("node", QUERY, rows=rows)
    assert [node["name"] for node in nodes] == sorted(WEB_STAGE)
    assert {node["name"]: node["automatic"]["ipaddress"] for node in nodes} == {
        name: address for name, (address, _) in WEB_STAGE.items()}
    assert all(node["chef_environment"] == "stage" for node in nodes)


@pytest.mark.parametrize("rows", [1000, 2, 1, 5])
def test_partial_search_returns_only_the_asked_keys_sorted_by_name(chef, rows):
    # goiardi reorders partial results on every request, so pages overlap; run
    # it a few times so the recovery path is exercised, not just lucky.
    for _ in range(5):
        assert chef.search("node", QUERY, rows=rows, keys=KEYS) == expected_partial()


def test_partial_search_without_name_is_still_ordered_by_node(chef):
    rows = chef.search("node", QUERY, rows=2, keys={"address": ["automatic", "ipaddress"]})
    assert rows == [{"address": address} for _, (address, _) in sorted(WEB_STAGE.items())]


def test_search_without_matches_is_empty(chef):
    assert chef.search("node", "role:web AND chef_environment:nowhere", rows=2) == []
    assert chef.search("node", "role:nothing", keys=KEYS) == []


def test_bad_query_names_the_query(chef):
    with pytest.raises(ChefRequestError) as info:
        chef.search("node", "role:((")
    assert info.value.status == 400
    assert "'role:(('" in str(info.value)


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.3"])
def test_every_sign_version_is_accepted(goiardi, dockship_key, version):
    with ChefClient(goiardi.url, "dockship", dockship_key, sign_version=version) as chef:
        assert [n["name"] for n in chef.search("node", QUERY, rows=2, keys=KEYS)] == sorted(WEB_STAGE)
        assert chef.get("nodes/web1")["normal"]["zone"] == WEB_STAGE["web1"][1]


# -- writes (lab helpers) ----------------------------------------------------------

def test_upsert_node_replaces_a_node_whole(goiardi, chef):
    with goiardi.admin() as admin:
        upsert_node(admin, "tmp1", environment="stage", run_list=["role[db]"],
                    automatic={"ipaddress": "10.77.0.99"}, normal={"zone": "a", "old": 1})
        upsert_node(admin, "tmp1", environment="stage", run_list=["role[db]"],
                    automatic={"ipaddress": "10.77.0.98"}, normal={"zone": "c"})
        try:
            node = chef.get("nodes/tmp1")
            assert node["automatic"] == {"ipaddress": "10.77.0.98"}
            assert node["normal"] == {"zone": "c"}
            assert chef.search("node", "name:tmp1", keys=KEYS) == [
                {"name": "tmp1", "address": "10.77.0.98", "zone": "c"}]
        finally:
            admin.delete("nodes/tmp1")


def test_ensure_environment_and_role_are_idempotent(goiardi, chef):
    with goiardi.admin() as admin:
        ensure_environment(admin, "stage")
        ensure_role(admin, "web")
    assert chef.get("environments/stage")["name"] == "stage"
    assert chef.get("roles/web")["name"] == "web"


def test_create_client_again_issues_a_new_key_and_revokes_the_old(goiardi, tmp_path):
    with goiardi.admin() as admin:
        first = create_client(admin, "rekeyed")
        second = create_client(admin, "rekeyed")
    assert first != second
    with ChefClient(goiardi.url, "rekeyed", second) as client:
        assert client.get("nodes/web1")["name"] == "web1"
    with ChefClient(goiardi.url, "rekeyed", first) as client, pytest.raises(ConfigError):
        client.get("nodes/web1")


def test_missing_object_is_a_404_with_the_servers_words(chef):
    with pytest.raises(ChefRequestError) as info:
        chef.get("nodes/nope")
    assert info.value.status == 404
    assert "nodes/nope" in str(info.value)


# -- errors the user can fix ---------------------------------------------------------

@pytest.mark.parametrize("version", ["1.0", "1.3"])
def test_unknown_client_is_a_config_error(goiardi, dockship_key, version):
    with ChefClient(goiardi.url, "ghost", dockship_key, sign_version=version,
                    setting="environments.stage.chef") as chef:
        with pytest.raises(ConfigError) as info:
            chef.search("node", QUERY)
    message = str(info.value)
    assert message.startswith(f"Chef server at {goiardi.url} rejected client 'ghost': ")
    assert message.endswith("check environments.stage.chef.client and "
                            "environments.stage.chef.key")
    assert "\n" not in message


@pytest.mark.parametrize("version", ["1.0", "1.3"])
def test_wrong_key_is_a_config_error_without_key_material(goiardi, version):
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = other.private_bytes(serialization.Encoding.PEM,
                              serialization.PrivateFormat.TraditionalOpenSSL,
                              serialization.NoEncryption())
    with ChefClient(goiardi.url, "dockship", pem, sign_version=version) as chef:
        with pytest.raises(ConfigError) as info:
            chef.get("nodes")
    message = str(info.value)
    assert "rejected client 'dockship'" in message
    assert "check chef.client and chef.key" in message
    assert "PRIVATE KEY" not in message


def test_closed_port_is_unreachable(dockship_key):
    url = f"http://127.0.0.1:{free_port()}"
    with ChefClient(url, "dockship", dockship_key, timeout=2) as chef:
        with pytest.raises(Unreachable) as info:
            chef.search("node", QUERY)
    assert url in str(info.value)
    assert "connection refused" in str(info.value)


def test_silent_server_is_unreachable_after_the_timeout(dockship_key):
    with socket.socket() as silent:  # accepts connections (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        with ChefClient(url, "dockship", dockship_key, timeout=0.5) as chef:
            with pytest.raises(Unreachable) as info:
                chef.get("nodes")
    # The client's own timeout ended the call, and the message says which one.
    assert str(info.value).startswith(f"Chef server {url} did not answer (no complete answer within 0.5 s)")
