"""Health check kinds against real servers on 127.0.0.1: http with a Host header, https, tcp."""

from __future__ import annotations

import http.server
import socket
import ssl
import threading

import pytest
import requests

from dockship.config import HealthCheck
from dockship.health import HealthJudge, Observation, State
from dockship.probe import probe_check, probe_once
from tlskit import self_signed


class Handler(http.server.BaseHTTPRequestHandler):
    seen_hosts: list[str] = []

    def do_GET(self):  # noqa: N802
        Handler.seen_hosts.append(self.headers.get("Host", ""))
        code = 200 if self.headers.get("Host") in ("api.example", None) or self.path == "/any" else 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def serve(tls_dir=None):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls_dir is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tls_dir / "cert.pem", tls_dir / "key.pem")
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def session():
    s = requests.Session()
    s.trust_env = False
    yield s
    s.close()


def test_an_http_check_sends_the_host_header_it_is_given(session):
    server = serve()
    port = server.server_address[1]
    try:
        with_host = probe_check(session, "127.0.0.1", port,
                                HealthCheck(path="/health", host="api.example"), 5.0)
        assert with_host.status == 200 and Handler.seen_hosts[-1] == "api.example"
        other = probe_check(session, "127.0.0.1", port,
                            HealthCheck(path="/health", host="other.example"), 5.0)
        assert other.status == 404
    finally:
        server.shutdown()


def test_an_https_check_speaks_tls_and_verifies_only_when_asked(session, tmp_path):
    self_signed(tmp_path, "svc.example")
    server = serve(tmp_path)
    port = server.server_address[1]
    try:
        check = HealthCheck(path="/any", scheme="https")
        assert probe_once("127.0.0.1", port, check) == "healthy"
        plain = probe_check(session, "127.0.0.1", port, HealthCheck(path="/any"), 5.0)
        assert plain.status is None                          # http to a TLS port: no answer
        strict = probe_check(session, "127.0.0.1", port,
                             HealthCheck(path="/any", scheme="https", verify=True), 5.0)
        assert strict.status is None and strict.error        # self-signed: refused
    finally:
        server.shutdown()


def test_a_tcp_check_needs_only_an_accepting_port():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    check = HealthCheck(kind="tcp")
    try:
        assert probe_once("127.0.0.1", port, check) == "healthy"
    finally:
        listener.close()
    assert probe_once("127.0.0.1", port, check).startswith("unreachable")


def test_the_judge_takes_a_connection_as_the_answer_of_a_tcp_check():
    judge = HealthJudge(HealthCheck(kind="tcp", min_healthy=0, timeout=5))
    assert judge.observe(Observation(0.1, "running", error="connection refused")).state \
        is State.PENDING
    assert "TCP connect got no answer" in judge.last_problem
    assert judge.observe(Observation(0.2, "running", connected=True)).state is State.HEALTHY
