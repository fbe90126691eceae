"""Docker Engine API over SSH with exactly the key and known-hosts file we are given.

docker-py's own `ssh://` adapter (use_ssh_client=False) builds its paramiko
client itself: it trusts `~/.ssh/known_hosts` (plus `~/.ssh/config`), offers
every key in `~/.ssh` and the agent, and takes no parameter to change that.
dockship must connect with the key and known-hosts file its configuration
names (the lab's, or a CI deploy key), so this module opens the SSH
connection itself and carries HTTP over a `docker system dial-stdio` channel,
which is the same thing the docker CLI and docker-py do on the far side.

Host keys are checked strictly: a host missing from the given file is
refused, never added, so a first connection cannot be silently hijacked.

What this borrows beyond public APIs (issue 8; each is checked by
tests/unit/test_sshengine_internals.py, so versions are bounded by a test):

* docker-py: `APIClient` is a `requests.Session` (we `mount` our adapter on
  it and set its `base_url`); the base URL `http+docker://ssh` makes
  `_get_raw_response_socket` read `response.raw._fp.fp.channel` for
  attach/exec/logs; a client given `version=` contacts nothing when made
  (the `tcp://127.0.0.1:1` placeholder).
* requests: the adapter hooks `get_connection_with_tls_context` (>= 2.32.2),
  `get_connection` (older), `request_url`.
* urllib3: a pool's `ConnectionCls` and its `**conn_kw` reaching the
  connection; `HTTPConnection.connect` setting `self.sock`, its `timeout`,
  and the `is_connected` property (2.x).

The way out of all of them is a relay: a private unix socket whose every
connection is a fresh dial-stdio channel, given to docker-py as
`unix://PATH` (public API end to end).
"""

from __future__ import annotations

import getpass
import logging
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import docker
import paramiko
import requests.adapters
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions

from dockship.errors import Unreachable, UsageError
from dockship.failures import reason

# What the far side runs for each HTTP connection: it relays stdin/stdout to
# the engine named by DOCKER_HOST there (or the default socket).
DIAL_STDIO = "docker system dial-stdio"

# docker-py treats a base URL starting with this as its SSH transport, e.g.
# when it digs the channel out of a response to hijack it for attach/exec.
_BASE_URL = "http+docker://ssh"

# paramiko's transport thread logs a traceback for every failed handshake;
# with no logging configured Python prints it on stderr next to our own
# one-line error. A NullHandler keeps that out of the terminal while an
# application that configures logging still receives the records.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

# sshd's default MaxSessions is 10 channels per connection; stay under it so
# a busy client does not see "open failed" from a stock server.
DEFAULT_MAX_CHANNELS = 8


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
    here with one clear error rather than at the first real call.
    """
    target = SSHTarget.parse(node_docker_url)
    adapter = DialStdioAdapter(target, key=Path(key), known_hosts=Path(known_hosts),
                               connect_timeout=connect_timeout, max_channels=max_channels)
    try:
        api_version = adapter.engine_api_version(timeout=timeout)
        # docker-py insists on building its own transport from base_url; give
        # it a loopback placeholder that is never contacted (the version is
        # given, so it makes no request) and point it at our adapter instead.
        client = docker.DockerClient(base_url="tcp://127.0.0.1:1", version=api_version,
                                     timeout=timeout)
    except BaseException:
        adapter.close()
        raise
    client.api.mount(_BASE_URL, adapter)
    client.api.base_url = _BASE_URL
    return client


class DialStdioAdapter(requests.adapters.HTTPAdapter):
    """requests adapter: every HTTP connection is one SSH channel running dial-stdio.

    One SSH connection is shared by all channels and re-opened if it drops
    (an sshd restart on the node must not need a new client).
    """

    def __init__(self, target: SSHTarget, *, key: Path, known_hosts: Path,
                 connect_timeout: float, max_channels: int):
        super().__init__()
        self.target = target
        self._key = _load_key(key)
        self._key_path = key
        self._known_hosts = _load_known_hosts(known_hosts)
        self._known_hosts_path = known_hosts
        self._connect_timeout = connect_timeout
        self._lock = threading.Lock()
        self._ssh: paramiko.SSHClient | None = None
        self._pool = _DialStdioPool(self._open_channel, maxsize=max_channels)
        self._connect()

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

    def _open_channel(self, timeout: float | None) -> paramiko.Channel:
        """A fresh channel whose stdin/stdout is a raw connection to the far engine.

        A connection the server has dropped can still look active until
        paramiko notices; one failed channel therefore buys one reconnect.
        """
        for attempt in (1, 2):
            transport = self._transport()
            try:
                channel = transport.open_session(timeout=self._connect_timeout)
                channel.settimeout(timeout)
                channel.exec_command(DIAL_STDIO)
                return channel
            except (paramiko.SSHException, OSError, EOFError) as exc:
                transport.close()
                if attempt == 2:
                    raise Unreachable(f"{self.target}: cannot run {DIAL_STDIO!r}: {exc}") from exc
        raise AssertionError("unreachable")

    # -- requests adapter --------------------------------------------------

    def engine_api_version(self, *, timeout: float) -> str:
        """The engine's API version, proving dial-stdio really reaches an engine."""
        try:
            response = self._pool.urlopen("GET", "/version", timeout=timeout, retries=False)
            body = response.json() if response.status == 200 else None
        except (urllib3.exceptions.HTTPError, OSError, ValueError) as exc:
            raise Unreachable(
                f"{self.target}: no Docker engine answered through {DIAL_STDIO!r} ({reason(exc)}); "
                f"check that the engine runs there, the docker CLI is installed and "
                f"DOCKER_HOST (if set) names the engine") from exc
        if not body or "ApiVersion" not in body:
            raise Unreachable(f"{self.target}: GET /version through {DIAL_STDIO!r} answered "
                              f"HTTP {response.status}, not an engine's version")
        return str(body["ApiVersion"])

    def get_connection_with_tls_context(self, request, verify, proxies=None, cert=None):
        return self._pool

    def get_connection(self, url, proxies=None):  # requests < 2.32
        return self._pool

    def request_url(self, request, proxies):
        return request.path_url

    def close(self) -> None:
        self._pool.close()
        with self._lock:
            if self._ssh is not None:
                self._ssh.close()
                self._ssh = None
        super().close()


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


class _DialStdioConnection(urllib3.connection.HTTPConnection):
    """An HTTP connection whose socket is an SSH channel."""

    def __init__(self, *args, open_channel: Callable[[float | None], paramiko.Channel],
                 **kwargs):
        super().__init__(*args, **kwargs)
        self._open_channel = open_channel

    def connect(self) -> None:
        timeout = self.timeout if isinstance(self.timeout, (int, float)) else None
        self.sock = self._open_channel(timeout)

    @property
    def is_connected(self) -> bool:
        # urllib3's check polls the socket's fileno(); a paramiko channel
        # makes a pipe pair for that, so answer from the channel's state.
        channel = self.sock
        return (channel is not None and not channel.closed
                and not channel.eof_received and not channel.exit_status_ready())


class _DialStdioPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _DialStdioConnection

    def __init__(self, open_channel: Callable[[float | None], paramiko.Channel], *,
                 maxsize: int):
        # The host is only what goes into the Host header; the engine ignores it.
        super().__init__("docker", maxsize=maxsize, block=False,
                         open_channel=open_channel)


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


__all__ = ["DIAL_STDIO", "DialStdioAdapter", "HostKeyRejected", "SSHTarget", "ssh_docker_client"]
