"""bench/swarmbench.py's pure parts: the linear model of figure 8b and how requests are named."""

from __future__ import annotations

import http.server
import socketserver
import sys
import threading
from pathlib import Path

import docker
import paramiko
import requests.adapters

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import swarmbench  # noqa: E402
from dockship.swarmmanager import SwarmManager  # noqa: E402


def test_fit_recovers_the_per_node_cost_and_its_fixed_part():
    points = [(n, 5 + 22 * n) for n in (3, 6, 9) for _ in range(3)]
    intercept, slope = swarmbench.fit(points)
    assert round(intercept, 6) == 5 and round(slope, 6) == 22
    assert swarmbench.fmt_fit(points, 0) == "5 + 22.00·N (→ 100: 2205 · 1000: 22005)"


def test_endpoint_drops_the_api_version_ids_and_query():
    name = swarmbench.endpoint("POST", "http+docker://localhost/v1.41/nodes/k3x9q/update?version=12")
    assert name == "POST /nodes/{id}/update"
    assert swarmbench.endpoint("GET", "http+docker://localhost/v1.41/tasks?filters=%7B%7D") == "GET /tasks"


def test_counting_puts_every_wrapped_call_back():
    saved = (requests.adapters.HTTPAdapter.send, paramiko.Transport.start_client,
             paramiko.Transport.open_channel, SwarmManager.__init__)
    with swarmbench.counting() as counts:
        assert requests.adapters.HTTPAdapter.send is not saved[0]
        assert counts["api"] == 0 and counts["ssh"] == 0
    assert (requests.adapters.HTTPAdapter.send, paramiko.Transport.start_client,
            paramiko.Transport.open_channel, SwarmManager.__init__) == saved


class _Engine(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        body = b"OK"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def get_request(self):
        request, _ = super().get_request()
        return request, ("local", 0)


def test_counting_counts_engine_requests_not_other_http(tmp_path):
    sock = str(tmp_path / "engine.sock")
    engine = _UnixHTTPServer(sock, _Engine)
    web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Engine)
    for server in (engine, web):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    client = docker.APIClient(base_url=f"unix://{sock}", version="1.41", timeout=10)
    try:
        with swarmbench.counting() as counts:
            assert client.ping()
            assert client.ping()
            with requests.Session() as s:
                s.trust_env = False
                assert s.get(f"http://127.0.0.1:{web.server_address[1]}/health", timeout=5).ok
        assert counts["api"] == 2
        assert counts["endpoints"] == {"GET /_ping": 2}
    finally:
        client.close()
        engine.shutdown()
        web.shutdown()
