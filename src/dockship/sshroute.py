"""How an `ssh://` engine is reached: dockship.toml first, then ssh_config, through Fabric.

Fabric's `Connection` reads the ssh_config entry of the URL's host (a Host
alias, HostName, User, Port, IdentityFile, ProxyJump) and turns ProxyJump
into a chain of gateway connections. This module builds that chain and then
sets, on every hop, what dockship decides itself:

- who: the URL's user, else `ssh.user` (nodes only), else ssh_config's
  User for that host, else the local user; the URL's port, else
  ssh_config's Port, else 22;
- which keys: `ssh.key` if set (the one key file offered, to nodes and jump
  hosts alike), else the host's IdentityFile lines that exist, else the
  default `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa` that exist; plus the
  keys of the ssh-agent at `SSH_AUTH_SOCK` unless `ssh.agent = false`;
- which host keys: `ssh.known_hosts`, else the host's UserKnownHostsFile,
  else `~/.ssh/known_hosts`, checked strictly on every hop: an unknown or
  changed key is refused (StrictHostKeyChecking in ssh_config is ignored),
  never added, so a first connection cannot be silently hijacked.

ssh_config comes from `ssh.config` (a path), or ssh(1)'s own files
(`/etc/ssh/ssh_config`, `~/.ssh/config`), or none with `ssh.config = false`.
A ProxyCommand is refused: it is a shell command, and dockship runs no shell
string; ProxyJump does the same job. Nothing here opens a connection.
"""

from __future__ import annotations

import getpass
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import fabric
import paramiko

from dockship.config import SSHSettings
from dockship.errors import Unreachable, UsageError

DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")
SYSTEM_SSH_CONFIG = Path("/etc/ssh/ssh_config")


class HostKeyRejected(Unreachable):
    """The server's host key is not the one (or not any one) in known_hosts.

    Exit 2, not 1: nothing is wrong with the server, the fix is in the
    configuration (the known-hosts file), and nothing was touched.
    """

    exit_code = 2


@dataclass(frozen=True)
class SSHTarget:
    """What an `ssh://[user@]host[:port]` engine URL names; user and port may be left to ssh_config."""

    user: str | None
    host: str
    port: int | None

    @classmethod
    def parse(cls, url: str) -> SSHTarget:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "ssh" or not parts.hostname:
            raise UsageError(f"{url!r} is not an ssh://user@host[:port] engine URL")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise UsageError(f"{url!r}: an ssh engine URL takes no path or query")
        try:
            port = parts.port
        except ValueError as exc:
            raise UsageError(f"{url!r}: bad port ({exc})") from None
        return cls(user=parts.username or None, host=parts.hostname, port=port)


def describe(conn: fabric.Connection) -> str:
    """`ssh://user@host[:port]` as actually dialled (after ssh_config)."""
    host = f"[{conn.host}]" if ":" in conn.host else conn.host
    return f"ssh://{conn.user}@{host}" + ("" if int(conn.port) == 22 else f":{conn.port}")


def hops(conn: fabric.Connection) -> list[fabric.Connection]:
    """The jump hosts, first one first, then the node itself: the order to open them in."""
    chain = [conn]
    while isinstance(chain[-1].gateway, fabric.Connection):
        chain.append(chain[-1].gateway)
    return chain[::-1]


def load_ssh_config(settings: SSHSettings) -> paramiko.SSHConfig:
    """The ssh_config dockship reads: `ssh.config`, else ssh(1)'s files, or none."""
    config = paramiko.SSHConfig()
    if not settings.read_config:
        return config
    files = [settings.config] if settings.config else \
        [SYSTEM_SSH_CONFIG, Path(os.path.expanduser("~/.ssh/config"))]
    for path in files:
        if settings.config is None and not path.exists():
            continue
        try:
            with open(path, encoding="utf-8") as f:
                config.parse(f)
        except (OSError, UnicodeDecodeError, paramiko.ConfigParseError, ValueError) as exc:
            raise UsageError(f"ssh_config {path} cannot be read ({exc}); fix it, point "
                             f"ssh.config at another file, or set ssh.config = false") from None
    return config


def connection(url: str, settings: SSHSettings, *, connect_timeout: float) -> fabric.Connection:
    """The node's Connection, its gateways configured too; nothing is opened yet."""
    target = SSHTarget.parse(url)
    config = fabric.Config(ssh_config=load_ssh_config(settings), lazy=True)
    try:
        conn = fabric.Connection(target.host, user=target.user or settings.user,
                                 port=target.port, config=config)
        _jump_in_order(conn, config)
    except RecursionError:
        raise UsageError(f"{url}: the ProxyJump lines of ssh_config loop (a jump host that "
                         f"jumps through itself?); exclude it, e.g. `Host * !bastion`") from None
    except (ValueError, paramiko.SSHException) as exc:
        raise UsageError(f"{url}: ssh_config entry for {target.host} is unusable ({exc})") from None
    agent = agent_usable(settings)
    pkey = _explicit_key(settings.key, agent) if settings.key else None
    for hop in hops(conn):
        if isinstance(hop.gateway, str):
            raise UsageError(
                f"{url}: ssh_config gives {hop.original_host} a ProxyCommand, which dockship "
                f"does not run (it is a shell command); use ProxyJump instead")
        _configure(hop, settings, pkey=pkey, agent=agent, connect_timeout=connect_timeout)
    return conn


def _jump_in_order(conn: fabric.Connection, config: fabric.Config) -> None:
    """Rebuild a ProxyJump chain in OpenSSH's order: `a,b` visits a, then b through a.

    Fabric 3.2 chains several hops the other way round (b first). The first
    hop's own ssh_config may give it a jump host of its own, as with ssh(1);
    `ProxyJump none` means a direct connection.
    """
    spec = conn.ssh_config.get("proxyjump")
    if spec is None:
        return
    gateway = None
    if spec.strip().lower() != "none":
        for hop in spec.split(","):
            gateway = fabric.Connection(hop.strip(), config=config.clone(), gateway=gateway)
    conn.gateway = gateway


def agent_usable(settings: SSHSettings) -> bool:
    return settings.agent and bool(os.environ.get("SSH_AUTH_SOCK"))


def known_hosts_path(conn: fabric.Connection, settings: SSHSettings) -> Path:
    if settings.known_hosts:
        return settings.known_hosts
    listed = conn.ssh_config.get("userknownhostsfile", "").split()
    return Path(os.path.expanduser(listed[0] if listed else "~/.ssh/known_hosts"))


def key_files(conn: fabric.Connection) -> list[Path]:
    """Key files for a host without `ssh.key`: its IdentityFile lines, else the defaults."""
    listed = [Path(os.path.expanduser(p)) for p in conn.ssh_config.get("identityfile", [])]
    if not listed:
        home = Path(os.path.expanduser("~/.ssh"))
        listed = [home / name for name in DEFAULT_KEYS]
    return [p for p in listed if p.exists()]


def _configure(conn: fabric.Connection, settings: SSHSettings, *, pkey: paramiko.PKey | None,
               agent: bool, connect_timeout: float) -> None:
    """Our client (host keys from one file, unknown hosts refused) and our auth on one hop."""
    known = known_hosts_path(conn, settings)
    client = paramiko.SSHClient()
    for hostname, keys in _load_known_hosts(known).items():
        for key in keys.values():
            client.get_host_keys().add(hostname, key.get_name(), key)
    client.set_missing_host_key_policy(RefuseUnknownHost(conn, known))
    conn.client = client
    files = [] if settings.key else key_files(conn)
    if pkey is None and not files and not agent:
        raise UsageError(
            f"{describe(conn)}: no SSH key to offer; set ssh.key, give the host an IdentityFile "
            f"in ssh_config, or load the key into an ssh-agent (SSH_AUTH_SOCK)")
    kwargs = dict(look_for_keys=False, allow_agent=agent, banner_timeout=connect_timeout,
                  auth_timeout=connect_timeout, channel_timeout=connect_timeout)
    if pkey is not None:
        kwargs["pkey"] = pkey
    if files:
        kwargs["key_filename"] = [str(p) for p in files]
    conn.connect_kwargs = kwargs
    conn.connect_timeout = connect_timeout


def offered(conn: fabric.Connection, settings: SSHSettings) -> str:
    """What a hop is offered, for the "not accepted" message."""
    agent = agent_usable(settings)
    names = [str(p) for p in ([settings.key] if settings.key else key_files(conn))]
    what = f"key {', '.join(names)}" if names else ""
    if agent:
        what = f"{what} or the ssh-agent's keys" if what else "the ssh-agent's keys"
    return what or "no key"


class RefuseUnknownHost(paramiko.RejectPolicy):
    """RejectPolicy that says which file lacks the host and how to add it safely."""

    def __init__(self, conn: fabric.Connection, known_hosts: Path):
        self.conn = conn
        self.known_hosts = known_hosts

    def missing_host_key(self, client, hostname, key):
        raise HostKeyRejected(
            f"{describe(self.conn)}: host key {key.get_name()} {key.fingerprint} is not in "
            f"{self.known_hosts}; add the host's key there (ssh-keyscan -p {self.conn.port} "
            f"{self.conn.host}) after checking that fingerprint")


def _explicit_key(path: Path, agent: bool) -> paramiko.PKey | None:
    """`ssh.key`, loaded now so a bad file is named; a passphrase-protected one is left to
    the agent (which then must hold it)."""
    try:
        return paramiko.PKey.from_path(path)
    except FileNotFoundError:
        raise UsageError(f"SSH key {path} does not exist") from None
    except (paramiko.PasswordRequiredException, TypeError):
        # paramiko 5 lets cryptography's TypeError through for an encrypted OpenSSH key
        if agent:
            return None
        raise UsageError(f"SSH key {path} is passphrase-protected; load it into an ssh-agent "
                         f"(ssh-add) or use an unencrypted deploy key") from None
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
                         f"hosts' keys (ssh-keyscan HOST, after checking them)") from None
    except OSError as exc:
        raise UsageError(f"known_hosts file {path} cannot be read: {exc}") from None
    return keys


__all__ = ["HostKeyRejected", "RefuseUnknownHost", "SSHTarget", "connection", "describe", "hops",
           "load_ssh_config", "offered"]
