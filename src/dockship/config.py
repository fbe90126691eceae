"""The configuration model: `dockship.toml` parsed into immutable records.

Everything is validated before the first network call, and every problem is
reported at once with the path of the bad key
(`environments.stage.nodes[1].docker: ...`), because a deploy tool that
fails on the third node over a typo in the config has already done harm.
The rules are design §8: numbers finite and in a documented range, names
that are safe in a terminal, a Chef query and a Docker label, URLs that
parse (IPv6 too), no engine endpoint ssh could read as an option.

The schema is the `_section`/`_service`/`_environment`… functions: each
reads its table through `_Table`'s typed reads (`name`, `number(low, high)`,
`port`, `url`, `path`…), which check the value with `dockship.checks`,
record a problem under the key's path and go on with the default. Keys a
table never asked for are reported as unknown, with a "did you mean".

Why not pydantic or msgspec: msgspec stops at the first error; pydantic
would list them all, but its messages carry its own wording and locations,
and what this file needs beyond types is most of the work: paths relative
to the file (and whether they exist), "did you mean" against the keys a
table knows, cross-key checks (`min_healthy <= timeout`, TLS files in
pairs, plain TCP only with its opt-in), warnings beside errors, and frozen
records other modules already build by hand in tests.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
import string
import tomllib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from urllib.parse import urlsplit
from typing import Any

from dockship import checks
from dockship.errors import ConfigError, UsageError, last_line, printable

DEFAULT_CONFIG = "dockship.toml"
DEFAULT_BASE_IMAGE = "python:3.12-slim"
DEFAULT_PARALLEL = 16                   # node engines talked to at once: one round for most fleets
DEFAULT_LOCK_TTL = 1800.0     # seconds a deploy lock outlives its last renewal (design §9)
NODE_SOURCES = ("nodes", "chef", "etcd", "swarm")   # an environment has exactly one
HOOK_NAMES = ("pre_roll", "pre_node", "post_node", "post_roll", "on_failure")
BUILD_HOOK_NAMES = ("pre_build", "post_build")     # in [build.hooks]: a build has no environment
HOUR = 3600.0                 # the upper bound of every timeout and window, in seconds
DAY = 86400.0
MAX_NODES = 10_000            # bound of counts of nodes (canary, batch)
MAX_ENV_VALUE = 32_768        # characters in one services.X.env value
DEFAULT_ETCD_PREFIX = "/dockship/nodes/{env}"
DEFAULT_NODE_DOCKER = "ssh://root@{address}"    # how a node found by Chef or etcd is reached


@dataclass(frozen=True)
class HealthCheck:
    path: str = "/health"
    status: int = 200
    timeout: float = 30.0       # seconds a new container has to become healthy
    min_healthy: float = 3.0    # seconds it must then stay healthy
    interval: float = 0.5       # seconds between probes once it answers (0.1 s before that)
    # what `dockship rollback` holds: the previous version already stayed healthy on this node
    # (Swarm has a separate --rollback-monitor); 0: the first good answer
    rollback_min_healthy: float = 0.0
    kind: str = "http"          # "http": GET path answers `status`; "tcp": the port accepts
    scheme: str = "http"        # "https": the probe speaks TLS (http kind)
    host: str | None = None     # Host header of the probe (a name-based virtual host)
    # https: check the certificate. Off by default: probes go to the node's address, which a
    # certificate for a service name does not match, and a probe sends nothing secret.
    verify: bool = False

    def describe(self) -> str:
        """What a probe does, for messages: `GET /health` or `TCP connect`."""
        return "TCP connect" if self.kind == "tcp" else f"GET {self.path}"


@dataclass(frozen=True)
class Publish:
    """Where a node publishes the container port: `publish = 8080` or "127.0.0.1:8080"."""

    port: int | None = None     # the host port; None: the container port
    address: str | None = None  # the host IP it is bound to; None: every interface

    def reach(self, node_address: str) -> str:
        """Where a probe from this host finds the port: the bound address when it is one
        specific, routable IP of the node, else the node's address."""
        if self.address is None:
            return node_address
        ip = ipaddress.ip_address(self.address)
        return node_address if ip.is_unspecified or ip.is_loopback else self.address

    def overlaps(self, other: Publish) -> bool:
        """Two bindings of one host port that the node could not both make."""
        return self.address is None or other.address is None or self.address == other.address \
            or ipaddress.ip_address(self.address).is_unspecified \
            or ipaddress.ip_address(other.address).is_unspecified


@dataclass(frozen=True)
class Service:
    name: str
    package: str
    image: str
    port: int                   # the container port
    role: str | None
    command: tuple[str, ...]
    env: Mapping[str, str]
    health: HealthCheck
    stop_timeout: float = 10.0  # SIGTERM, then SIGKILL after this many seconds
    retain: int = 3             # old containers kept per service for rollback
    secrets: tuple[str, ...] = ()   # environment variables whose values come from outside the file
    publish: Publish = Publish()
    template: Path | None = None    # this service's Dockerfile template; None: build.template
    base_image: str | None = None   # this service's base image; None: build.base_image

    @property
    def host_port(self) -> int:
        """The port the node publishes (what health probes and the balancer reach)."""
        return self.publish.port or self.port


@dataclass(frozen=True)
class Node:
    name: str
    docker: str                 # ssh://user@host[:port], tcp://host:port, unix:///path
    zone: str | None = None
    roles: tuple[str, ...] = ()
    address: str | None = None  # for health checks and hooks; default: the docker host

    def runs(self, role: str | None) -> bool:
        return role is None or not self.roles or role in self.roles


@dataclass(frozen=True)
class SSHSettings:
    """`[environments.E.ssh]`; these win over ssh_config (precedence: `dockship.sshroute`)."""

    user: str | None = None
    key: Path | None = None
    known_hosts: Path | None = None
    config: Path | None = None      # ssh_config to read; None: ssh(1)'s own files
    read_config: bool = True        # `config = false`: read no ssh_config at all
    agent: bool = True              # offer the keys of the ssh-agent at SSH_AUTH_SOCK


@dataclass(frozen=True)
class TLSSettings:
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    verify: bool = True

    @property
    def enabled(self) -> bool:
        """TLS is what `fleet` speaks to a tcp:// engine: a CA to trust, or a client certificate."""
        return self.ca is not None or (self.cert is not None and self.key is not None)


@dataclass(frozen=True)
class ChefSettings:
    url: str
    client: str
    key: Path
    environment: str
    docker: str = DEFAULT_NODE_DOCKER
    sign_version: str = "1.3"
    attributes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType(
        {"address": "ipaddress", "zone": "zone"}))
    verify: bool | Path = True    # the server's certificate: checked, not, or against this CA bundle


@dataclass(frozen=True)
class SwarmSettings:
    """`[environments.E] swarm = { manager = ... }`: the environment is a Docker Swarm.

    Its nodes are the swarm's own (node labels `dockship.name`, `dockship.zone`,
    `dockship.roles`), and roll, rollback, status, history and lock drive the
    swarm through this one manager endpoint (swarm.py), not each node's engine.
    """

    manager: str          # a Docker endpoint, like a node's `docker`: ssh://, tcp:// or unix://


@dataclass(frozen=True)
class EtcdSettings:
    """`etcd = { url, prefix, docker }`: nodes registered in etcd, one JSON value per key under
    `prefix` (design §13). With it, the deploy lock is an etcd lease (etcdlock.py)."""

    url: str                          # http(s)://host[:port] of an etcd member (its v3 gateway)
    prefix: str                       # keys of the environment's nodes: {prefix}/anything
    docker: str = DEFAULT_NODE_DOCKER  # a node's engine when its entry has no "docker"
    ca: Path | None = None            # https: the CA etcd's certificate is checked against
    cert: Path | None = None          # https: a client certificate (etcd --client-cert-auth)
    key: Path | None = None


@dataclass(frozen=True)
class Bake:
    """Canary bake: probe canary and baseline nodes side by side, compare, then go on."""

    seconds: float = 0.0                  # 0: no bake
    path: str | None = None               # default: the service's health path
    rate: float = 10.0                    # probe requests per second, per node
    max_error_increase: float = 0.01      # canary error rate may exceed baseline's by this much
    max_p95_ratio: float = 1.5            # canary p95 latency / baseline p95 latency
    min_p95_ms: float = 20.0              # below this, latencies are noise: never a failure


@dataclass(frozen=True)
class Rollout:
    canary: int = 1
    batch: tuple[int | str, ...] = (1,)   # ints or "25%"; the last entry repeats
    auto_rollback: bool = True
    by_zone: bool = False                 # one zone after another, batches inside each
    # true: the next batch starts once this batch's new containers answer healthy, while their
    # min_healthy window is still watched (Swarm's update-monitor); a failure inside any window
    # still fails the roll and puts every updated node back.
    overlap_min_healthy: bool = False
    zones: tuple[str, ...] = ()           # zone order; default alphabetical
    bake: Bake = Bake()


# --- balancer (issue 4: load balancer and drain) -------------------------------------
BALANCER_KINDS = ("haproxy",)
_BALANCER_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]+$")   # what HAProxy accepts in proxy/server names


@dataclass(frozen=True)
class BalancerSettings:
    """`[environments.NAME.balancer]`: take each node out of traffic around its swap."""

    kind: str                       # "haproxy": its runtime API (stats socket ... level admin)
    socket: Path                    # the runtime API's unix socket
    backend: str = "{service}"      # the backend of the service; {service} is its name
    server: str = "{name}"          # a node's server in it; {name}, {address}, {zone}
    drain_timeout: float = 10.0     # seconds to wait for a drained node's sessions to end
    ready_timeout: float = 30.0     # seconds for the balancer to see a readied node UP
    at: str = "balancer"            # this table's path, for messages

    def backend_for(self, service: str) -> str:
        return self.backend.format(service=service)

    def server_for(self, name: str, address: str | None, zone: str | None) -> str:
        return self.server.format(name=name, address=address or "", zone=zone or "")
# --- end balancer ----------------------------------------------------------------------


# --- notify (design §12) --------------------------------------------------------------
NOTIFY_RESULTS = ("succeeded", "rolled_back", "failed")
SMTP_TIMEOUT = 30.0           # seconds for each SMTP exchange (connect, each command)


@dataclass(frozen=True)
class EmailSettings:
    """One mail per report; the password is `DOCKSHIP_SMTP_PASSWORD`, never a key of the file."""

    host: str
    port: int
    sender: str
    to: tuple[str, ...]
    starttls: bool = True
    user: str | None = None
    ca: Path | None = None        # CA file the relay's certificate is checked against
    timeout: float = SMTP_TIMEOUT


@dataclass(frozen=True)
class NotifySettings:
    """[notify], with [environments.E.notify] applied key by key (the environment's key wins;
    `webhook = false` / `email = false` there switch an inherited channel off)."""

    webhook: str | None = None
    email: EmailSettings | None = None
    on: tuple[str, ...] = NOTIFY_RESULTS

    @property
    def any(self) -> bool:
        return self.webhook is not None or self.email is not None
# --- end notify ------------------------------------------------------------------------


@dataclass(frozen=True)
class Environment:
    name: str
    nodes: tuple[Node, ...] | None
    chef: ChefSettings | None
    ssh: SSHSettings
    tls: TLSSettings
    rollout: Rollout
    hooks: Mapping[str, tuple[str, ...]]
    balancer: BalancerSettings | None = None
    allow_plain_tcp: bool = False   # tcp:// engines without TLS accepted (with a warning)
    secrets_file: Path | None = None   # dotenv file of service secrets (servicesecrets.py)
    # services as this environment runs them: [environments.NAME.services.X] applied (only
    # the services it overrides; the others run as [services.X] says). Config.service_for.
    services: Mapping[str, Service] = field(default_factory=lambda: MappingProxyType({}))
    notify: NotifySettings = NotifySettings()
    swarm: SwarmSettings | None = None
    etcd: EtcdSettings | None = None


@dataclass(frozen=True)
class BuildSettings:
    template: Path | None        # None: the template shipped with dockship
    base_image: str = DEFAULT_BASE_IMAGE
    network: bool = False        # true: the template's RUN steps get a network (its own apt-get)
    hooks: Mapping[str, tuple[str, ...]] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Config:
    path: Path | None
    index_url: str
    registry: str
    build: BuildSettings
    services: Mapping[str, Service]
    environments: Mapping[str, Environment]
    warnings: tuple[str, ...] = ()   # accepted but risky (plain TCP): the CLI prints them

    def service_for_package(self, package: str) -> Service | None:
        """The service whose `package` (or name) is `package`, compared as PEP 503 names."""
        wanted = normalize_name(package)
        for svc in self.services.values():
            if normalize_name(svc.package) == wanted:
                return svc
        for svc in self.services.values():
            if normalize_name(svc.name) == wanted:
                return svc
        return None

    def service(self, name: str) -> Service:
        """Service `name` as [services.NAME] says; UsageError with a "did you mean" if unknown."""
        if name not in self.services:
            names = ", ".join(sorted(self.services)) or "none"
            raise UsageError(f"unknown service {checks.shown(name)}"
                             f"{_did_you_mean(name, self.services)}; services in the config: {names}")
        return self.services[name]

    def service_for(self, env: str, name: str) -> Service:
        """Service `name` as environment `env` runs it (its overrides applied); what every
        command of an environment uses."""
        base = self.service(name)
        return self.environment(env).services.get(name) or base

    def services_in(self, env: str) -> list[Service]:
        """Every service as environment `env` runs it, in config order."""
        return [self.service_for(env, name) for name in self.services]

    def environment(self, name: str) -> Environment:
        try:
            return self.environments[name]
        except KeyError:
            raise UsageError(f"unknown environment {checks.shown(name)}"
                             f"{_did_you_mean(name, self.environments)}; environments in "
                             f"{printable(str(self.path or 'the config'))}: "
                             f"{', '.join(sorted(self.environments)) or 'none'}") from None


def node_endpoint(template: str, name: str, address: str) -> str:
    """The engine of a node found by Chef or etcd: `template` with {address} and {name} filled
    (an IPv6 address in brackets, as a URL wants it)."""
    host = f"[{address}]" if ":" in address else address
    return template.replace("{address}", host).replace("{name}", name)


def normalize_name(name: str) -> str:
    """PEP 503 normalized distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def config_path(explicit: str | None) -> Path:
    """--config, else $DOCKSHIP_CONFIG, else ./dockship.toml."""
    return Path(explicit or os.environ.get("DOCKSHIP_CONFIG") or DEFAULT_CONFIG)


def load(path: Path) -> Config:
    """Read and validate a config file; every problem of it is in one ConfigError (exit 2)."""
    where = printable(str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                          f"{exc.start}); save it as UTF-8") from None
    except FileNotFoundError:
        raise UsageError(f"config file {where} not found; pass --config PATH or set "
                         "DOCKSHIP_CONFIG") from None
    except OSError as exc:
        raise UsageError(f"cannot read config file {where}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {printable(str(exc))}") from None
    except RecursionError:
        raise ConfigError(f"{where}: arrays or tables nested too deeply to read; "
                          "no dockship key needs more than two levels") from None
    except ValueError as exc:   # an integer of more than 4300 digits
        raise ConfigError(f"{where}: not valid TOML: {printable(last_line(exc))}") from None
    return parse(data, base_dir=path.parent, path=path)


def parse(data: Mapping[str, Any], *, base_dir: Path, path: Path | None = None) -> Config:
    """Validate a parsed TOML document; raise one ConfigError listing every problem."""
    r = _Reader(base_dir)
    root = r.root(data)
    index_url = root.table("index", required=True).url("url", required=True)
    registry = root.table("registry", required=True).value("url", checks.registry_problem,
                                                             required=True)
    build = _build(root.table("build"))
    services = {name: _service(t) for name, t in root.table("services").tables(
        checks.service_name_problem)}
    notify = _notify(root.table("notify"), NotifySettings())
    environments = {name: _environment(t, services, notify) for name, t in root.table(
        "environments").tables(checks.name_problem)}
    for name, env in environments.items():
        _check_ports(r, env, {**services, **env.services})
        _check_bake(r, env, {**services, **env.services})
    r.finish()
    if r.errors:
        raise ConfigError(list(dict.fromkeys(r.errors)))
    return Config(path=path, index_url=index_url or "", registry=registry or "", build=build,
                  services=MappingProxyType(services), environments=MappingProxyType(environments),
                  warnings=tuple(r.warnings))


def _build(t: _Table) -> BuildSettings:
    hooks_t = t.table("hooks")
    return BuildSettings(template=t.path("template"),
                         base_image=t.value("base_image", checks.image_reference_problem,
                                            default=DEFAULT_BASE_IMAGE),
                         network=t.boolean("network", False),
                         hooks=MappingProxyType({k: argv for k in BUILD_HOOK_NAMES
                                                 if (argv := hooks_t.argv(k))}))


def _service(t: _Table) -> Service:
    name = t.key
    package = t.value("package", checks.package_problem, default=name)
    image = t.value("image", checks.image_problem)
    if image is None and not t.has("image") and (problem := checks.image_problem(name)):
        t.error(None, f"is also the image name, and {problem}; set `image`")
    svc = Service(
        name=name,
        package=package,
        image=image or name,
        port=t.port("port", 8000),
        role=t.name("role"),
        command=t.argv("command"),
        env=_env(t.table("env")),
        health=_health(t.table("health"), HealthCheck()),
        stop_timeout=t.number("stop_timeout", 10.0, 0, HOUR),
        retain=t.integer("retain", 3, 1, 100),
        secrets=_secret_names(t),
        publish=_publish(t, Publish()),
        template=t.path("template"),
        base_image=t.value("base_image", checks.image_reference_problem),
    )
    _check_secret_names(t, svc)
    return svc


OVERRIDABLE = ("env", "secrets", "port", "publish", "command", "health")


def _service_override(t: _Table, base: Service) -> Service:
    """`[environments.E.services.X]` over `base`: env and health merged key by key; secrets,
    port, publish and command replaced."""
    svc = replace(
        base,
        port=t.port("port", base.port),
        command=t.argv("command") or base.command,
        env=MappingProxyType({**base.env, **_env(t.table("env"))}),
        health=_health(t.table("health"), base.health),
        secrets=_secret_names(t) if t.has("secrets") else base.secrets,
        publish=_publish(t, base.publish),
    )
    _check_secret_names(t, svc)
    return svc


def _secret_names(t: _Table) -> tuple[str, ...]:
    """`secrets = ["DATABASE_URL", ...]`: names of environment variables, each once."""
    v = t.raw("secrets")
    if v is None:
        return ()
    if not isinstance(v, list):
        t.error("secrets", "must be a list of environment variable names, e.g. "
                f"[\"DATABASE_URL\"], got {checks.shown(v)}")
        return ()
    names: list[str] = []
    for i, item in enumerate(v):
        if problem := checks.env_var_problem(item):
            t.item_error("secrets", i, problem)
        elif item in names:
            t.item_error("secrets", i, f"{checks.shown(item)} is listed twice")
        else:
            names.append(item)
    return tuple(names)


def _check_secret_names(t: _Table, svc: Service) -> None:
    for name in svc.secrets:
        if name in svc.env:
            t.error("secrets", f"{name} is also set in env; a variable is either a literal "
                    "(env) or a secret (secrets), remove it from one")


_PUBLISH_FORM = 'a host port like 8080, or "ADDRESS:PORT" like "127.0.0.1:8080" or "[::1]:8080"'


def _publish(t: _Table, default: Publish) -> Publish:
    """`publish`: the host port, optionally with the host IP it is bound to."""
    v = t.raw("publish")
    if v is None:
        return default
    if isinstance(v, int) and not isinstance(v, bool):
        if problem := checks.port_problem(v):
            t.error("publish", problem)
            return default
        return Publish(v)
    found = _publish_problem(v)
    if isinstance(found, str):
        t.error("publish", found)
        return default
    return found


def _publish_problem(v: Any) -> Publish | str:
    if not isinstance(v, str) or not v:
        return f"must be {_PUBLISH_FORM}, got {checks.shown(v)}"
    host, colon, port_text = v.rpartition(":")
    if not colon:
        host, port_text = "", v
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        return f"{checks.shown(v)}: an IPv6 address goes in brackets, e.g. \"[::1]:8080\""
    if not (port_text.isascii() and port_text.isdigit()) or checks.port_problem(int(port_text)):
        return f"{checks.shown(v)} has a bad port; ports are 1-65535 ({_PUBLISH_FORM})"
    if host:
        try:
            host = str(ipaddress.ip_address(host))
        except ValueError:
            return (f"{checks.shown(v)}: {checks.shown(host)} is not an IP address (Docker binds "
                    f"ports to addresses, not names); expected {_PUBLISH_FORM}")
    return Publish(int(port_text), host or None)


def _check_bake(r: _Reader, env: Environment, services: Mapping[str, Service]) -> None:
    """The canary bake sends HTTP requests: a service checked by TCP needs a bake_path."""
    if not env.rollout.bake.seconds or env.rollout.bake.path:
        return
    for svc in services.values():
        if svc.health.kind == "tcp":
            r.error(f"environments.{_key_text(env.name)}.rollout.bake",
                    f"the bake sends HTTP requests, and service {svc.name} is checked by TCP; "
                    "set rollout.bake_path to an HTTP path it serves, or bake = 0")


def _check_ports(r: _Reader, env: Environment, services: Mapping[str, Service]) -> None:
    """Two services that can share a node must not publish one host port there."""
    at = f"environments.{_key_text(env.name)}"
    listed = list(services.values())
    for i, a in enumerate(listed):
        for b in listed[i + 1:]:
            if a.host_port != b.host_port or not a.publish.overlaps(b.publish):
                continue
            where = _shared_node(env, a, b)
            if where is not None:
                r.error(at, f"services {a.name} and {b.name} both publish host port "
                        f"{a.host_port} and can run on the same node ({where}); set another "
                        f"`publish` for one (services.{b.name}.publish, or in "
                        f"{at}.services.{b.name})")


def _shared_node(env: Environment, a: Service, b: Service) -> str | None:
    """A node (or a reason) showing `a` and `b` may land on one node, or None."""
    if env.nodes is not None:
        both = [n.name for n in env.nodes if n.runs(a.role) and n.runs(b.role)]
        return f"node {both[0]}" if both else None
    if a.role is None or b.role is None or a.role == b.role:
        return f"{'Chef' if env.chef is not None else 'etcd'} finds the same nodes for both roles"
    return None


def _health(t: _Table, base: HealthCheck) -> HealthCheck:
    problems = len(t.r.errors)
    health = HealthCheck(
        path=t.value("path", checks.health_path_problem, default=base.path),
        status=t.integer("status", base.status, 100, 599),
        timeout=t.number("timeout", base.timeout, 0.1, HOUR),
        min_healthy=t.number("min_healthy", base.min_healthy, 0, HOUR),
        interval=t.number("interval", base.interval, 0.05, 60),
        rollback_min_healthy=t.number("rollback_min_healthy", base.rollback_min_healthy, 0, HOUR),
        kind=t.choice("kind", ("http", "tcp"), base.kind),
        scheme=t.choice("scheme", ("http", "https"), base.scheme),
        host=t.value("host", checks.host_problem, default=base.host),
        verify=t.boolean("verify", base.verify),
    )
    if health.kind == "tcp" and (t.has("scheme") or t.has("host") or t.has("path")):
        t.error("kind", "a tcp check only connects to the port: drop path, scheme and host, "
                "or use kind = \"http\"")
    if len(t.r.errors) == problems:      # compare only values that are themselves right
        for key in ("min_healthy", "rollback_min_healthy"):
            if getattr(health, key) > health.timeout:
                t.error(key, f"{getattr(health, key):g} s is longer than timeout "
                        f"({health.timeout:g} s), the time the window must end within; "
                        f"lower {key} or raise timeout")
    return health


def _env(t: _Table) -> Mapping[str, str]:
    env = {}
    for key, value in t.entries(checks.env_var_problem):
        if problem := _env_value_problem(value):
            t.error(key, problem)
        else:
            env[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return MappingProxyType(env)


def _env_value_problem(value: Any) -> str | None:
    if isinstance(value, bool) or isinstance(value, int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else \
            f"{checks.shown(value)} is not a finite number; write it as a string if meant"
    if not isinstance(value, str):
        return f"values are strings, numbers or booleans, got {checks.shown(value)}"
    if "\x00" in value or len(value) > MAX_ENV_VALUE:
        return f"{checks.shown(value)} holds a NUL character or is longer than {MAX_ENV_VALUE}"
    return None


def _environment(t: _Table, services: Mapping[str, Service],
                 notify: NotifySettings = NotifySettings()) -> Environment:
    name = t.key
    listed = _nodes(t) if t.has("nodes") else None
    nodes = None if listed is None else tuple(node for _, node in listed)
    chef_t = t.table("chef")
    chef = _chef(chef_t, name) if t.has("chef") else None
    swarm_t = t.table("swarm")
    swarm = _swarm(swarm_t) if t.has("swarm") else None
    etcd_t = t.table("etcd")
    etcd = _etcd(etcd_t, name) if t.has("etcd") else None
    _one_source(t)
    ssh = _ssh(t.table("ssh"))
    tls = _tls(t.table("tls"))
    allow_plain_tcp = t.boolean("allow_plain_tcp", False)
    endpoints = [(node_t.where("docker"), node.docker) for node_t, node in listed or ()]
    if chef is not None:
        endpoints.append((chef_t.where("docker"), chef.docker))
    if swarm is not None:
        endpoints.append((swarm_t.where("manager"), swarm.manager))
    if etcd is not None:
        endpoints.append((etcd_t.where("docker"), etcd.docker))
    _transport(t, endpoints, tls, allow_plain_tcp)
    hooks_t = t.table("hooks")
    for k in BUILD_HOOK_NAMES:
        if hooks_t.has(k):
            hooks_t.error(k, f"{k} runs around `dockship build`, which has no environment; "
                          "move it to [build.hooks]")
    hooks = {k: argv for k in HOOK_NAMES if (argv := hooks_t.argv(k))}
    return Environment(name=name, nodes=nodes, chef=chef, ssh=ssh, tls=tls,
                       rollout=_rollout(t.table("rollout")), hooks=MappingProxyType(hooks),
                       balancer=_balancer(t.table("balancer")) if t.has("balancer") else None,
                       allow_plain_tcp=allow_plain_tcp, secrets_file=t.path("secrets_file"),
                       services=MappingProxyType(_overrides(t.table("services"), services)),
                       notify=_notify(t.table("notify"), notify), swarm=swarm, etcd=etcd)


def _one_source(t: _Table) -> None:
    """An environment's nodes come from exactly one place: a list, Chef, etcd or a swarm."""
    given = [k for k in NODE_SOURCES if t.has(k)]
    if not given:
        t.error(None, "needs a source of nodes: `nodes = [...]`, `chef = { url = ..., client = "
                "..., key = ... }`, `etcd = { url = ... }` or `swarm = { manager = ... }`")
    elif len(given) > 1:
        t.error(None, f"has {' and '.join(f'`{k}`' for k in given)}; keep one source of nodes")


def _notify(t: _Table, base: NotifySettings) -> NotifySettings:
    """`base` with the keys `t` sets replaced (design §12); `false` turns a channel off."""
    out = base
    if t.raw("webhook") is False:
        out = replace(out, webhook=None)
    elif t.has("webhook"):
        out = replace(out, webhook=t.url("webhook"))
    if t.raw("email") is False:
        out = replace(out, email=None)
    elif t.has("email"):
        out = replace(out, email=_email(t.table("email")))
    if t.has("on"):
        out = replace(out, on=_notify_on(t))
    return out


def _notify_on(t: _Table) -> tuple[str, ...]:
    v = t.raw("on")
    if not isinstance(v, list) or not v:
        t.error("on", f"must be a non-empty list of results from {', '.join(NOTIFY_RESULTS)}, "
                f"got {checks.shown(v)}")
        return NOTIFY_RESULTS
    bad = [(i, x) for i, x in enumerate(v) if x not in NOTIFY_RESULTS]
    for i, x in bad:
        t.item_error("on", i, f"{checks.shown(x)} is not one of: {', '.join(NOTIFY_RESULTS)}"
                     f"{_did_you_mean(str(x), NOTIFY_RESULTS)}")
    return NOTIFY_RESULTS if bad else tuple(dict.fromkeys(v))


def _email(t: _Table) -> EmailSettings | None:
    """`{ smtp = "host:port", from = ..., to = [...], starttls, user, ca, timeout }`."""
    if t.has("password"):
        t.error("password", "is never read from the file; set DOCKSHIP_SMTP_PASSWORD in "
                "dockship's environment (a CI secret) instead")
    smtp = t.value("smtp", checks.smtp_server_problem, required=True)
    sender = t.value("from", checks.email_address_problem, required=True)
    to = t.raw("to", required=True)
    if to is not None and (not isinstance(to, list) or not to):
        t.error("to", f"must be a non-empty list of addresses, got {checks.shown(to)}")
        to = None
    for i, addr in enumerate(to or ()):
        if problem := checks.email_address_problem(addr):
            t.item_error("to", i, problem)
            to = None
    starttls = t.boolean("starttls", True)
    user = t.text("user")
    if user is not None and not starttls:
        t.error("user", "logging in without starttls would send the password in clear; "
                "set starttls = true")
    ca = t.path("ca", must_exist=True)
    timeout = t.number("timeout", SMTP_TIMEOUT, 1, 300)
    if smtp is None or sender is None or not to:
        return None
    split = urlsplit(f"smtp://{smtp}")
    port = split.port or (587 if starttls else 25)
    return EmailSettings(host=split.hostname or "", port=port, sender=sender, to=tuple(to),
                         starttls=starttls, user=user, ca=ca, timeout=timeout)


def _overrides(t: _Table, services: Mapping[str, Service]) -> dict[str, Service]:
    """`[environments.E.services.X]` tables: only services the config defines, only the keys
    an environment may change (OVERRIDABLE)."""
    out = {}
    for name, st in t.tables(checks.service_name_problem):
        if name not in services:
            st.error(None, f"no such service{_did_you_mean(name, services)}; services: "
                     f"{', '.join(services) or 'none'}")
            continue
        out[name] = _service_override(st, services[name])
    return out


def _ssh(t: _Table) -> SSHSettings:
    """`config` is a path or `false` (read no ssh_config); absent: ssh(1)'s own files."""
    raw = t.raw("config")
    if raw is True:
        t.error("config", "give the path of an ssh_config file, or false to read none "
                "(leave it out to read ssh's own ~/.ssh/config)")
    return SSHSettings(user=t.value("user", checks.ssh_user_problem),
                       key=t.path("key", must_exist=True),
                       known_hosts=t.path("known_hosts", must_exist=True),
                       config=None if isinstance(raw, bool) else t.path("config", must_exist=True),
                       read_config=raw is not False,
                       agent=t.boolean("agent", True))


def _nodes(t: _Table) -> list[tuple[_Table, Node]]:
    """Each node with its table (whose path has the node's index in the file)."""
    listed = [(item, _node(item)) for item in t.array(
        "nodes", 'a table like { name = "node1", docker = "ssh://root@10.0.0.1" }')]
    seen: set[str] = set()
    for item, n in listed:
        if n.name and n.name in seen:
            item.error("name", f"duplicate node name '{n.name}'")
        seen.add(n.name)
    return listed


def _node(t: _Table) -> Node:
    return Node(name=t.name("name", required=True) or "",
                docker=t.value("docker", checks.docker_endpoint_problem, required=True, default=""),
                zone=t.name("zone"),
                roles=t.names("roles"),
                address=t.value("address", checks.host_problem))


def _tls(t: _Table) -> TLSSettings:
    tls = TLSSettings(ca=t.path("ca", must_exist=True), cert=t.path("cert", must_exist=True),
                      key=t.path("key", must_exist=True), verify=t.boolean("verify", True))
    if t.has("cert") != t.has("key"):
        missing, given = ("key", "cert") if t.has("cert") else ("cert", "key")
        t.error(missing, f"missing: tls.{given} is given, and a client certificate needs both "
                "cert and key (or neither)")
    return tls


def _transport(t: _Table, endpoints: list[tuple[str, str]], tls: TLSSettings,
               allow_plain_tcp: bool) -> None:
    """A tcp:// engine speaks TLS, or the environment says `allow_plain_tcp = true` (design §8).

    `endpoints` are (key path, engine URL or Chef template) of the environment's engines."""
    plain = [where for where, docker in endpoints if docker.startswith("tcp://")]
    if not plain or tls.enabled:
        return
    at = t.where(None)
    if allow_plain_tcp:
        t.r.warnings.append(f"{at}: allow_plain_tcp = true and {len(plain)} tcp:// engine "
                            f"endpoint(s) without TLS: registry credentials and all engine "
                            "traffic travel in clear")
        return
    for where in plain:
        t.r.error(where, f"a tcp:// engine without TLS would send registry credentials "
                  f"and all engine traffic in clear; set [{at}.tls] ca (or cert and key), or "
                  f"allow_plain_tcp = true in [{at}] to accept that")


def _rollout(t: _Table) -> Rollout:
    bake = Bake(seconds=t.number("bake", 0.0, 0, DAY),
                path=t.value("bake_path", checks.health_path_problem),
                rate=t.number("bake_rate", 10.0, 0.1, 1000),
                max_error_increase=t.number("bake_max_error_increase", 0.01, 0, 1),
                max_p95_ratio=t.number("bake_max_p95_ratio", 1.5, 1.0, 1000),
                min_p95_ms=t.number("bake_min_p95_ms", 20.0, 0, 60_000))
    return Rollout(canary=t.integer("canary", 1, 0, MAX_NODES),
                   batch=_batch(t),
                   auto_rollback=t.boolean("auto_rollback", True),
                   by_zone=t.boolean("by_zone", False),
                   overlap_min_healthy=t.boolean("overlap_min_healthy", False),
                   zones=t.names("zones"), bake=bake)


def _batch(t: _Table) -> tuple[int | str, ...]:
    value = t.raw("batch")
    if value is None:
        return (1,)
    items = value if isinstance(value, list) else [value]
    if not items:
        t.error("batch", "must not be empty")
    out: list[int | str] = []
    for i, v in enumerate(items):
        problem = _batch_problem(v)
        if problem and isinstance(value, list):
            t.item_error("batch", i, problem)
        elif problem:
            t.error("batch", problem)
        else:
            out.append(v.strip() if isinstance(v, str) else v)
    return tuple(out) or (1,)


def _batch_problem(v: Any) -> str | None:
    """A count of nodes (1..MAX_NODES) or a percentage of them ("25%", above 0 up to 100)."""
    if isinstance(v, str) and re.fullmatch(r"\d{1,3}(\.\d{1,6})?%", v.strip()):
        return None if 0 < float(v.strip()[:-1]) <= 100 else f"{checks.shown(v)} must be above 0% and at most 100%"
    if isinstance(v, int) and not isinstance(v, bool):
        return checks.number_problem(v, 1, MAX_NODES, integer=True)
    return f"{checks.shown(v)} must be a count like 2 or a percentage like \"25%\""


def _balancer(t: _Table) -> BalancerSettings | None:
    kind = t.text("kind", required=True)
    if kind is not None and kind not in BALANCER_KINDS:
        t.error("kind", f"{checks.shown(kind)} is not supported; use one of: "
                f"{', '.join(BALANCER_KINDS)} (or drive any other balancer from the "
                "pre_node/post_node hooks)")
    socket_path = t.path("socket", required=True)
    backend = _name_template(t, "backend", "{service}", ("service",))
    server = _name_template(t, "server", "{name}", ("name", "address", "zone"))
    drain_timeout = t.number("drain_timeout", 10.0, 0, HOUR)
    ready_timeout = t.number("ready_timeout", 30.0, 0.1, HOUR)
    if kind not in BALANCER_KINDS or socket_path is None:
        return None
    return BalancerSettings(kind=kind, socket=socket_path, backend=backend, server=server,
                            drain_timeout=drain_timeout, ready_timeout=ready_timeout,
                            at=t.where(None))


def _name_template(t: _Table, key: str, default: str, fields: tuple[str, ...]) -> str:
    """A HAProxy name, literally or as a template of `fields` (e.g. "{name}")."""
    value = t.text(key)
    if value is None:
        return default
    known = ", ".join("{" + f + "}" for f in fields)
    try:
        parsed = list(string.Formatter().parse(value))
    except ValueError as exc:
        t.error(key, f"{checks.shown(value)} is not a valid template ({exc}); use {known}")
        return default
    for literal, field_name, spec, conv in parsed:
        if field_name is not None and (field_name not in fields or spec or conv):
            t.error(key, f"{checks.shown(value)} uses {{{printable(field_name)[:40]}}}; "
                    f"a template may use {known}")
            return default
        if literal and not _BALANCER_NAME_RE.match(literal):
            t.error(key, f"{checks.shown(value)} has characters HAProxy does not allow in names "
                    "(letters, digits, '-', '_', '.', ':')")
            return default
    return value


def _chef(t: _Table, env_name: str) -> ChefSettings | None:
    url = t.url("url", required=True)
    client = t.name("client", required=True)
    key = t.path("key", required=True, must_exist=True)
    environment = t.name("environment") or env_name
    docker = t.value("docker", _node_docker_problem, default=DEFAULT_NODE_DOCKER)
    sign = _sign_version(t)
    attrs_t = t.table("attributes")
    attrs = {k: v for k in ("name", "address", "zone")
             if (v := attrs_t.value(k, _attribute_problem)) is not None}
    verify = _chef_verify(t)
    if not (url and client and key):
        return None
    return ChefSettings(url=url, client=client, key=key, environment=environment, docker=docker,
                        sign_version=sign, verify=verify, attributes=MappingProxyType(
                            {"address": "ipaddress", "zone": "zone", **attrs}))


def _swarm(t: _Table) -> SwarmSettings | None:
    manager = t.value("manager", checks.docker_endpoint_problem, required=True)
    return SwarmSettings(manager=manager) if manager else None


def _etcd(t: _Table, env_name: str) -> EtcdSettings | None:
    url = t.value("url", checks.etcd_url_problem, required=True)
    prefix = t.value("prefix", checks.etcd_prefix_problem,
                     default=DEFAULT_ETCD_PREFIX.format(env=env_name))
    docker = t.value("docker", _node_docker_problem, default=DEFAULT_NODE_DOCKER)
    ca, cert, key = (t.path(k, must_exist=True) for k in ("ca", "cert", "key"))
    if t.has("cert") != t.has("key"):
        missing, given = ("key", "cert") if t.has("cert") else ("cert", "key")
        t.error(missing, f"missing: etcd.{given} is given, and a client certificate needs both "
                "cert and key (or neither)")
    tls_keys = [k for k in ("ca", "cert", "key") if t.has(k)]
    if url is not None and tls_keys and not url.startswith("https://"):
        t.error(tls_keys[0], f"is for TLS, and url {checks.shown(url)} is http://; use https:// "
                "or drop the TLS keys")
    if url is None:
        return None
    return EtcdSettings(url=url.rstrip("/"), prefix=prefix.rstrip("/") or "/", docker=docker,
                        ca=ca, cert=cert, key=key)


def _node_docker_problem(value: Any) -> str | None:
    """The endpoint template of found nodes: a Docker endpoint once {address}/{name} are filled."""
    if not isinstance(value, str) or ("{address}" not in value and "{name}" not in value):
        return (f"{checks.shown(value)} must contain {{address}} or {{name}}, "
                "e.g. \"ssh://root@{address}\"")
    return checks.docker_endpoint_problem(value.replace("{address}", "host").replace("{name}", "host"))


def _sign_version(t: _Table) -> str:
    raw = t.raw("sign_version")
    sign = "1.3" if raw is None else str(raw) if isinstance(raw, (str, float)) else ""
    if sign not in ("1.0", "1.1", "1.3"):
        t.error("sign_version", f"{checks.shown(raw)} is not supported; use \"1.3\" (default), "
                "\"1.1\" or \"1.0\"")
        return "1.3"
    return sign


def _chef_verify(t: _Table) -> bool | Path:
    """true (the system's CAs), false, or a CA bundle file for the Chef server's certificate."""
    raw = t.raw("verify")
    if raw is None or isinstance(raw, bool):
        return True if raw is None else raw
    return t.path("verify", must_exist=True) or True


_ATTRIBUTE_RE = re.compile(r"[A-Za-z0-9_-]{1,100}(?:\.[A-Za-z0-9_-]{1,100}){0,15}")


def _attribute_problem(value: Any) -> str | None:
    if isinstance(value, str) and _ATTRIBUTE_RE.fullmatch(value):
        return None
    return (f"{checks.shown(value)} is not a node attribute path; write it dotted, e.g. "
            "\"ipaddress\" or \"network.default_ip\"")


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word[:100], list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _key_text(key: str) -> str:
    """A key as a path segment: bare if TOML allows it bare, else quoted, escaped and shortened."""
    if _BARE_KEY.fullmatch(key):
        return key
    return printable(json.dumps(key if len(key) <= 40 else key[:40] + "…", ensure_ascii=False))


class _Reader:
    """What reading one document found: its problems, its warnings, its tables."""

    def __init__(self, base_dir: Path):
        self.base_dir = base_dir
        self.errors: list[str] = []
        self.warnings: list[str] = []
        self.tables: list[_Table] = []

    def error(self, at: str, message: str) -> None:
        self.errors.append(f"{at}: {message}")

    def root(self, data: Mapping[str, Any]) -> _Table:
        return _Table(self, data, "", "")

    def finish(self) -> None:
        """Report the keys no read asked for: unknown, with the closest known one."""
        for t in self.tables:
            if t.open:
                continue
            for k in t.data:
                if k not in t.asked:
                    t.error(k, f"unknown key{_did_you_mean(k, t.asked)}; known keys: "
                            f"{', '.join(t.asked)}")


class _Table:
    """Typed reads from one TOML table; a bad value is recorded under its key path and read as
    the default, so one pass finds every problem."""

    def __init__(self, r: _Reader, data: Mapping[str, Any], at: str, key: str):
        self.r, self.data, self.at, self.key = r, data, at, key
        self.asked: list[str] = []
        self.open = False           # a table of user-named entries (services, env): no unknown keys
        r.tables.append(self)

    def where(self, key: str | None) -> str:
        if key is None:
            return self.at
        return f"{self.at}.{_key_text(key)}" if self.at else _key_text(key)

    def error(self, key: str | None, message: str) -> None:
        self.r.error(self.where(key), message)

    def item_error(self, key: str, index: int, message: str, under: str = "") -> None:
        """A problem of one item of an array: `key[index]` (and `under` it, e.g. ".name")."""
        self.r.error(f"{self.where(key)}[{index}]{under}", message)

    def has(self, key: str) -> bool:
        self._ask(key)
        return key in self.data

    def _ask(self, key: str) -> None:
        if key not in self.asked:
            self.asked.append(key)

    def raw(self, key: str, *, required: bool = False) -> Any:
        """The value as TOML gave it, or None (and "missing" if `required`)."""
        if not self.has(key):
            if required:
                self.error(key, "missing")
            return None
        return self.data[key]

    def value(self, key: str, problem: Callable[[Any], str | None], *, required: bool = False,
              default: Any = None) -> Any:
        """The value if `problem` finds nothing wrong with it, else `default`."""
        v = self.raw(key, required=required)
        if v is None:
            return default
        if found := problem(v):
            self.error(key, found)
            return default
        return v

    def text(self, key: str, *, required: bool = False) -> str | None:
        return self.value(key, checks.text_problem, required=required)

    def name(self, key: str, *, required: bool = False) -> str | None:
        return self.value(key, checks.name_problem, required=required)

    def names(self, key: str) -> tuple[str, ...]:
        v = self.raw(key)
        if v is None:
            return ()
        if not isinstance(v, list):
            self.error(key, f"must be a list of names, e.g. [\"a\", \"b\"], got {checks.shown(v)}")
            return ()
        for i, item in enumerate(v):
            if problem := checks.name_problem(item):
                self.item_error(key, i, problem)
        return tuple(v) if all(checks.name_problem(x) is None for x in v) else ()

    def number(self, key: str, default: float, low: float, high: float) -> float:
        v = self.value(key, lambda x: checks.number_problem(x, low, high))
        return default if v is None else float(v)

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        v = self.value(key, lambda x: checks.number_problem(x, low, high, integer=True))
        return default if v is None else v

    def port(self, key: str, default: int) -> int:
        return self.integer(key, default, 1, 65535)

    def choice(self, key: str, options: tuple[str, ...], default: str) -> str:
        v = self.value(key, lambda x: None if x in options else
                       f"{checks.shown(x)} is not one of: {', '.join(options)}"
                       f"{_did_you_mean(str(x), options)}")
        return default if v is None else v

    def boolean(self, key: str, default: bool) -> bool:
        v = self.value(key, lambda x: None if isinstance(x, bool) else
                       f"must be true or false, got {checks.shown(x)}")
        return default if v is None else v

    def url(self, key: str, *, required: bool = False,
            schemes: tuple[str, ...] = ("http", "https")) -> str | None:
        return self.value(key, lambda x: checks.url_problem(x, schemes), required=required)

    def argv(self, key: str) -> tuple[str, ...]:
        """A command as a list of arguments (no shell). Any text goes but NUL, which no
        program can receive; what is shown of it is escaped by whoever prints."""
        v = self.raw(key)
        if v is None:
            return ()
        if not (isinstance(v, list) and v and all(isinstance(x, str) for x in v)):
            self.error(key, "must be a non-empty list of strings (an argv, no shell), "
                       "e.g. [\"./lb\", \"drain\"]")
            return ()
        problems = [(i, f"{checks.shown(x)} holds a NUL character") for i, x in enumerate(v)
                    if "\x00" in x]
        for i, p in problems:
            self.item_error(key, i, p)
        return () if problems else tuple(v)

    def path(self, key: str, *, required: bool = False, must_exist: bool = False) -> Path | None:
        """A file path, relative to the config file's directory; `~` is the home directory."""
        v = self.value(key, lambda x: checks.text_problem(x, limit=4096), required=required)
        if v is None:
            return None
        try:
            p = Path(v).expanduser()
            p = p if p.is_absolute() else self.r.base_dir / p
            if must_exist and not p.exists():
                self.error(key, f"{checks.shown(str(p))} does not exist")
        except (OSError, RuntimeError) as exc:   # a name too long, ~user unknown
            self.error(key, f"{checks.shown(v)} is not a usable path ({printable(last_line(exc))})")
            return None
        return p

    def table(self, key: str, *, required: bool = False) -> _Table:
        v = self.raw(key, required=required)
        if v is not None and not isinstance(v, dict):
            self.error(key, f"must be a table, got {checks.shown(v)}")
        return _Table(self.r, v if isinstance(v, dict) else {}, self.where(key), key)

    def entries(self, key_problem: Callable[[Any], str | None]) -> Iterator[tuple[str, Any]]:
        """The (key, value) pairs of a table of user-named entries whose keys pass `key_problem`."""
        self.open = True
        for k, v in self.data.items():
            if problem := key_problem(k):
                self.error(k, problem)
            else:
                yield k, v

    def tables(self, key_problem: Callable[[Any], str | None]) -> Iterator[tuple[str, _Table]]:
        """User-named subtables (services, environments), each name checked by `key_problem`."""
        for k, v in self.entries(key_problem):
            if isinstance(v, dict):
                yield k, _Table(self.r, v, self.where(k), k)
            else:
                self.error(k, f"must be a table, got {checks.shown(v)}")

    def array(self, key: str, what: str) -> Iterator[_Table]:
        """An array of tables, each as a `_Table` at `key[i]`."""
        v = self.raw(key)
        if not isinstance(v, list):
            self.error(key, f"must be a list of {what}s, got {checks.shown(v)}")
            return
        for i, item in enumerate(v):
            if isinstance(item, dict):
                yield _Table(self.r, item, f"{self.where(key)}[{i}]", key)
            else:
                self.item_error(key, i, f"must be {what}, got {checks.shown(item)}")
