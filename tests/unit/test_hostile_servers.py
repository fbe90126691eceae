"""Hostile servers on 127.0.0.1: every call ends in time, with a clean error, leaking nothing.

Each server is a real TCP server in a thread that writes raw bytes: a
trickle of one byte at a time, an accepted connection never answered, a
reason phrase carrying terminal escapes, a token realm on plain http. The
clients are given deadlines of a second or two; the assertions are the error
and a generous bound on how long it took, never a tight timing.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import docker
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from dockship import deadline
from dockship.chef import ChefClient
from dockship.config import Environment, Node, Rollout, SSHSettings, TLSSettings
from dockship.credentials import Credentials, registry_credentials
from dockship.errors import DockshipError, Unreachable, UsageError
from dockship.fleet import NodeEngine
from dockship.index import IndexClient
from dockship.probe import http_probe
from dockship.registry import RegistryClient
from dockship.streams import build_engine, drain

BOUND = 30.0          # "well within a minute": what every hostile case must beat, generously
ESCAPES = "\x1b]0;x\x07\x1b[2J"


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


Handler = Callable[[socket.socket, Request, threading.Event], None]


@dataclass
class RawServer:
    """Reads each request's head, then lets `routes[path]` (or `default`) write raw bytes."""

    default: Handler
    routes: dict[str, Handler] = field(default_factory=dict)
    seen: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.stop = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            head = b""
            try:
                while b"\r\n\r\n" not in head:
                    data = conn.recv(4096)
                    if not data or head[:1] == b"\x16" or data[:1] == b"\x16":
                        return                # closed, or a TLS hello: this is a plain server
                    head += data
                lines = head.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
                request = Request(method, target.split("?")[0], headers)
                self.seen.append(request)
                conn.settimeout(None)
                self.routes.get(request.path, self.default)(conn, request, self.stop)
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


@pytest.fixture
def serve() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def start(default: Handler, routes: dict[str, Handler] | None = None) -> RawServer:
        servers.append(RawServer(default, routes or {}))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def answer(status: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Handler:
    """A complete, well-formed answer."""
    def handler(conn: socket.socket, _req: Request, _stop: threading.Event) -> None:
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        conn.sendall(f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
                     f"{extra}\r\n".encode("latin-1") + body)
    return handler


def trickle(prefix: bytes, *, every: float = 0.3) -> Handler:
    """Send `prefix`, then one byte every `every` seconds for as long as the client listens."""
    def handler(conn: socket.socket, _req: Request, stop: threading.Event) -> None:
        conn.sendall(prefix)
        while not stop.wait(every):
            conn.sendall(b"x")
    return handler


def silent(conn: socket.socket, _req: Request, stop: threading.Event) -> None:
    """Accept, read the request, never answer."""
    stop.wait(120)


TRICKLED_HEADERS = trickle(b"HTTP/1.1 200 OK\r\nX-Slow: ")
TRICKLED_BODY = trickle(b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.pypi.simple.v1+json\r\n"
                        b"Content-Length: 1000000\r\n\r\n{")


def ends_within(bound: float, fn: Callable[[], object], error: type[BaseException]) -> BaseException:
    started = time.monotonic()
    with pytest.raises(error) as info:
        fn()
    assert time.monotonic() - started < bound
    return info.value


# -- the index -------------------------------------------------------------

@pytest.mark.parametrize("handler", [TRICKLED_HEADERS, TRICKLED_BODY, silent],
                         ids=["headers", "body", "silent"])
def test_an_index_that_trickles_or_hangs_ends_within_its_deadline(serve, handler):
    server = serve(handler)
    client = IndexClient(server.url("/simple/"), timeout=1)
    err = ends_within(BOUND, lambda: client.project_files("hello-svc"), Unreachable)
    assert f"index {server.url('/simple/')}" in str(err)
    assert "no complete answer within 1 s" in str(err)


def test_an_index_file_that_trickles_fails_as_a_stall(serve):
    page = json.dumps({"meta": {"api-version": "1.0"}, "files": [
        {"filename": "hello_svc-1.0-py3-none-any.whl", "url": "/files/hello.whl", "hashes": {}}]})
    server = serve(answer("200 OK", page.encode(),
                          {"Content-Type": "application/vnd.pypi.simple.v1+json"}),
                   {"/files/hello.whl": trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 99999\r\n\r\n",
                                                every=0.1)})
    client = IndexClient(server.url("/simple/"), timeout=5, stall=1)
    err = ends_within(BOUND, lambda: client.resolve("hello-svc", "1.0"), Unreachable)
    assert "index file" in str(err) and "no progress for 1 s" in str(err)


# -- the registry ----------------------------------------------------------

@pytest.mark.parametrize("handler", [TRICKLED_HEADERS, silent], ids=["trickle", "silent"])
def test_a_registry_that_trickles_or_hangs_ends_within_its_deadline(serve, handler):
    server = serve(handler)
    client = RegistryClient(f"127.0.0.1:{server.port}", timeout=1)
    err = ends_within(BOUND, client.ping, Unreachable)
    assert f"registry 127.0.0.1:{server.port}" in str(err)
    assert "no complete answer within 1 s" in str(err)


def realm_pair(serve, realm_path: Callable[[RawServer], str]) -> tuple[RawServer, RawServer]:
    """A token realm server and a registry whose 401 names the realm `realm_path` gives."""
    token = json.dumps({"token": "t0k", "expires_in": 300}).encode()
    realm = serve(answer("200 OK", token, {"Content-Type": "application/json"}))

    def registry_handler(conn: socket.socket, req: Request, stop: threading.Event) -> None:
        if req.path == "/token":
            answer("200 OK", token, {"Content-Type": "application/json"})(conn, req, stop)
        elif req.headers.get("Authorization") == "Bearer t0k":
            answer("200 OK", b"{}", {"Content-Type": "application/json"})(conn, req, stop)
        else:
            where = realm_path(realm).replace("REGISTRY", f"127.0.0.1:{registry.port}")
            answer("401 Unauthorized", b"{}",
                   {"WWW-Authenticate": f'Bearer realm="{where}",service="reg"'})(conn, req, stop)

    registry = serve(registry_handler)
    return registry, realm


def test_registry_credentials_never_go_to_a_plain_http_realm_on_another_port(serve):
    registry, realm = realm_pair(serve, lambda r: r.url("/token"))
    client = RegistryClient(f"127.0.0.1:{registry.port}", timeout=5,
                            credentials=Credentials("alice", "s3cret-pass"))
    err = ends_within(BOUND, client.ping, DockshipError)
    assert err.exit_code == 1
    assert realm.url("/token") in str(err) and "plain http" in str(err)
    assert "s3cret-pass" not in str(err)
    assert all("Authorization" not in r.headers for r in realm.seen)
    assert not any("alice" in r.path for r in realm.seen)


def test_registry_credentials_go_to_a_realm_at_the_registry_s_own_origin(serve):
    registry, _realm = realm_pair(serve, lambda _r: "http://REGISTRY/token")
    with RegistryClient(f"127.0.0.1:{registry.port}", timeout=5,
                        credentials=Credentials("alice", "s3cret-pass")) as client:
        client.ping()
    asked = [r for r in registry.seen if r.path == "/token"]
    assert asked and asked[0].headers.get("Authorization", "").startswith("Basic ")


def test_an_anonymous_client_may_use_a_plain_http_realm_elsewhere(serve):
    registry, realm = realm_pair(serve, lambda r: r.url("/token"))
    with RegistryClient(f"127.0.0.1:{registry.port}", timeout=5) as client:
        client.ping()
    assert realm.seen and all("Authorization" not in r.headers for r in realm.seen)


# -- Chef and health probes ------------------------------------------------

@pytest.fixture(scope="module")
def chef_key() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@pytest.mark.parametrize("handler", [TRICKLED_HEADERS, TRICKLED_BODY], ids=["headers", "body"])
def test_a_chef_server_that_trickles_ends_within_its_deadline(serve, chef_key, handler):
    server = serve(handler)
    client = ChefClient(server.url("/organizations/lab"), "dockship", chef_key, timeout=1)
    err = ends_within(BOUND, lambda: client.get("nodes"), Unreachable)
    assert f"Chef server {server.url('/organizations/lab')}" in str(err)
    assert "no complete answer within 1 s" in str(err)


def test_a_health_probe_that_trickles_is_no_answer(serve):
    server = serve(TRICKLED_HEADERS)
    with requests.Session() as session:
        started = time.monotonic()
        status, error = http_probe(session, server.url("/health"), 1)
    assert time.monotonic() - started < BOUND
    assert (status, error) == (None, "no complete answer within 1 s")


# -- what servers say is escaped -----------------------------------------

def test_reason_phrases_and_server_text_are_escaped(serve, chef_key):
    server = serve(answer(f"500 {ESCAPES}", f"boom {ESCAPES}".encode()))
    calls = {
        "index": lambda: IndexClient(server.url("/simple/"), timeout=5).project_files("x"),
        "registry": RegistryClient(f"127.0.0.1:{server.port}", timeout=5).ping,
        "chef": lambda: ChefClient(server.url("/org"), "c", chef_key, timeout=5).get("nodes"),
    }
    for name, call in calls.items():
        with pytest.raises(DockshipError) as info:
            call()
        text = str(info.value)
        assert "\x1b" not in text and "\x07" not in text, name
        assert "\\x1b" in text, name                      # shown, escaped, not dropped


def test_an_answer_larger_than_its_cap_is_refused(serve):
    server = serve(answer("200 OK", b"x" * 5000))
    with requests.Session() as session:
        with pytest.raises(deadline.TooLarge, match="more than"):
            deadline.request(session, "GET", server.url(), what="test server", max_body=1000)


# -- engines ---------------------------------------------------------------

def test_a_build_engine_that_never_answers_ends_within_its_connect_deadline(serve, monkeypatch):
    server = serve(silent)
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{server.port}")
    err = ends_within(BOUND, lambda: build_engine(connect=1), Unreachable)
    assert f"tcp://127.0.0.1:{server.port}" in str(err)
    assert "no complete answer within 1 s" in str(err)


def test_a_node_engine_that_never_answers_ends_within_its_connect_deadline(serve):
    server = serve(silent)
    node = Node("web1", f"tcp://127.0.0.1:{server.port}")
    env = Environment(name="t", nodes=(node,), chef=None, ssh=SSHSettings(), tls=TLSSettings(),
                      rollout=Rollout(), hooks={})
    engine = NodeEngine(node, env, connect=1)
    err = ends_within(BOUND, lambda: engine.client, Unreachable)
    assert "node web1" in str(err) and "no complete answer within 1 s" in str(err)


def fake_engine(serve) -> RawServer:
    """Answers /_ping and /version like an engine; a pull sends one chunk, then nothing."""
    version = json.dumps({"ApiVersion": "1.43", "Version": "24.0.0"}).encode()
    chunk = b'{"status":"Pulling from library/x"}\r\n'
    first = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    stream = trickle(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n" + first, every=600)

    def route(conn: socket.socket, req: Request, stop: threading.Event) -> None:
        if req.path.endswith("/images/create"):
            stream(conn, req, stop)
        elif req.path.endswith("/version"):
            answer("200 OK", version, {"Content-Type": "application/json"})(conn, req, stop)
        else:
            answer("200 OK", b"OK", {"Content-Type": "text/plain"})(conn, req, stop)
    return serve(route)


def test_a_pull_stream_that_goes_silent_fails_after_its_stall_limit(serve):
    server = fake_engine(serve)
    client = docker.DockerClient(base_url=f"tcp://127.0.0.1:{server.port}", version="1.43",
                                 timeout=60)
    try:
        assert client.ping()
        seen: list[dict] = []
        err = ends_within(BOUND, lambda: drain(client.api.pull("x", tag="1", stream=True,
                                                               decode=True),
                                               "pull of x:1", seen.append, stall=3),
                          Unreachable)
    finally:
        client.close()
    assert seen == [{"status": "Pulling from library/x"}]     # progress was read, then silence
    assert "pull of x:1" in str(err) and "no progress for 3 s" in str(err)


# -- credential helpers ---------------------------------------------------

def test_a_hung_credential_helper_is_stopped_and_named(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-slow"
    helper.write_text("#!/bin/sh\nsleep 60\n")
    helper.chmod(helper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"credsStore": "slow"}))
    err = ends_within(BOUND, lambda: registry_credentials("10.77.0.1:5000", environ={},
                                                          docker_config=config,
                                                          helper_timeout=1), UsageError)
    assert "docker-credential-slow" in str(err) and "no answer within 1 s" in str(err)


@pytest.mark.parametrize("labels", [["a", "b"], "x", 7])
def test_an_image_whose_labels_are_not_an_object_is_an_error_not_a_crash(serve, labels):
    blob = json.dumps({"config": {"Labels": labels}}).encode()
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    manifest = json.dumps({"schemaVersion": 2,
                           "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                           "config": {"digest": digest, "size": len(blob),
                                      "mediaType": "application/vnd.docker.container.image.v1+json"},
                           "layers": []}).encode()

    def registry(conn: socket.socket, req: Request, stop: threading.Event) -> None:
        if "/manifests/" in req.path:
            answer("200 OK", manifest, {"Content-Type":
                   "application/vnd.docker.distribution.manifest.v2+json"})(conn, req, stop)
        else:
            answer("200 OK", blob, {"Content-Type": "application/octet-stream"})(conn, req, stop)

    server = serve(registry)
    client = RegistryClient(f"127.0.0.1:{server.port}", timeout=5)
    with pytest.raises(DockshipError, match="Labels is not an object"):
        client.image_labels("hello", "1.0.0")
