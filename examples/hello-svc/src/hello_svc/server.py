"""A stdlib-only HTTP service: `/` reports name and version, `/health` says whether it is fine."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import PackageNotFoundError, packages_distributions, version

from hello_svc.behaviour import BEHAVIOUR

STARTED = time.monotonic()


def _version() -> str:
    # Tests publish this code under other distribution names: ask which one holds the module.
    for dist in packages_distributions().get("hello_svc", ["hello-svc"]):
        try:
            return version(dist)
        except PackageNotFoundError:
            continue
    return "0+unknown"


VERSION = _version()


def _healthy() -> bool:
    mode = os.environ.get("HELLO_BEHAVIOUR", BEHAVIOUR)
    if mode == "unhealthy":
        return False
    if mode.startswith("slow:"):
        return time.monotonic() - STARTED >= float(mode.split(":", 1)[1])
    if mode.startswith("sick-after:"):
        return time.monotonic() - STARTED < float(mode.split(":", 1)[1])
    return True


_served = 0
_served_lock = threading.Lock()


def _root_fails() -> bool:
    """`errors:F`: a fraction F of the answers on / are 500 (every round(1/F)-th), health stays fine."""
    global _served
    mode = os.environ.get("HELLO_BEHAVIOUR", BEHAVIOUR)
    with _served_lock:
        _served += 1
        n = _served
    if mode.startswith("errors:"):
        every = max(1, round(1 / float(mode.split(":", 1)[1])))
        return n % every == 0
    if mode.startswith("latency:"):
        time.sleep(float(mode.split(":", 1)[1]) / 1000)
    return False


class Server(ThreadingHTTPServer):
    """A ThreadingHTTPServer whose stop answers every request in flight before the process exits.

    The stdlib's `daemon_threads = True` would kill handler threads mid-request
    at exit; here `server_close()` joins them instead. Idle keep-alive
    connections would keep their threads waiting for a next request, so a stop
    shuts their read side: a thread waiting for a request sees EOF and ends, a
    request already received (even one still in the socket buffer) is answered
    with `Connection: close`.
    """

    daemon_threads = False
    block_on_close = True

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.stopping = threading.Event()
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request, client_address):  # type: ignore[no-untyped-def]
        with self._open_lock:
            self._open.add(request)
        if self.stopping.is_set():
            _shut_read(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):  # type: ignore[no-untyped-def]
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()            # no more accepts (serve_forever returns)
        with self._open_lock:
            conns = list(self._open)
        for conn in conns:
            _shut_read(conn)


def _shut_read(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RD)
    except OSError:
        pass   # already closed by the peer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Buffered: headers and body leave in one write. Unbuffered (the stdlib default), they are
    # two small writes, and Nagle + delayed ACK make every keep-alive request wait ~40 ms.
    wbufsize = 64 * 1024

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        if self.path == "/health":
            ok = _healthy()
            self._send(200 if ok else 503, {"status": "ok" if ok else "unhealthy", "version": VERSION})
        elif self.path == "/":
            if _root_fails():
                self._send(500, {"error": "failing on purpose", "version": VERSION})
            else:
                self._send(200, {"service": "hello-svc", "version": VERSION,
                                 "host": socket.gethostname()})
        else:
            self._send(404, {"error": "not found"})

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.server.stopping.is_set():   # type: ignore[attr-defined]
            self.send_header("Connection", "close")   # answered, then this connection ends
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt: str, *args: object) -> None:
        if self.path != "/health":  # health probes every half second would drown the log
            sys.stderr.write(f"{self.address_string()} {fmt % args}\n")


def main() -> None:
    mode = os.environ.get("HELLO_BEHAVIOUR", BEHAVIOUR)
    if mode == "crash":
        sys.stderr.write(f"hello-svc {VERSION}: crashing at start on purpose\n")
        raise SystemExit(3)
    port = int(os.environ.get("PORT", "8000"))
    server = Server(("0.0.0.0", port), Handler)

    def stop(signum: int, frame: object) -> None:
        # Finish the requests in flight, then exit: a graceful stop for rolls.
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stderr.write(f"hello-svc {VERSION} listening on :{port}\n")
    server.serve_forever(poll_interval=0.1)
    server.server_close()   # joins the handler threads: every request in flight is answered


if __name__ == "__main__":
    main()
