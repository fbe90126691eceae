"""etcd discovery: entries are checked like configuration, refused by key; a real etcd serves them."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from dockship import checks
from dockship.config import EtcdSettings, parse
from dockship.errors import ConfigError, DockshipError, UsageError
from dockship.etcd import Etcd
from dockship.etcdnodes import parse_entries, parse_entry
from dockship.inventory import nodes_for

from etcdkit import etcd_url  # noqa: F401 - the fixture

SETTING = "environments.stage.etcd"
SETTINGS = EtcdSettings(url="http://127.0.0.1:2379", prefix="/dockship/nodes/stage")


def _entry(**fields) -> bytes:
    return json.dumps({"name": "node1", "address": "10.0.0.11", **fields}).encode()


def _refusal(value: bytes, key: bytes = b"/dockship/nodes/stage/node1", **kw) -> str:
    with pytest.raises(ConfigError) as info:
        parse_entry(key, value, SETTINGS, setting=SETTING, **kw)
    message = str(info.value)
    assert message.startswith(f"{SETTING}: the entry '")
    assert message.endswith("fix it there (dockship touched nothing)")
    assert "\n" not in message and "\x1b" not in message
    return message


# --- parsing, no server ---------------------------------------------------------------

def test_an_entry_becomes_a_node_with_the_template_filled_in():
    node = parse_entry(b"/k", _entry(zone="a", roles=["web", "web"]), SETTINGS, setting=SETTING)
    assert (node.name, node.address, node.zone, node.roles, node.docker) == \
        ("node1", "10.0.0.11", "a", ("web",), "ssh://root@10.0.0.11")


def test_an_entry_may_name_its_own_engine_and_the_template_may_use_the_name():
    assert parse_entry(b"/k", _entry(docker="ssh://deploy@10.0.0.99:2222"), SETTINGS,
                       setting=SETTING).docker == "ssh://deploy@10.0.0.99:2222"
    named = EtcdSettings(url=SETTINGS.url, prefix=SETTINGS.prefix, docker="ssh://ops@{name}.dc1")
    assert parse_entry(b"/k", _entry(), named, setting=SETTING).docker == "ssh://ops@node1.dc1"
    assert parse_entry(b"/k", _entry(address="fd00::7"), SETTINGS,
                       setting=SETTING).docker == "ssh://root@[fd00::7]"


def test_zone_and_roles_are_optional_and_a_numeric_zone_is_a_name():
    node = parse_entry(b"/k", _entry(zone=3, roles=None), SETTINGS, setting=SETTING)
    assert node.zone == "3" and node.roles == () and node.runs("web")


@pytest.mark.parametrize("value, expected", [
    (b"not json", "is not JSON"),
    (b"\xff\xfe", "is not JSON"),
    (b"[" * 60_000, "is not JSON"),
    (b'["node1"]', "not a JSON object"),
    (b'"node1"', "not a JSON object"),
    (b"{}", "has a bad name"),
    (_entry(name="a;b"), "has a bad name"),
    (_entry(name="web\x1b[2J"), "has a bad name"),
    (json.dumps({"name": "node1"}).encode(), "has no \"address\""),
    (_entry(address="attacker@10.0.0.1"), "address"),
    (_entry(address="-oProxyCommand=id"), "address"),
    (_entry(address=["10.0.0.1"]), "address"),
    (_entry(zone="a b"), "zone"),
    (_entry(roles="web"), "roles must be a list"),
    (_entry(roles=["web", "x y"]), "role"),
    (_entry(docker="ftp://10.0.0.1"), "docker"),
    (_entry(docker="ssh://-oProxyCommand=id@10.0.0.1"), "docker"),
    (_entry(docker="tcp://10.0.0.1:2375"), "tcp:// engine without TLS"),
    (_entry(adress="10.0.0.1"), "unknown key 'adress' (did you mean 'address'?)"),
    (b" " * (65 << 10), "more than a node's entry can be"),
])
def test_a_bad_entry_is_refused_naming_its_key_and_what_is_wrong(value, expected):
    assert expected in _refusal(value)


def test_a_plain_tcp_engine_is_accepted_when_the_environment_opts_in():
    node = parse_entry(b"/k", _entry(docker="tcp://10.0.0.1:2375"), SETTINGS, setting=SETTING,
                       plain_tcp_ok=True)
    assert node.docker == "tcp://10.0.0.1:2375"


def test_a_key_with_control_characters_is_shown_escaped():
    message = _refusal(b"nope", key=b"/dockship/nodes/stage/\x1b[31mx")
    assert "\\x1b[31mx" in message


def test_nodes_come_back_sorted_by_name_whatever_the_key_order():
    nodes = parse_entries([(b"/p/z", _entry(name="node2")), (b"/p/a", _entry(name="node10")),
                           (b"/p/m", _entry(name="node1"))], SETTINGS, setting=SETTING)
    assert [n.name for n in nodes] == ["node1", "node10", "node2"]


def test_two_keys_holding_one_node_are_refused_naming_both():
    with pytest.raises(ConfigError) as info:
        parse_entries([(b"/p/a", _entry()), (b"/p/b", _entry())], SETTINGS, setting=SETTING)
    assert str(info.value) == (f"{SETTING}: keys '/p/a' and '/p/b' on etcd http://127.0.0.1:2379 "
                               "both hold node 'node1'; delete one of them there (dockship "
                               "touched nothing)")


# --- a real etcd ----------------------------------------------------------------------

def _config(url: str, prefix: str, **env) -> object:
    return parse({
        "index": {"url": "http://127.0.0.1:8081/simple/"}, "registry": {"url": "127.0.0.1:5000"},
        "services": {"web": {"port": 8000, "role": "web"}, "any": {"port": 8001},
                     "db": {"port": 8002, "role": "db"}},
        "environments": {"stage": {"etcd": {"url": url, "prefix": prefix}, **env}},
    }, base_dir=Path("/"))


def _register(url: str, entries: dict[str, bytes]) -> None:
    with Etcd(url) as etcd:
        for key, value in entries.items():
            etcd.put(key.encode(), value)


def test_nodes_for_finds_the_registered_nodes_of_a_role_in_name_order(etcd_url, request):
    prefix = f"/t/{request.node.name}"
    _register(etcd_url, {
        f"{prefix}/c": _entry(name="node3", address="10.0.0.13", zone="b", roles=["web"]),
        f"{prefix}/a": _entry(name="node2", address="10.0.0.12", zone="a", roles=["db"]),
        f"{prefix}/b": _entry(name="node1", address="10.0.0.11", zone="a", roles=["web"],
                              docker="ssh://deploy@10.0.0.11:2222"),
        f"{prefix}x/other": b"not even json: another prefix, never read",
    })
    cfg = _config(etcd_url, prefix)
    env = cfg.environment("stage")
    web = nodes_for(env, cfg.services["web"])
    assert [(n.name, n.address, n.zone, n.docker) for n in web] == [
        ("node1", "10.0.0.11", "a", "ssh://deploy@10.0.0.11:2222"),
        ("node3", "10.0.0.13", "b", "ssh://root@10.0.0.13")]
    assert [n.name for n in nodes_for(env, cfg.services["any"])] == ["node1", "node2", "node3"]
    assert [n.name for n in nodes_for(env, cfg.services["db"])] == ["node2"]


def test_one_bad_entry_refuses_the_whole_answer(etcd_url, request):
    prefix = f"/t/{request.node.name}"
    _register(etcd_url, {f"{prefix}/node1": _entry(),
                         f"{prefix}/node2": _entry(name="node2", address="10.0.0.12; rm -rf /")})
    cfg = _config(etcd_url, prefix)
    with pytest.raises(ConfigError) as info:
        nodes_for(cfg.environment("stage"), cfg.services["web"])
    assert info.value.exit_code == 2
    assert str(info.value).startswith(f"{SETTING}: the entry '{prefix}/node2' on etcd {etcd_url} "
                                      "(node node2): address ")


def test_an_empty_prefix_is_a_usage_error_naming_where_it_looked(etcd_url):
    cfg = _config(etcd_url, "/t/nothing-here")
    with pytest.raises(UsageError) as info:
        nodes_for(cfg.environment("stage"), cfg.services["web"])
    assert str(info.value) == (f"no nodes for service 'web' in environment 'stage' (etcd "
                               f"{etcd_url} under /t/nothing-here with role 'web' found none)")


def test_an_unreachable_etcd_is_one_line_naming_the_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]        # closed again: nothing listens there
    cfg = _config(f"http://127.0.0.1:{port}", "/x")
    with pytest.raises(DockshipError) as info:
        nodes_for(cfg.environment("stage"), cfg.services["web"])
    assert info.value.exit_code == 1
    assert str(info.value) == f"etcd http://127.0.0.1:{port} did not answer (connection refused)"


def test_a_server_that_never_answers_ends_at_the_deadline():
    with socket.socket() as silent:              # accepts (backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(DockshipError) as info, Etcd(url, total=1.0) as etcd:
            etcd.get_prefix(b"/x/")
        assert time.monotonic() - started < 20
    assert info.value.exit_code == 1
    assert str(info.value).startswith(f"etcd {url} did not answer (")


def test_a_server_that_is_not_etcd_is_named():
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import threading

    class NotEtcd(BaseHTTPRequestHandler):
        def do_GET(self):
            self._reply()

        def do_POST(self):
            self._reply()

        def _reply(self):
            body = b"<html>hello</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotEtcd)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        with pytest.raises(DockshipError) as info, Etcd(url, total=5) as etcd:
            etcd.get_prefix(b"/x/")
        assert str(info.value).startswith(f"etcd {url} answered with something that is not etcd's")
    finally:
        server.shutdown()
        server.server_close()


# --- any value at all -------------------------------------------------------------------

_HOSTILE = st.sampled_from(["node1", "10.0.0.1", "fd00::1", "a", "web", "", " ", "\x1b[2J",
                            "-oProxyCommand=id", "x;y", "ssh://root@10.0.0.1", "tcp://h:2375",
                            "unix:///run/x.sock", "ssh://-x@h", "\u202e", "x" * 300])
_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | _HOSTILE,
                       lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(_HOSTILE, inner, max_size=3), max_leaves=6)


@settings(max_examples=300, deadline=None)
@given(entry=st.dictionaries(st.sampled_from(["name", "address", "zone", "roles", "docker",
                                              "adress", "x"]), _VALUES, max_size=6),
       raw=st.one_of(st.none(), st.binary(max_size=40)))
def test_any_entry_is_a_valid_node_or_one_line_refusal(entry, raw):
    value = raw if raw is not None else json.dumps(entry).encode()
    try:
        node = parse_entry(b"/p/k", value, SETTINGS, setting=SETTING)
    except ConfigError as exc:
        message = str(exc)
        assert message.startswith(f"{SETTING}: the entry '/p/k' on etcd ")
        assert "\n" not in message and "\x1b" not in message and "\u202e" not in message
        return
    assert checks.name_problem(node.name) is None
    assert checks.host_problem(node.address) is None
    assert node.zone is None or checks.name_problem(node.zone) is None
    assert all(checks.name_problem(r) is None for r in node.roles)
    assert checks.docker_endpoint_problem(node.docker) is None
    assert not node.docker.startswith("tcp://")
