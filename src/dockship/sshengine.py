"""Docker Engine API over SSH, with the keys, host keys and jump hosts we decide.

docker-py's own `ssh://` adapter (use_ssh_client=False) builds its paramiko
client itself: it trusts `~/.ssh/known_hosts`, offers every key in `~/.ssh`
and the agent, knows no ProxyJump, and takes no parameter to change that.
dockship must connect with the key and known-hosts file its configuration
names (the lab's, or a CI deploy key), and through the jump hosts that
ssh_config names, so this module opens the SSH connection itself, as a
Fabric `Connection` that `dockship.sshroute` resolved and configured, and
runs `docker system dial-stdio` (a fixed command, never built from
configuration) on a channel per HTTP connection, which is what the docker
CLI and docker-py do on the far side.

docker-py is given a private unix socket (in a directory only we can enter)
whose every connection is relayed to a fresh dial-stdio channel: to docker-py
it is a local engine, reached through its public API (`unix://PATH`), with
attach, exec and logs streams working as they do locally. No internals of
docker-py, requests or urllib3 are used (issue 8).

Host keys are checked strictly on every hop (see `sshroute`): a host
missing from the known-hosts file is refused, never added.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import weakref
from pathlib import Path

import docker
import fabric
import paramiko

from dockship import sshroute
from dockship.config import SSHSettings
from dockship.errors import Unreachable
from dockship.failures import reason
from dockship.sshroute import HostKeyRejected

# What the far side runs for each HTTP connection: it relays stdin/stdout to
# the engine named by DOCKER_HOST there (or the default socket).
DIAL_STDIO = "docker system dial-stdio"

# paramiko's transport thread logs a traceback for every failed handshake;
# with no logging configured Python prints it on stderr next to our own
# one-line error. A NullHandler keeps that out of the terminal while an
# application that configures logging still receives the records.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

# sshd's default MaxSessions is 10 channels per connection; stay under it so
# a busy client does not see "open failed" from a stock server.
DEFAULT_MAX_CHANNELS = 8

_RELAY_CHUNK = 1 << 16


def ssh_docker_client(node_docker_url: str, key: Path | None = None,
                      known_hosts: Path | None = None, *, ssh: SSHSettings | None = None,
                      timeout: float = 60.0, connect_timeout: float = 10.0,
                      max_channels: int = DEFAULT_MAX_CHANNELS) -> docker.DockerClient:
    """A DockerClient for an `ssh://` engine, reached as `dockship.sshroute` resolves it.

    `ssh` is the environment's `[ssh]` table; `key` and `known_hosts`, when
    given, replace its values. `timeout` bounds each API call (as in
    docker-py); `connect_timeout` bounds the TCP connect, the SSH handshake
    and the authentication of every hop. The engine is asked for its API
    version before returning, so an unusable endpoint fails here with one
    clear error rather than at the first real call. Closing the client closes
    the SSH connections and removes the relay's socket.
    """
    settings = ssh or SSHSettings()
    settings = dataclasses.replace(settings, key=key or settings.key,
                                   known_hosts=known_hosts or settings.known_hosts)
    conn = sshroute.connection(node_docker_url, settings, connect_timeout=connect_timeout)
    tunnel = DialStdioTunnel(conn, settings, connect_timeout=connect_timeout)
    try:
        api_version = tunnel.engine_api_version(timeout=timeout)
        return _TunnelledClient(tunnel, base_url=f"unix://{tunnel.path}", version=api_version,
                                timeout=timeout, max_pool_size=max_channels)
    except BaseException:
        tunnel.close()
        raise


class _TunnelledClient(docker.DockerClient):
    """A DockerClient on a tunnel's socket that closes the tunnel with itself."""

    def __init__(self, tunnel: DialStdioTunnel, **kwargs):
        super().__init__(**kwargs)
        self.tunnel = tunnel

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.tunnel.close()


class DialStdioTunnel:
    """One SSH connection, and a private unix socket relaying each connection to a new
    dial-stdio channel on it. The SSH connection is re-opened if it drops (an sshd
    restart on the node must not need a new client)."""

    def __init__(self, conn: fabric.Connection, settings: SSHSettings, *,
                 connect_timeout: float):
        self._conn = conn
        self._hops = sshroute.hops(conn)      # jump hosts first, the node last
        self._settings = settings
        jumps = [sshroute.describe(hop) for hop in self._hops[:-1]]
        self.target = sshroute.describe(conn) + "".join(f" via {j}" for j in jumps[::-1])
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._dir = tempfile.mkdtemp(prefix="dockship-engine-")      # mode 0700: ours alone
        self.path = os.path.join(self._dir, "docker.sock")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._listener.bind(self.path)
            self._listener.listen(64)
            self._connect()
        except BaseException:
            self._listener.close()
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        # A process that exits without closing (an error path) still removes the directory.
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._dir, True)
        self._closed = threading.Event()
        self._acceptor = threading.Thread(target=self._accept, daemon=True,
                                          name=f"dockship-relay {self.target}")
        self._acceptor.start()

    # -- SSH connection ----------------------------------------------------

    def _connect(self) -> paramiko.Transport:
        """Open (or re-open) every hop that is not connected, the first jump host first.

        Fabric opens a hop's gateway itself; opening them in order here lets
        a failure be named after the hop it happened on.
        """
        for hop in self._hops:
            if hop.is_connected:
                continue
            hop.client.close()           # a dropped connection's leftovers, if any
            try:
                hop.open()
            except HostKeyRejected as exc:
                hop.client.close()
                if hop is self._conn:
                    raise
                raise HostKeyRejected(f"jump host {exc} (the way to "
                                      f"{sshroute.describe(self._conn)})") from None
            except Exception as exc:
                hop.client.close()
                raise self._explain(hop, exc) from exc
            # long rolls must not lose an idle connection to NAT/firewalls
            hop.transport.set_keepalive(30)
        return self._conn.transport

    def _explain(self, hop: fabric.Connection, exc: Exception) -> Exception:
        """Turn paramiko's and the socket layer's errors into one line for the user."""
        where = self.target if hop is self._conn else \
            f"jump host {sshroute.describe(hop)} (to {self.target})"
        if isinstance(exc, paramiko.BadHostKeyException):
            known = sshroute.known_hosts_path(hop, self._settings)
            return HostKeyRejected(
                f"{where}: host key {exc.key.fingerprint} differs from the one in "
                f"{known} ({exc.expected_key.fingerprint}); if the host was "
                f"re-created, replace its line there after checking the new key")
        # paramiko says "No authentication methods available" (a plain SSHException) when
        # nothing could be offered at all, e.g. an ssh-agent holding no key.
        if isinstance(exc, paramiko.AuthenticationException) or \
                str(exc) == "No authentication methods available":
            return Unreachable(f"{where}: user {hop.user} was not accepted with "
                               f"{sshroute.offered(hop, self._settings)} ({exc}); add the public "
                               f"key to that user's authorized_keys")
        if isinstance(exc, (paramiko.SSHException, OSError, EOFError)):
            return Unreachable(f"{where}: cannot open an SSH connection: {reason(exc)}")
        return exc

    def _transport(self) -> paramiko.Transport:
        with self._lock:
            if self._conn.is_connected:
                return self._conn.transport
            return self._connect()

    def _open_channel(self) -> paramiko.Channel:
        """A fresh channel whose stdin/stdout is a raw connection to the far engine.

        A connection the server has dropped can still look active until
        paramiko notices; one failed channel therefore buys one reconnect.
        """
        for attempt in (1, 2):
            transport = self._transport()
            try:
                channel = transport.open_session(timeout=self._connect_timeout)
                channel.exec_command(DIAL_STDIO)
                return channel
            except (paramiko.SSHException, OSError, EOFError) as exc:
                transport.close()
                if attempt == 2:
                    raise Unreachable(f"{self.target}: cannot run {DIAL_STDIO!r}: {exc}") from exc
        raise AssertionError("unreachable")

    def engine_api_version(self, *, timeout: float) -> str:
        """The engine's API version, proving dial-stdio really reaches an engine."""
        status, body = None, None
        try:
            channel = self._open_channel()
            try:
                channel.settimeout(timeout)
                channel.sendall(b"GET /version HTTP/1.0\r\nHost: docker\r\n\r\n")
                response = http.client.HTTPResponse(channel)   # reads channel.makefile("rb")
                response.begin()
                status = response.status
                body = json.loads(response.read()) if status == 200 else None
            finally:
                channel.close()
        except (http.client.HTTPException, OSError, EOFError, ValueError,
                paramiko.SSHException) as exc:
            raise Unreachable(
                f"{self.target}: no Docker engine answered through {DIAL_STDIO!r} ({reason(exc)}); "
                f"check that the engine runs there, the docker CLI is installed and "
                f"DOCKER_HOST (if set) names the engine") from exc
        if not isinstance(body, dict) or "ApiVersion" not in body:
            raise Unreachable(f"{self.target}: GET /version through {DIAL_STDIO!r} answered "
                              f"HTTP {status}, not an engine's version")
        return str(body["ApiVersion"])

    # -- the relay ---------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                local, _ = self._listener.accept()
            except OSError:
                return
            if self._closed.is_set():
                local.close()
                return
            threading.Thread(target=self._relay, args=(local,), daemon=True,
                             name=f"dockship-relay {self.target}").start()

    def _relay(self, local: socket.socket) -> None:
        """Copy both ways between a local connection and its channel; each side's end of
        input is passed on as a half-close, so HTTP and hijacked streams end cleanly."""
        try:
            channel = self._open_channel()
        except Exception:  # noqa: BLE001 - docker-py sees the connection close, and says so
            local.close()
            return
        upstream = threading.Thread(target=_copy, daemon=True,
                                    args=(local.recv, channel.sendall, channel.shutdown_write))
        upstream.start()
        _copy(channel.recv, local.sendall, lambda: local.shutdown(socket.SHUT_WR))
        upstream.join()
        _quietly(channel.close)
        local.close()

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            # Wake the acceptor before closing: a thread blocked in accept() on a closed
            # socket would otherwise wait on, and could take, a later socket's descriptor.
            try:
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._acceptor.join(timeout=5)
            self._listener.close()
            self._cleanup()
        with self._lock:
            for hop in reversed(self._hops):
                hop.client.close()     # ends every channel, and so every relay


def _copy(read, write, done) -> None:
    """Copy until `read` ends or either side fails, then `done` (a half-close)."""
    try:
        while data := read(_RELAY_CHUNK):
            write(data)
    except (OSError, EOFError, paramiko.SSHException):
        pass      # the connection is gone: the other side sees it end
    finally:
        _quietly(done)


def _quietly(action) -> None:
    """Closing a side of a relay that is already gone (the SSH connection dropped) is no error."""
    try:
        action()
    except (OSError, EOFError, paramiko.SSHException):
        pass


__all__ = ["DIAL_STDIO", "DialStdioTunnel", "HostKeyRejected", "ssh_docker_client"]
