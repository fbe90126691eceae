"""inventory: what a Chef server says about its nodes is checked like configuration."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import MappingProxyType

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dockship.config import ChefSettings
from dockship.errors import ConfigError
from dockship.inventory import chef_node, chef_nodes

SETTING = "environments.prod.chef"


def _chef(docker: str) -> ChefSettings:
    """Settings for `chef_node` alone: it reads no key and calls no server."""
    return ChefSettings(url="http://127.0.0.1:1", client="dockship", key=Path("/nokey"),
                        environment="prod", docker=docker)


def _node(name="web1", address="10.0.0.1", zone="a", docker="ssh://root@{address}"):
    return chef_node({"name": name, "address": address, "zone": zone}, _chef(docker=docker), "web",
                     setting=SETTING)


def test_a_good_row_becomes_a_node():
    node = _node()
    assert (node.name, node.docker, node.zone, node.roles, node.address) == \
        ("web1", "ssh://root@10.0.0.1", "a", ("web",), "10.0.0.1")


def test_an_ipv6_address_is_bracketed_in_the_engine_url():
    assert _node(address="fd00::1").docker == "ssh://root@[fd00::1]"


def test_a_numeric_zone_is_a_zone_name():
    assert _node(zone=3).zone == "3" and _node(zone="").zone is None


@pytest.mark.parametrize("address", ["attacker@127.0.0.1:47107", "127.0.0.1:22", "-oProxyCommand=id",
                                     "10.0.0.1 -p 2222", "h\nx", ["10.0.0.1"], {"ip": "x"}, 7])
def test_an_address_that_is_not_a_host_is_refused_naming_the_node(address):
    with pytest.raises(ConfigError) as info:
        _node(address=address)
    message = str(info.value)
    assert message.startswith(f"{SETTING}.attributes.address: Chef node 'web1': address ")
    assert "\n" not in message


@pytest.mark.parametrize("name", ["web\x1b[2J1", "a;b", "x" * 100_000, None, 5, ""])
def test_a_bad_node_name_is_refused_and_shown_escaped(name):
    with pytest.raises(ConfigError) as info:
        _node(name=name)
    message = str(info.value)
    assert message.startswith(f"{SETTING}: a node found on the Chef server http://127.0.0.1:1 has a bad name")
    assert "\x1b" not in message and len(message) < 400


@pytest.mark.parametrize("zone", ["a b", "\x1b]0;x\x07", {"z": 1}, True])
def test_a_bad_zone_is_refused(zone):
    with pytest.raises(ConfigError, match=rf"^{SETTING}\.attributes\.zone: Chef node 'web1': zone "):
        _node(zone=zone)


def test_a_missing_address_names_the_attribute_to_set():
    with pytest.raises(ConfigError, match=r"attributes\.address: Chef node 'web1' has no 'ipaddress'"):
        _node(address=None)


def test_the_name_template_is_checked_after_filling():
    assert _node(name="web1", docker="ssh://root@{name}").docker == "ssh://root@web1"
    with pytest.raises(ConfigError, match=rf"^{SETTING}\.docker: for Chef node 'a\.\.b'"):
        _node(name="a..b", docker="ssh://root@{name}")


# --- the whole path, against a real (fake) Chef server on 127.0.0.1 ------------------------

class _Search(BaseHTTPRequestHandler):
    rows: list = []

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps({"rows": [{"url": f"http://x/nodes/{i}", "data": row}
                                    for i, row in enumerate(self.rows)],
                           "start": 0, "total": len(self.rows)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def chef_server(tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "dockship.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    handler = type("Handler", (_Search,), {"rows": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings = ChefSettings(url=f"http://127.0.0.1:{server.server_port}", client="dockship", key=pem,
                            environment="prod", attributes=MappingProxyType(
                                {"address": "ipaddress", "zone": "zone"}))
    yield settings, handler
    server.shutdown()
    server.server_close()


def test_found_nodes_are_sorted_and_checked(chef_server):
    settings, handler = chef_server
    handler.rows = [{"name": "web2", "address": "10.0.0.2", "zone": "b"},
                    {"name": "web1", "address": "fd00::1", "zone": "a"}]
    nodes = chef_nodes(settings, "prod", "web", setting=SETTING)
    assert [(n.name, n.docker) for n in nodes] == [("web1", "ssh://root@[fd00::1]"),
                                                   ("web2", "ssh://root@10.0.0.2")]


def test_one_malicious_node_refuses_the_whole_answer(chef_server):
    settings, handler = chef_server
    handler.rows = [{"name": "web1", "address": "10.0.0.1", "zone": "a"},
                    {"name": "evil", "address": "attacker@127.0.0.1:47107", "zone": "a"}]
    with pytest.raises(ConfigError) as info:
        chef_nodes(settings, "prod", "web", setting=SETTING)
    assert info.value.exit_code == 2
    assert str(info.value).startswith(f"{SETTING}.attributes.address: Chef node 'evil': address "
                                      "'attacker@127.0.0.1:47107' is not an IP address")
