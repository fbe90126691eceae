"""HAProxy's runtime API: take a node's server out of traffic and put it back.

A small client of the runtime API (the `stats socket PATH level admin` of
HAProxy's `global` section): one command per connection on the unix socket,
as `socat` users do. On top of it, `HAProxyBalancer` is the balancer a roll
uses around each node's swap (`[environments.NAME.balancer] kind = "haproxy"`):

- drain: `set server B/S state drain` (no new requests; health checks go on),
  then wait until the server's current sessions reach 0, at most
  `drain_timeout` seconds (long-lived connections must not block a roll);
- ready: `set server B/S state ready`, then wait until HAProxy *itself* sees
  the server UP (its own health checks passed `rise` times), so that traffic
  really reaches the new container before the next node is taken out.

Facts about HAProxy 2.6 this relies on (seen here):
- `set server` answers an empty line on success, a sentence otherwise
  ("No such server.", "No such backend.", "Permission denied." below level admin).
- A drained server whose container stopped shows `DOWN`, not `DRAIN`: the
  admin state (drain) and the health state (up/down) are separate; `show stat`'s
  `status` shows the health state first. A server going back up shows
  `DOWN 1/2` (one good check of `rise 2`); a server losing checks `UP 1/2`.
- Leaving MAINT with `ready` makes a server `UP 1/2` at once, before any check
  has passed: traffic may go to it immediately. Leaving DRAIN does not do that
  (the checks never stopped), which is why the roll drains instead of MAINT.
"""

from __future__ import annotations

import csv
import errno
import io
import socket
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from dockship.config import BalancerSettings
from dockship.errors import ConfigError, DockshipError
from dockship.hooks import HookContext

STATES = ("ready", "drain", "maint")
POLL = 0.1          # seconds between two looks at a server while waiting


class BalancerError(DockshipError):
    """The balancer refused a command or did not reach the state asked for."""


@dataclass(frozen=True)
class ServerStat:
    """One server of a backend, as `show stat` reports it."""

    backend: str
    server: str
    status: str          # UP, DOWN, DRAIN, MAINT, NOLB, "no check", "UP 1/2", "DOWN 1/2", ...
    sessions: int        # scur: requests being served right now
    queued: int          # qcur: requests waiting for a slot on this server
    total: int           # stot: requests it was given since HAProxy started
    weight: int
    check_status: str    # L7OK, L4CON, L7STS, ... ("" without checks)
    check_desc: str      # "Layer4 connection problem", ...
    address: str

    @property
    def up(self) -> bool:
        """Taking traffic, as HAProxy sees it (not in transition, not drained, not in maintenance)."""
        return self.status in ("UP", "no check")

    @property
    def busy(self) -> int:
        return self.sessions + self.queued

    def describe(self) -> str:
        text = f"{self.backend}/{self.server} is {self.status}"
        if self.check_status and not self.up:
            text += f" (last check {self.check_status}" + (f": {self.check_desc}" if self.check_desc else "") + ")"
        return text


class RuntimeAPI:
    """HAProxy's runtime API on a unix socket; `setting` names the config key of the socket."""

    def __init__(self, path: Path | str, *, setting: str = "balancer.socket", timeout: float = 5.0):
        self.path = Path(path)
        self.setting = setting
        self.timeout = timeout

    # -- transport ------------------------------------------------------------------

    def command(self, line: str) -> str:
        """Send one command, return HAProxy's whole answer (the connection is closed after it)."""
        if "\n" in line or ";" in line:
            raise BalancerError(f"refusing to send {line!r} to HAProxy: one command at a time")
        self._check_socket()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            try:
                sock.connect(str(self.path))
            except OSError as exc:
                raise BalancerError(self._connect_problem(exc)) from None
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except TimeoutError:
            raise BalancerError(f"HAProxy's runtime API at {self.path} did not answer "
                                f"`{line}` within {self.timeout:g}s") from None
        except OSError as exc:
            raise BalancerError(f"HAProxy's runtime API at {self.path} failed during `{line}`: "
                                f"{exc.strerror or exc}") from None
        finally:
            sock.close()
        return b"".join(chunks).decode(errors="replace")

    def _check_socket(self) -> None:
        try:
            mode = self.path.stat().st_mode
        except FileNotFoundError:
            raise ConfigError(f"{self.setting}: {self.path} does not exist; is HAProxy running with "
                              f"`stats socket {self.path} level admin` in its global section?") from None
        except OSError as exc:
            raise ConfigError(f"{self.setting}: cannot use {self.path}: {exc.strerror}") from None
        if not stat.S_ISSOCK(mode):
            raise ConfigError(f"{self.setting}: {self.path} is not a unix socket; point it at "
                              "HAProxy's `stats socket`")

    def _connect_problem(self, exc: OSError) -> str:
        if exc.errno == errno.ECONNREFUSED:
            return (f"HAProxy's runtime API at {self.path} refuses connections: HAProxy is not "
                    "running (a stale socket file is left), start it")
        if exc.errno in (errno.EACCES, errno.EPERM):
            return (f"no permission to connect to HAProxy's runtime API at {self.path}; run as a user "
                    "allowed by the socket's mode/owner (`stats socket ... mode 660 group ...`)")
        return f"cannot connect to HAProxy's runtime API at {self.path}: {exc.strerror or exc}"

    # -- commands -------------------------------------------------------------------

    def set_state(self, backend: str, server: str, state: str) -> None:
        """`set server BACKEND/SERVER state ready|drain|maint`."""
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}, not {state!r}")
        answer = self.command(f"set server {backend}/{server} state {state}").strip()
        if answer:
            raise BalancerError(self._refused(f"set {backend}/{server} to {state}", answer, backend))

    def _refused(self, doing: str, answer: str, backend: str) -> str:
        first = answer.splitlines()[0].strip().rstrip(".")
        hint = ""
        if first.lower().startswith("permission denied"):
            hint = f"; the socket needs `level admin` (stats socket {self.path} level admin)"
        elif "no such server" in first.lower():
            names = [s.server for s in self._stats_or_empty(backend)]
            hint = f"; servers of backend {backend}: {', '.join(names) or 'none'}"
        elif "backend" in first.lower() or "proxy" in first.lower():
            hint = f"; no backend named {backend} in the HAProxy of {self.path}"
        return f"HAProxy refused to {doing}: {first}{hint}"

    def _stats_or_empty(self, backend: str) -> list[ServerStat]:
        try:
            return self.servers(backend)
        except BalancerError:
            return []

    def servers(self, backend: str) -> list[ServerStat]:
        """Every server of `backend`, from `show stat BACKEND 4 -1` (type 4 = servers)."""
        text = self.command(f"show stat {backend} 4 -1")
        if not text.startswith("# "):
            first = text.strip().splitlines()[0] if text.strip() else "empty answer"
            raise BalancerError(f"HAProxy has no backend {backend} ({first.rstrip('.')}) "
                                f"at {self.path}")
        return parse_stat_csv(text)

    def server(self, backend: str, server: str) -> ServerStat:
        stats = self.servers(backend)
        for s in stats:
            if s.server == server:
                return s
        raise BalancerError(f"backend {backend} of the HAProxy at {self.path} has no server "
                            f"{server}; its servers: {', '.join(s.server for s in stats) or 'none'}")

    def server_status(self, backend: str, server: str) -> str:
        """HAProxy's status of the server: UP, DOWN, DRAIN, MAINT, or a transition like `DOWN 1/2`."""
        return self.server(backend, server).status

    def server_sessions(self, backend: str, server: str) -> int:
        """Requests the server is serving or has queued right now."""
        return self.server(backend, server).busy

    def wait_drained(self, backend: str, server: str, timeout: float,
                     cancel: threading.Event | None = None) -> int:
        """Wait until the server has no session left, at most `timeout` s; the sessions left."""
        deadline = time.monotonic() + timeout
        while True:
            busy = self.server_sessions(backend, server)
            if busy == 0 or time.monotonic() >= deadline or (cancel is not None and cancel.is_set()):
                return busy
            time.sleep(POLL)

    def wait_up(self, backend: str, server: str, timeout: float,
                cancel: threading.Event | None = None) -> ServerStat:
        """Wait until HAProxy sees the server UP; its last stat either way (check `.up`)."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.server(backend, server)
            if s.up or time.monotonic() >= deadline or (cancel is not None and cancel.is_set()):
                return s
            time.sleep(POLL)

    def info(self) -> dict[str, str]:
        """`show info` as a dict (Name, Version, Pid, ...): also a cheap liveness probe."""
        out = {}
        for line in self.command("show info").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                out[key.strip()] = value.strip()
        if "Version" not in out:
            raise BalancerError(f"unexpected answer to `show info` from {self.path}")
        return out


def parse_stat_csv(text: str) -> list[ServerStat]:
    """Server rows of `show stat` CSV (header `# pxname,svname,...`); FRONTEND/BACKEND rows skipped."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("# "):
        raise BalancerError("unexpected `show stat` answer from HAProxy (no CSV header)")
    rows = csv.DictReader(io.StringIO("\n".join([lines[0][2:], *lines[1:]])))

    def num(value: str | None) -> int:
        try:
            return int(value or 0)
        except ValueError:
            return 0

    out = []
    for row in rows:
        if row.get("svname") in ("FRONTEND", "BACKEND") or row.get("type") not in (None, "2"):
            continue
        out.append(ServerStat(backend=row["pxname"], server=row["svname"],
                              status=row.get("status") or "", sessions=num(row.get("scur")),
                              queued=num(row.get("qcur")), total=num(row.get("stot")),
                              weight=num(row.get("weight")),
                              # "* L4CON": the star marks a check still in progress
                              check_status=(row.get("check_status") or "").lstrip("* "),
                              check_desc=row.get("check_desc") or "", address=row.get("addr") or ""))
    return out


class HAProxyBalancer:
    """The `Balancer` of a roll for `kind = "haproxy"`: drain/ready through the runtime API."""

    def __init__(self, settings: BalancerSettings, service: str):
        self.settings = settings
        self.api = RuntimeAPI(settings.socket, setting=f"{settings.at}.socket")
        self.backend = settings.backend_for(service)

    def _server(self, ctx: HookContext) -> str:
        return self.settings.server_for(ctx.node or "", ctx.address, ctx.zone)

    def check(self, nodes: list[HookContext]) -> None:
        """Before anything is touched: the socket answers and every node has its server."""
        names = {s.server for s in self.api.servers(self.backend)}
        missing = [f"{self._server(c)} (node {c.node})" for c in nodes if self._server(c) not in names]
        if missing:
            raise BalancerError(
                f"backend {self.backend} of the HAProxy at {self.api.path} has no server for "
                f"{', '.join(missing)}; its servers: {', '.join(sorted(names)) or 'none'} "
                f"(set {self.settings.at}.server to map node names, e.g. \"{{name}}\")")

    def drain(self, ctx: HookContext, cancel: threading.Event | None = None) -> str:
        """Stop new requests to the node and wait for those in flight; a line saying how it went."""
        server = self._server(ctx)
        t0 = time.monotonic()
        self.api.set_state(self.backend, server, "drain")
        left = self.api.wait_drained(self.backend, server, self.settings.drain_timeout, cancel)
        took = time.monotonic() - t0
        if left:
            return (f"{self.backend}/{server}: {left} session(s) still open after "
                    f"{self.settings.drain_timeout:g}s (drain_timeout); going on")
        return f"{self.backend}/{server} drained in {took:.1f}s"

    def ready(self, ctx: HookContext, cancel: threading.Event | None = None) -> str:
        """Let the node take traffic again; returns once HAProxy sees it UP, else drains it and raises."""
        server = self._server(ctx)
        t0 = time.monotonic()
        self.api.set_state(self.backend, server, "ready")
        s = self.api.wait_up(self.backend, server, self.settings.ready_timeout, cancel)
        if s.up:
            return f"{self.backend}/{server} UP in HAProxy after {time.monotonic() - t0:.1f}s"
        # Not UP: keep it out of traffic, so stopping its container later drops nothing.
        try:
            self.api.set_state(self.backend, server, "drain")
        except DockshipError:
            pass
        why = "interrupted" if cancel is not None and cancel.is_set() else \
            f"not UP within {self.settings.ready_timeout:g}s (ready_timeout)"
        raise BalancerError(f"HAProxy: {s.describe()}, {why}")
