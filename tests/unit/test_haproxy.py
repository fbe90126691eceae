"""HAProxy's runtime API client and balancer, against a real HAProxy on a temporary socket.

No lab: each test module starts its own `haproxy -db` on 127.0.0.1 with
backends of tiny local HTTP servers, and talks to it through a unix socket in
a temporary directory. Skipped where HAProxy is not installed.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from dockship import config as config_mod
from dockship.config import BalancerSettings
from dockship.errors import ConfigError
from dockship.haproxy import BalancerError, HAProxyBalancer, RuntimeAPI, parse_stat_csv
from dockship.hooks import HookContext

HAPROXY = "haproxy"  # installed by scripts/install-deps.sh


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/slow":
            time.sleep(1.0)
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # HAProxy's health check may hang up before the body; not a failure here

    def log_message(self, *args: object) -> None:
        pass


def _http_server() -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _closed_port() -> int:
    return _free_port()   # nothing listens there: health checks fail with L4CON


class Lab:
    """One HAProxy: backend `web` (a, b: answering; dead: nothing listens), backend `solo` (one)."""

    def __init__(self, tmp: Path):
        self.servers = [_http_server() for _ in range(3)]
        self.sock = tmp / "admin.sock"
        self.port = _free_port()
        a, b, solo = (s.server_address[1] for s in self.servers)
        cfg = tmp / "haproxy.cfg"
        cfg.write_text(f"""
global
    stats socket {self.sock} mode 600 level admin
defaults
    mode http
    timeout connect 1s
    timeout client 10s
    timeout server 10s
    timeout check 1s
    retries 3
    option redispatch
frontend web_in
    bind 127.0.0.1:{self.port}
    use_backend solo if {{ path_beg /slow }}
    default_backend web
backend web
    option httpchk GET /health
    default-server check inter 100ms fall 2 rise 2
    server a 127.0.0.1:{a}
    server b 127.0.0.1:{b}
    server dead 127.0.0.1:{_closed_port()}
backend solo
    option httpchk GET /health
    default-server check inter 100ms fall 2 rise 2
    server node1 127.0.0.1:{solo}
""")
        self.log = open(tmp / "haproxy.log", "w")
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.api = RuntimeAPI(self.sock, setting="environments.t.balancer.socket")
        deadline = time.monotonic() + 10
        while True:
            try:
                stats = {s.server: s.status for s in self.api.servers("web")}
                if stats.get("a") == "UP" and stats.get("b") == "UP" and stats.get("dead") == "DOWN":
                    break
            except (ConfigError, BalancerError):
                pass
            assert time.monotonic() < deadline, (tmp / "haproxy.log").read_text()
            time.sleep(0.05)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.log.close()
        for s in self.servers:
            s.shutdown()
            s.server_close()


@pytest.fixture(scope="module")
def hx(tmp_path_factory):
    lab = Lab(tmp_path_factory.mktemp("haproxy"))
    yield lab
    lab.close()


def _settings(sock: Path, **kw) -> BalancerSettings:
    return BalancerSettings(kind="haproxy", socket=sock, at="environments.t.balancer", **kw)


def _ctx(node: str) -> HookContext:
    return HookContext("t", "web", "d1", node=node, address="127.0.0.1", zone="a")


# --- parsing, on HAProxy's own answers -----------------------------------------------

def test_show_stat_is_parsed_by_header_names(hx):
    text = hx.api.command("show stat web 4 -1")
    rows = parse_stat_csv(text)
    assert [(s.backend, s.server) for s in rows] == [("web", "a"), ("web", "b"), ("web", "dead")]
    a, _, dead = rows
    assert (a.status, a.sessions, a.queued, a.weight, a.check_status) == ("UP", 0, 0, 1, "L7OK")
    assert a.up and not dead.up
    assert dead.status == "DOWN" and dead.check_status == "L4CON"
    assert "Layer4" in dead.describe() and "web/dead is DOWN" in dead.describe()


def test_parsing_skips_frontend_and_backend_rows(hx):
    rows = parse_stat_csv(hx.api.command("show stat"))
    assert {(s.backend, s.server) for s in rows} == {("web", "a"), ("web", "b"), ("web", "dead"),
                                                     ("solo", "node1")}


def test_a_check_in_progress_star_is_not_part_of_the_status():
    # HAProxy prefixes check_status with "* " while a check is running
    text = ("# pxname,svname,status,check_status,check_desc,type\n"
            "web,dead,DOWN,* L4CON,Layer4 connection problem,2\n")
    (dead,) = parse_stat_csv(text)
    assert dead.check_status == "L4CON"
    assert "(last check L4CON: Layer4 connection problem)" in dead.describe()


def test_a_non_csv_answer_is_an_error():
    with pytest.raises(BalancerError, match="no CSV header"):
        parse_stat_csv("No such proxy.\n\n")


def test_info_reads_show_info(hx):
    assert hx.api.info()["Name"] == "HAProxy"


# --- states ---------------------------------------------------------------------------

def test_drain_then_ready(hx):
    hx.api.set_state("web", "b", "drain")
    try:
        assert hx.api.server_status("web", "b") == "DRAIN"
        before = {s.server: s.total for s in hx.api.servers("web")}
        for _ in range(6):
            assert requests.get(f"http://127.0.0.1:{hx.port}/", timeout=3).status_code == 200
        after = {s.server: s.total for s in hx.api.servers("web")}
        assert after["b"] == before["b"] and after["a"] == before["a"] + 6   # drained: no new request
    finally:
        hx.api.set_state("web", "b", "ready")
    assert hx.api.server_status("web", "b") == "UP"    # at once: its checks never stopped


def test_maint_then_ready_of_a_dead_server_is_up_before_any_check(hx):
    """HAProxy's surprise: leaving MAINT, a server is UP (going down) before a check has passed."""
    hx.api.set_state("web", "dead", "maint")
    assert hx.api.server_status("web", "dead") == "MAINT"
    hx.api.set_state("web", "dead", "ready")
    first = hx.api.server("web", "dead")
    assert first.status in ("UP 1/2", "DOWN") and not first.up
    assert hx.api.wait_up("web", "dead", 1.0).status == "DOWN"


def _record_sessions(monkeypatch, api: RuntimeAPI) -> list[int]:
    """Every answer `api.server_sessions` gives from now on, in order (the polls of a wait)."""
    seen: list[int] = []
    real = api.server_sessions

    def recording(backend: str, server: str) -> int:
        seen.append(real(backend, server))
        return seen[-1]

    monkeypatch.setattr(api, "server_sessions", recording)
    return seen


def test_sessions_count_requests_in_flight_and_drain_waits_for_them(hx, monkeypatch):
    results = []
    t = threading.Thread(target=lambda: results.append(
        requests.get(f"http://127.0.0.1:{hx.port}/slow", timeout=5).status_code))
    t.start()
    deadline = time.monotonic() + 3
    while hx.api.server_sessions("solo", "node1") == 0:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert hx.api.server_sessions("solo", "node1") == 1
    hx.api.set_state("solo", "node1", "drain")
    try:
        assert hx.api.wait_drained("solo", "node1", 0.1) == 1      # timed out: 1 left
        polls = _record_sessions(monkeypatch, hx.api)
        assert hx.api.wait_drained("solo", "node1", 5) == 0
        assert polls[-1] == 0 and 0 not in polls[:-1]              # returned at the first look with none left
    finally:
        hx.api.set_state("solo", "node1", "ready")
    t.join()
    assert results == [200]                                        # the drained request finished


def test_wait_drained_stops_early_when_cancelled(hx, monkeypatch):
    cancel = threading.Event()
    cancel.set()
    t = threading.Thread(target=lambda: requests.get(f"http://127.0.0.1:{hx.port}/slow", timeout=5))
    t.start()
    while hx.api.server_sessions("solo", "node1") == 0:
        time.sleep(0.02)
    polls = _record_sessions(monkeypatch, hx.api)
    assert hx.api.wait_drained("solo", "node1", 5, cancel) == 1
    assert polls == [1]                                           # one look, no waiting for the timeout
    t.join()


# --- errors: one clear line -----------------------------------------------------------

def test_an_unknown_server_names_the_servers_there(hx):
    with pytest.raises(BalancerError, match=r"set web/nope to drain: No such server; "
                                            r"servers of backend web: a, b, dead"):
        hx.api.set_state("web", "nope", "drain")
    with pytest.raises(BalancerError, match=r"backend web .* has no server nope; its servers: a, b, dead"):
        hx.api.server_status("web", "nope")


def test_an_unknown_backend(hx):
    with pytest.raises(BalancerError, match="No such backend"):
        hx.api.set_state("nope", "a", "drain")
    with pytest.raises(BalancerError, match="HAProxy has no backend nope"):
        hx.api.servers("nope")


def test_a_bad_state_is_a_programming_error(hx):
    with pytest.raises(ValueError):
        hx.api.set_state("web", "a", "up")


def test_one_command_per_connection():
    with pytest.raises(BalancerError, match="one command at a time"):
        RuntimeAPI("/nonexistent").command("show info; set server web/a state maint")


def test_a_missing_socket_is_a_config_error_naming_the_key(tmp_path):
    api = RuntimeAPI(tmp_path / "nope.sock", setting="environments.stage.balancer.socket")
    with pytest.raises(ConfigError, match=r"^environments\.stage\.balancer\.socket: .*nope\.sock "
                                          r"does not exist; is HAProxy running with `stats socket"):
        api.info()


def test_a_regular_file_is_not_a_socket(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is not a unix socket"):
        RuntimeAPI(tmp_path / "file", setting="x.socket").info()


def test_a_stale_socket_says_haproxy_is_not_running(tmp_path):
    path = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()                          # the file stays, nobody listens: what a dead HAProxy leaves
    with pytest.raises(BalancerError, match="refuses connections: HAProxy is not running"):
        RuntimeAPI(path).info()


def test_a_socket_below_level_admin_is_told_so(tmp_path):
    sock = tmp_path / "user.sock"
    cfg = tmp_path / "h.cfg"
    cfg.write_text(f"global\n    stats socket {sock} level user\ndefaults\n    mode http\n"
                   "    timeout connect 1s\n    timeout client 1s\n    timeout server 1s\n"
                   "backend web\n    server a 127.0.0.1:9\n")
    proc = subprocess.Popen([HAPROXY, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with pytest.raises(BalancerError, match="Permission denied; the socket needs `level admin`"):
            RuntimeAPI(sock).set_state("web", "a", "drain")
    finally:
        proc.terminate()
        proc.wait(10)


# --- the balancer a roll uses ---------------------------------------------------------

def test_balancer_check_finds_every_node_server(hx):
    lb = HAProxyBalancer(_settings(hx.sock), "web")
    lb.check([_ctx("a"), _ctx("b")])
    with pytest.raises(BalancerError, match=r"no server for node9 \(node node9\); its servers: "
                                            r"a, b, dead \(set environments\.t\.balancer\.server"):
        lb.check([_ctx("a"), _ctx("node9")])


def test_balancer_templates_map_nodes_to_servers(hx):
    lb = HAProxyBalancer(_settings(hx.sock, backend="{service}", server="node{zone}"), "solo")
    assert lb.backend == "solo"
    lb.check([HookContext("t", "solo", "d", node="n", address="127.0.0.1", zone="1")])


def test_balancer_drain_and_ready(hx):
    lb = HAProxyBalancer(_settings(hx.sock, drain_timeout=2, ready_timeout=2), "web")
    assert "drained" in lb.drain(_ctx("a"))
    assert hx.api.server_status("web", "a") == "DRAIN"
    assert "UP in HAProxy" in lb.ready(_ctx("a"))
    assert hx.api.server_status("web", "a") == "UP"


def test_balancer_ready_that_never_comes_up_leaves_the_node_drained(hx):
    lb = HAProxyBalancer(_settings(hx.sock, ready_timeout=0.5), "web")
    with pytest.raises(BalancerError, match=r"web/dead is DOWN \(last check L4CON.*not UP within 0.5s"):
        lb.ready(_ctx("dead"))
    assert hx.api.server("web", "dead").status == "DOWN"      # a drained DOWN server shows DOWN
    rows = [line.split() for line in hx.api.command("show servers state web").splitlines()[2:]
            if line.strip()]
    (dead,) = [r for r in rows if r[3] == "dead"]
    assert int(dead[6]) & 0x08                                  # srv_admin_state has FDRAIN
    hx.api.set_state("web", "dead", "ready")


# --- config ---------------------------------------------------------------------------

BASE = """
[index]
url = "http://127.0.0.1:8081/simple/"
[registry]
url = "127.0.0.1:5000"
[services.hello]
[environments.stage]
nodes = [{ name = "node1", docker = "ssh://root@10.0.0.1" }]
"""


def _parse(extra: str, tmp: Path):
    return config_mod.parse(tomllib.loads(BASE + extra), base_dir=tmp)


def test_config_balancer_table_with_defaults(tmp_path):
    cfg = _parse('[environments.stage.balancer]\nkind = "haproxy"\nsocket = "run/admin.sock"\n', tmp_path)
    lb = cfg.environment("stage").balancer
    assert lb == BalancerSettings(kind="haproxy", socket=tmp_path / "run/admin.sock",
                                  backend="{service}", server="{name}", drain_timeout=10.0,
                                  ready_timeout=30.0, at="environments.stage.balancer")
    assert lb.backend_for("hello") == "hello" and lb.server_for("node1", "10.0.0.1", "a") == "node1"


def test_config_without_balancer(tmp_path):
    assert _parse("", tmp_path).environment("stage").balancer is None


def test_config_balancer_templates(tmp_path):
    cfg = _parse('[environments.stage.balancer]\nkind = "haproxy"\nsocket = "/x.sock"\n'
                 'backend = "be_{service}"\nserver = "{zone}-{name}"\ndrain_timeout = 0\n', tmp_path)
    lb = cfg.environment("stage").balancer
    assert lb.backend_for("hello") == "be_hello"
    assert lb.server_for("node1", "10.0.0.1", "a") == "a-node1" and lb.drain_timeout == 0


def test_config_balancer_errors_name_their_keys(tmp_path):
    with pytest.raises(ConfigError) as err:
        _parse('[environments.stage.balancer]\nkind = "nginx"\nserver = "{host}"\n'
               'backend = "a b"\nready_timeout = 0\nsockett = "/x"\n', tmp_path)
    text = str(err.value)
    for key in ("kind: 'nginx' is not supported", "socket: missing", "server: '{host}' uses {host}",
                "backend: 'a b' has characters", "ready_timeout: 0 must be at least 0.1",
                "sockett: unknown key (did you mean 'socket'?)"):
        assert f"environments.stage.balancer.{key}" in text, text
