"""Docker Engine API over SSH with exactly the key and known-hosts file we are given.

docker-py's own `ssh://` adapter (use_ssh_client=False) builds its paramiko
client itself: it trusts `~/.ssh/known_hosts` (plus `~/.ssh/config`), offers
every key in `~/.ssh` and the agent, and takes no parameter to change that.
dockship must connect with the key and known-hosts file its configuration
names (the lab's, or a CI deploy key), so this module opens the SSH
connection itself and runs `docker system dial-stdio` on a channel per HTTP
connection, which is what the docker CLI and docker-py do on the far side.

docker-py is given a private unix socket (in a directory only we can enter)
whose every connection is relayed to a fresh dial-stdio channel: to docker-py
it is a local engine, reached through its public API (`unix://PATH`), with
attach, exec and logs streams working as they do locally. No internals of
docker-py, requests or urllib3 are used (issue 8).

Host keys are checked strictly: a host missing from the given file is
refused, never added, so a first connection cannot be silently hijacked.
"""

from __future__ import annotations

import getpass
import http.client
import json
import logging
import os
import shutil
import socket
import tempfile
import threading
import urllib.parse
import weakref
from dataclasses import dataclass
from pathlib import Path

import docker
import paramiko

from dockship.errors import Unreachable, UsageError
from dockship.failures import reason

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


class HostKeyRejected(Unreachable):
    """The server's host key is not the one (or not any one) in known_hosts.

    Exit 2, not 1: nothing is wrong with the server, the fix is in the
    configuration (the known-hosts file), and nothing was touched.
    """

    exit_code = 2


@dataclass(frozen=True)
class SSHTarget:
    """Where an `ssh://user@host[:port]` engine URL points."""

    user: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> SSHTarget:
        """Parse an engine URL; the user defaults to ours, as ssh(1) does."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "ssh" or not parts.hostname:
            raise UsageError(f"{url!r} is not an ssh://user@host[:port] engine URL")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise UsageError(f"{url!r}: an ssh engine URL takes no path or query")
        try:
            port = parts.port or 22
        except ValueError as exc:
            raise UsageError(f"{url!r}: bad port ({exc})") from None
        return cls(user=parts.username or getpass.getuser(), host=parts.hostname, port=port)

    @property
    def known_hosts_name(self) -> str:
        """How OpenSSH (and paramiko) name this host in known_hosts."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ssh://{self.user}@{host}" + ("" if self.port == 22 else f":{self.port}")


def ssh_docker_client(node_docker_url: str, key: Path, known_hosts: Path, *,
                      timeout: float = 60.0, connect_timeout: float = 10.0,
                      max_channels: int = DEFAULT_MAX_CHANNELS) -> docker.DockerClient:
    """A DockerClient for an `ssh://` engine, authenticated by `key` alone.

    `timeout` bounds each API call (as in docker-py); `connect_timeout` bounds
    the TCP connect, the SSH handshake and the authentication. The engine is
    asked for its API version before returning, so an unusable endpoint fails
    here with one clear error rather than at the first real call. Closing the
    client closes the SSH connection and removes the relay's socket.
    """
    target = SSHTarget.parse(node_docker_url)
    tunnel = DialStdioTunnel(target, key=Path(key), known_hosts=Path(known_hosts),
                             connect_timeout=connect_timeout)
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

    def __init__(self, target: SSHTarget, *, key: Path, known_hosts: Path,
                 connect_timeout: float):
        self.target = target
        self._key = _load_key(key)
        self._key_path = key
        self._known_hosts = _load_known_hosts(known_hosts)
        self._known_hosts_path = known_hosts
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._ssh: paramiko.SSHClient | None = None
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
                                          name=f"dockship-relay {target}")
        self._acceptor.start()

    # -- SSH connection ----------------------------------------------------

    def _connect(self) -> paramiko.SSHClient:
        """Open the SSH connection, checking the host key against our file only."""
        client = paramiko.SSHClient()
        for hostname, keys in self._known_hosts.items():
            for key in keys.values():
                client.get_host_keys().add(hostname, key.get_name(), key)
        client.set_missing_host_key_policy(
            _RefuseUnknownHost(self.target, self._known_hosts_path))
        try:
            client.connect(self.target.host, port=self.target.port, username=self.target.user,
                           pkey=self._key, look_for_keys=False, allow_agent=False,
                           timeout=self._connect_timeout, banner_timeout=self._connect_timeout,
                           auth_timeout=self._connect_timeout,
                           channel_timeout=self._connect_timeout)
        except HostKeyRejected:
            client.close()
            raise
        except Exception as exc:
            client.close()
            raise self._explain(exc) from exc
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(30)  # long rolls must not lose an idle connection to NAT/firewalls
        self._ssh = client
        return client

    def _explain(self, exc: Exception) -> Exception:
        """Turn paramiko's and the socket layer's errors into one line for the user."""
        where = str(self.target)
        if isinstance(exc, paramiko.BadHostKeyException):
            return HostKeyRejected(
                f"{where}: host key {exc.key.fingerprint} differs from the one in "
                f"{self._known_hosts_path} ({exc.expected_key.fingerprint}); if the host was "
                f"re-created, replace its line there after checking the new key")
        if isinstance(exc, paramiko.AuthenticationException):
            return Unreachable(f"{where}: key {self._key_path} was not accepted "
                               f"({exc}); add its public key to the user's authorized_keys")
        if isinstance(exc, (paramiko.SSHException, OSError, EOFError)):
            return Unreachable(f"{where}: cannot open an SSH connection: {reason(exc)}")
        return exc

    def _transport(self) -> paramiko.Transport:
        with self._lock:
            ssh = self._ssh
            transport = ssh.get_transport() if ssh is not None else None
            if transport is None or not transport.is_active():
                if ssh is not None:
                    ssh.close()
                transport = self._connect().get_transport()
            assert transport is not None
            return transport

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
            if self._ssh is not None:
                self._ssh.close()      # ends every channel, and so every relay
                self._ssh = None


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


class _RefuseUnknownHost(paramiko.RejectPolicy):
    """RejectPolicy that says which file lacks the host and how to add it safely."""

    def __init__(self, target: SSHTarget, known_hosts: Path):
        self.target = target
        self.known_hosts = known_hosts

    def missing_host_key(self, client, hostname, key):
        raise HostKeyRejected(
            f"{self.target}: host key {key.get_name()} {key.fingerprint} is not in "
            f"{self.known_hosts}; add the host's key there (ssh-keyscan -p {self.target.port} "
            f"{self.target.host}) after checking that fingerprint")


def _load_key(path: Path) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(path)
    except FileNotFoundError:
        raise UsageError(f"SSH key {path} does not exist") from None
    except paramiko.PasswordRequiredException:
        raise UsageError(f"SSH key {path} is passphrase-protected; dockship needs an "
                         f"unencrypted deploy key") from None
    except (paramiko.SSHException, OSError, ValueError) as exc:
        raise UsageError(f"SSH key {path} cannot be read: {exc}") from None


def _load_known_hosts(path: Path) -> paramiko.HostKeys:
    # Read-only: paramiko's load_host_keys() would remember the file and could
    # write it back; we only ever check against it.
    keys = paramiko.HostKeys()
    try:
        keys.load(str(path))
    except FileNotFoundError:
        raise UsageError(f"known_hosts file {path} does not exist; create it with the "
                         f"nodes' host keys") from None
    except OSError as exc:
        raise UsageError(f"known_hosts file {path} cannot be read: {exc}") from None
    return keys


__all__ = ["DIAL_STDIO", "DialStdioTunnel", "HostKeyRejected", "SSHTarget", "ssh_docker_client"]
