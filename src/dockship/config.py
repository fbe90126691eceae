"""The configuration model: `dockship.toml` parsed into immutable records.

Everything is validated before the first network call, and every problem is
reported at once with the path of the bad key
(`environments.stage.nodes[1].docker: ...`), because a deploy tool that
fails on the third node over a typo in the config has already done harm.
"""

from __future__ import annotations

import difflib
import os
import re
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

from dockship.errors import ConfigError, UsageError

DEFAULT_CONFIG = "dockship.toml"
DEFAULT_BASE_IMAGE = "python:3.12-slim"
DEFAULT_PARALLEL = 16                   # node engines talked to at once: one round for most fleets
DEFAULT_LOCK_TTL = 1800.0     # seconds a deploy lock outlives its last renewal (design §9)
HOOK_NAMES = ("pre_roll", "pre_node", "post_node", "post_roll", "on_failure")
BUILD_HOOK_NAMES = ("pre_build", "post_build")     # in [build.hooks]: a build has no environment
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_IMAGE_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")


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


@dataclass(frozen=True)
class Service:
    name: str
    package: str
    image: str
    port: int
    role: str | None
    command: tuple[str, ...]
    env: Mapping[str, str]
    health: HealthCheck
    stop_timeout: float = 10.0  # SIGTERM, then SIGKILL after this many seconds
    retain: int = 3             # old containers kept per service for rollback


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
    user: str | None = None
    key: Path | None = None
    known_hosts: Path | None = None


@dataclass(frozen=True)
class TLSSettings:
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    verify: bool = True


@dataclass(frozen=True)
class ChefSettings:
    url: str
    client: str
    key: Path
    environment: str
    docker: str = "ssh://root@{address}"
    sign_version: str = "1.3"
    attributes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType(
        {"address": "ipaddress", "zone": "zone"}))


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

    def environment(self, name: str) -> Environment:
        try:
            return self.environments[name]
        except KeyError:
            raise UsageError(f"unknown environment '{name}'{_did_you_mean(name, self.environments)}; "
                             f"environments in {self.path or 'the config'}: "
                             f"{', '.join(sorted(self.environments)) or 'none'}") from None


def normalize_name(name: str) -> str:
    """PEP 503 normalized distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def config_path(explicit: str | None) -> Path:
    """--config, else $DOCKSHIP_CONFIG, else ./dockship.toml."""
    return Path(explicit or os.environ.get("DOCKSHIP_CONFIG") or DEFAULT_CONFIG)


def load(path: Path) -> Config:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                          f"{exc.start}); save it as UTF-8") from None
    except FileNotFoundError:
        raise UsageError(f"config file {path} not found; pass --config PATH or set DOCKSHIP_CONFIG") from None
    except OSError as exc:
        raise UsageError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse(data, base_dir=path.parent, path=path)


def parse(data: Mapping[str, Any], *, base_dir: Path, path: Path | None = None) -> Config:
    """Validate a parsed TOML document; raise one ConfigError listing every problem."""
    r = _Reader(base_dir)
    r.known(data, "", ("index", "registry", "build", "services", "environments"))
    index = r.table(data, "index", required=True)
    index_url = r.url(index, "index.url", required=True, schemes=("http", "https"))
    registry_t = r.table(data, "registry", required=True)
    registry = r.string(registry_t, "registry.url", required=True)
    if registry and ("://" in registry or registry.endswith("/")):
        r.error("registry.url", f"'{registry}' must be host[:port] without scheme or slash, "
                "e.g. \"registry.example.com:5000\"")
    r.known(index, "index", ("url",))
    r.known(registry_t, "registry", ("url",))
    build_t = r.table(data, "build")
    r.known(build_t, "build", ("template", "base_image", "network", "hooks"))
    template = r.path(build_t, "build.template")
    build_hooks_t = r.table(build_t, "hooks", at="build.hooks")
    r.known(build_hooks_t, "build.hooks", BUILD_HOOK_NAMES)
    build = BuildSettings(template=template,
                          base_image=r.string(build_t, "build.base_image") or DEFAULT_BASE_IMAGE,
                          network=r.boolean(build_t, "build.network", default=False),
                          hooks=MappingProxyType({k: argv for k in BUILD_HOOK_NAMES
                                                  if (argv := r.argv(build_hooks_t, f"build.hooks.{k}"))}))

    services = {name: _service(r, name, tbl) for name, tbl in r.table(data, "services").items()
                if r.is_table(tbl, f"services.{name}")}
    environments = {name: _environment(r, name, tbl)
                    for name, tbl in r.table(data, "environments").items()
                    if r.is_table(tbl, f"environments.{name}")}
    if r.errors:
        raise ConfigError(sorted(set(r.errors), key=r.errors.index))
    return Config(path=path, index_url=index_url or "", registry=registry or "", build=build,
                  services=MappingProxyType(services), environments=MappingProxyType(environments))


def _service(r: _Reader, name: str, t: Mapping[str, Any]) -> Service:
    at = f"services.{name}"
    if not _NAME_RE.match(name):
        r.error(at, "service names use lowercase letters, digits, '-', '_' and '.'")
    r.known(t, at, ("package", "image", "port", "role", "command", "env", "health",
                    "stop_timeout", "retain"))
    image = r.string(t, f"{at}.image") or name
    if not _IMAGE_RE.match(image):
        r.error(f"{at}.image", f"'{image}' is not a valid image name (lowercase, digits, '.', '_', '-', '/')")
    h = r.table(t, "health", at=f"{at}.health")
    r.known(h, f"{at}.health", ("path", "status", "timeout", "min_healthy", "interval",
                                "rollback_min_healthy"))
    hpath = r.string(h, f"{at}.health.path") or "/health"
    if not hpath.startswith("/"):
        r.error(f"{at}.health.path", f"'{hpath}' must start with '/'")
    health = HealthCheck(
        path=hpath,
        status=r.integer(h, f"{at}.health.status", default=200, low=100, high=599),
        timeout=r.number(h, f"{at}.health.timeout", default=30.0, low=0.1),
        min_healthy=r.number(h, f"{at}.health.min_healthy", default=3.0, low=0),
        interval=r.number(h, f"{at}.health.interval", default=0.5, low=0.05),
        rollback_min_healthy=r.number(h, f"{at}.health.rollback_min_healthy", default=0.0, low=0),
    )
    env = r.table(t, "env", at=f"{at}.env")
    for k, v in env.items():
        if not isinstance(v, (str, int, float, bool)):
            r.error(f"{at}.env.{k}", "values must be strings, numbers or booleans")
    return Service(
        name=name,
        package=r.string(t, f"{at}.package") or name,
        image=image,
        port=r.integer(t, f"{at}.port", default=8000, low=1, high=65535),
        role=r.string(t, f"{at}.role"),
        command=r.argv(t, f"{at}.command"),
        env=MappingProxyType({k: _env_str(v) for k, v in env.items()}),
        health=health,
        stop_timeout=r.number(t, f"{at}.stop_timeout", default=10.0, low=0),
        retain=r.integer(t, f"{at}.retain", default=3, low=1, high=100),
    )


def _env_str(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else str(v)


def _environment(r: _Reader, name: str, t: Mapping[str, Any]) -> Environment:
    at = f"environments.{name}"
    r.known(t, at, ("nodes", "chef", "ssh", "tls", "rollout", "hooks", "balancer"))
    nodes = None
    if "nodes" in t:
        raw = t["nodes"]
        if not isinstance(raw, list):
            r.error(f"{at}.nodes", "must be a list of tables like { name = \"node1\", docker = \"ssh://root@10.0.0.1\" }")
        else:
            nodes = tuple(n for i, item in enumerate(raw) if (n := _node(r, f"{at}.nodes[{i}]", item)))
            seen: set[str] = set()
            for i, n in enumerate(nodes):
                if n.name in seen:
                    r.error(f"{at}.nodes[{i}].name", f"duplicate node name '{n.name}'")
                seen.add(n.name)
    chef = None
    if "chef" in t:
        chef = _chef(r, f"{at}.chef", r.table(t, "chef", at=f"{at}.chef"), name)
    if nodes is None and chef is None:
        r.error(at, "needs either `nodes = [...]` or `chef = { url = ..., client = ..., key = ... }`")
    if nodes is not None and chef is not None:
        r.error(at, "has both `nodes` and `chef`; keep one source of nodes")
    ssh_t = r.table(t, "ssh", at=f"{at}.ssh")
    r.known(ssh_t, f"{at}.ssh", ("user", "key", "known_hosts"))
    ssh = SSHSettings(user=r.string(ssh_t, f"{at}.ssh.user"),
                      key=r.path(ssh_t, f"{at}.ssh.key", must_exist=True),
                      known_hosts=r.path(ssh_t, f"{at}.ssh.known_hosts", must_exist=True))
    tls_t = r.table(t, "tls", at=f"{at}.tls")
    r.known(tls_t, f"{at}.tls", ("ca", "cert", "key", "verify"))
    tls = TLSSettings(ca=r.path(tls_t, f"{at}.tls.ca", must_exist=True),
                      cert=r.path(tls_t, f"{at}.tls.cert", must_exist=True),
                      key=r.path(tls_t, f"{at}.tls.key", must_exist=True),
                      verify=r.boolean(tls_t, f"{at}.tls.verify", default=True))
    ro = r.table(t, "rollout", at=f"{at}.rollout")
    r.known(ro, f"{at}.rollout", ("canary", "batch", "auto_rollback", "by_zone", "zones", "bake",
                                  "overlap_min_healthy",
                                  "bake_path", "bake_rate", "bake_max_error_increase",
                                  "bake_max_p95_ratio", "bake_min_p95_ms"))
    zones = ro.get("zones", [])
    if not (isinstance(zones, list) and all(isinstance(z, str) and z for z in zones)):
        r.error(f"{at}.rollout.zones", "must be a list of zone names, e.g. [\"a\", \"b\"]")
        zones = []
    bake_path = r.string(ro, f"{at}.rollout.bake_path")
    if bake_path and not bake_path.startswith("/"):
        r.error(f"{at}.rollout.bake_path", f"'{bake_path}' must start with '/'")
    bake = Bake(seconds=r.number(ro, f"{at}.rollout.bake", default=0.0, low=0),
                path=bake_path,
                rate=r.number(ro, f"{at}.rollout.bake_rate", default=10.0, low=0.1),
                max_error_increase=r.number(ro, f"{at}.rollout.bake_max_error_increase",
                                            default=0.01, low=0),
                max_p95_ratio=r.number(ro, f"{at}.rollout.bake_max_p95_ratio", default=1.5, low=1.0),
                min_p95_ms=r.number(ro, f"{at}.rollout.bake_min_p95_ms", default=20.0, low=0))
    rollout = Rollout(canary=r.integer(ro, f"{at}.rollout.canary", default=1, low=0),
                      batch=_batch(r, f"{at}.rollout.batch", ro.get("batch", 1)),
                      auto_rollback=r.boolean(ro, f"{at}.rollout.auto_rollback", default=True),
                      by_zone=r.boolean(ro, f"{at}.rollout.by_zone", default=False),
                      overlap_min_healthy=r.boolean(ro, f"{at}.rollout.overlap_min_healthy",
                                                    default=False),
                      zones=tuple(zones), bake=bake)
    hooks_t = r.table(t, "hooks", at=f"{at}.hooks")
    for k in BUILD_HOOK_NAMES:
        if k in hooks_t:
            r.error(f"{at}.hooks.{k}", f"{k} runs around `dockship build`, which has no environment;"
                    f" move it to [build.hooks]")
    r.known({k: v for k, v in hooks_t.items() if k not in BUILD_HOOK_NAMES}, f"{at}.hooks", HOOK_NAMES)
    hooks = {k: argv for k in HOOK_NAMES if (argv := r.argv(hooks_t, f"{at}.hooks.{k}"))}
    balancer = _balancer(r, f"{at}.balancer", r.table(t, "balancer", at=f"{at}.balancer")) \
        if "balancer" in t else None
    return Environment(name=name, nodes=nodes, chef=chef, ssh=ssh, tls=tls, rollout=rollout,
                       hooks=MappingProxyType(hooks), balancer=balancer)


def _balancer(r: _Reader, at: str, t: Mapping[str, Any]) -> BalancerSettings | None:
    r.known(t, at, ("kind", "socket", "backend", "server", "drain_timeout", "ready_timeout"))
    kind = r.string(t, f"{at}.kind", required=True)
    if kind is not None and kind not in BALANCER_KINDS:
        r.error(f"{at}.kind", f"'{kind}' is not supported; use one of: {', '.join(BALANCER_KINDS)} "
                "(or drive any other balancer from the pre_node/post_node hooks)")
    socket_path = r.path(t, f"{at}.socket", required=True)
    backend = _name_template(r, t, f"{at}.backend", "{service}", ("service",))
    server = _name_template(r, t, f"{at}.server", "{name}", ("name", "address", "zone"))
    drain_timeout = r.number(t, f"{at}.drain_timeout", default=10.0, low=0)
    ready_timeout = r.number(t, f"{at}.ready_timeout", default=30.0, low=0.1)
    if kind not in BALANCER_KINDS or socket_path is None:
        return None
    return BalancerSettings(kind=kind, socket=socket_path, backend=backend, server=server,
                            drain_timeout=drain_timeout, ready_timeout=ready_timeout, at=at)


def _name_template(r: _Reader, t: Mapping[str, Any], at: str, default: str,
                   fields: tuple[str, ...]) -> str:
    """A HAProxy name, literally or as a template of `fields` (e.g. "{name}")."""
    value = r.string(t, at)
    if value is None:
        return default
    known = ", ".join("{" + f + "}" for f in fields)
    try:
        parsed = list(string.Formatter().parse(value))
    except ValueError as exc:
        r.error(at, f"'{value}' is not a valid template ({exc}); use {known}")
        return default
    for literal, field_name, spec, conv in parsed:
        if field_name is not None and (field_name not in fields or spec or conv):
            r.error(at, f"'{value}' uses {{{field_name}}}; a template may use {known}")
            return default
        if literal and not _BALANCER_NAME_RE.match(literal):
            r.error(at, f"'{value}' has characters HAProxy does not allow in names "
                    "(letters, digits, '-', '_', '.', ':')")
            return default
    return value


def _node(r: _Reader, at: str, item: Any) -> Node | None:
    if not isinstance(item, dict):
        r.error(at, "must be a table like { name = \"node1\", docker = \"ssh://root@10.0.0.1\" }")
        return None
    r.known(item, at, ("name", "docker", "zone", "roles", "address"))
    name = r.string(item, f"{at}.name", required=True)
    docker = r.string(item, f"{at}.docker", required=True)
    if docker:
        problem = docker_endpoint_problem(docker)
        if problem:
            r.error(f"{at}.docker", problem)
    roles = item.get("roles", [])
    if not (isinstance(roles, list) and all(isinstance(x, str) for x in roles)):
        r.error(f"{at}.roles", "must be a list of strings, e.g. [\"web\"]")
        roles = []
    return Node(name=name or "", docker=docker or "", zone=r.string(item, f"{at}.zone"),
                roles=tuple(roles), address=r.string(item, f"{at}.address"))


def docker_endpoint_problem(url: str) -> str | None:
    """Why `url` is not a usable engine endpoint, or None if it is."""
    parts = urlsplit(url)
    if parts.scheme == "ssh":
        if not parts.hostname:
            return f"'{url}' has no host; expected ssh://user@host[:port]"
        try:
            parts.port
        except ValueError:
            return f"'{url}' has a bad port; expected ssh://user@host[:port]"
        return None
    if parts.scheme == "tcp":
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None:
            return f"'{url}' needs a host and a port, e.g. tcp://10.0.0.5:2376"
        return None
    if parts.scheme == "unix":
        if not parts.path.startswith("/"):
            return f"'{url}' needs an absolute socket path, e.g. unix:///var/run/docker.sock"
        return None
    return f"'{url}' is not a Docker endpoint; use ssh://user@host[:port], tcp://host:port or unix:///path"


def _chef(r: _Reader, at: str, t: Mapping[str, Any], env_name: str) -> ChefSettings | None:
    r.known(t, at, ("url", "client", "key", "environment", "docker", "sign_version", "attributes"))
    url = r.url(t, f"{at}.url", required=True, schemes=("http", "https"))
    client = r.string(t, f"{at}.client", required=True)
    key = r.path(t, f"{at}.key", required=True, must_exist=True)
    docker = r.string(t, f"{at}.docker") or "ssh://root@{address}"
    if "{address}" not in docker and "{name}" not in docker:
        r.error(f"{at}.docker", f"'{docker}' must contain {{address}} or {{name}}, e.g. \"ssh://root@{{address}}\"")
    else:
        problem = docker_endpoint_problem(docker.replace("{address}", "host").replace("{name}", "host"))
        if problem:
            r.error(f"{at}.docker", problem)
    sign = str(t.get("sign_version", "1.3"))
    if sign not in ("1.0", "1.1", "1.3"):
        r.error(f"{at}.sign_version", f"'{sign}' is not supported; use \"1.3\" (default), \"1.1\" or \"1.0\"")
    attrs = r.table(t, "attributes", at=f"{at}.attributes")
    r.known(attrs, f"{at}.attributes", ("name", "address", "zone"))
    merged = {"address": "ipaddress", "zone": "zone"}
    merged.update({k: str(v) for k, v in attrs.items()})
    if not (url and client and key):
        return None
    return ChefSettings(url=url, client=client, key=key,
                        environment=r.string(t, f"{at}.environment") or env_name,
                        docker=docker, sign_version=sign, attributes=MappingProxyType(merged))


def _batch(r: _Reader, at: str, value: Any) -> tuple[int | str, ...]:
    items = value if isinstance(value, list) else [value]
    out: list[int | str] = []
    for i, v in enumerate(items):
        where = at if not isinstance(value, list) else f"{at}[{i}]"
        if isinstance(v, bool):
            r.error(where, "must be a count like 2 or a percentage like \"25%\"")
        elif isinstance(v, int):
            if v < 1:
                r.error(where, f"{v} must be at least 1")
            out.append(v)
        elif isinstance(v, str) and re.fullmatch(r"\d+(\.\d+)?%", v.strip()):
            pct = float(v.strip()[:-1])
            if not 0 < pct <= 100:
                r.error(where, f"'{v}' must be between 0% and 100%")
            out.append(v.strip())
        else:
            r.error(where, f"{v!r} must be a count like 2 or a percentage like \"25%\"")
    if isinstance(value, list) and not value:
        r.error(at, "must not be empty")
    return tuple(out) or (1,)


def _did_you_mean(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class _Reader:
    """Typed reads from TOML tables that record errors instead of raising."""

    def __init__(self, base_dir: Path):
        self.base_dir = base_dir
        self.errors: list[str] = []

    def error(self, at: str, message: str) -> None:
        self.errors.append(f"{at}: {message}")

    def known(self, t: Mapping[str, Any], at: str, keys: tuple[str, ...]) -> None:
        for k in t:
            if k not in keys:
                where = f"{at}.{k}" if at else k
                self.error(where, f"unknown key{_did_you_mean(k, keys)}; known keys: {', '.join(keys)}")

    def is_table(self, value: Any, at: str) -> bool:
        if not isinstance(value, dict):
            self.error(at, "must be a table")
            return False
        return True

    def table(self, t: Mapping[str, Any], key: str, *, at: str | None = None,
              required: bool = False) -> Mapping[str, Any]:
        at = at or key
        if key not in t:
            if required:
                self.error(at, "missing table")
            return {}
        return t[key] if self.is_table(t[key], at) else {}

    def _get(self, t: Mapping[str, Any], at: str, required: bool) -> Any:
        key = at.rsplit(".", 1)[-1]
        if key not in t:
            if required:
                self.error(at, "missing")
            return None
        return t[key]

    def string(self, t: Mapping[str, Any], at: str, *, required: bool = False) -> str | None:
        v = self._get(t, at, required)
        if v is None:
            return None
        if not isinstance(v, str) or not v.strip():
            self.error(at, f"must be a non-empty string, got {v!r}")
            return None
        return v

    def url(self, t: Mapping[str, Any], at: str, *, required: bool, schemes: tuple[str, ...]) -> str | None:
        v = self.string(t, at, required=required)
        if v is None:
            return None
        parts = urlsplit(v)
        if parts.scheme not in schemes or not parts.netloc:
            self.error(at, f"'{v}' must be a URL starting with {' or '.join(s + '://' for s in schemes)}")
            return None
        return v

    def integer(self, t: Mapping[str, Any], at: str, *, default: int, low: int | None = None,
                high: int | None = None) -> int:
        v = self._get(t, at, False)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, int):
            self.error(at, f"must be an integer, got {v!r}")
            return default
        if (low is not None and v < low) or (high is not None and v > high):
            self.error(at, f"{v} is out of range ({low if low is not None else '-inf'}..{high if high is not None else 'inf'})")
            return default
        return v

    def number(self, t: Mapping[str, Any], at: str, *, default: float, low: float) -> float:
        v = self._get(t, at, False)
        if v is None:
            return default
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self.error(at, f"must be a number of seconds, got {v!r}")
            return default
        if v < low:
            self.error(at, f"{v} must be at least {low}")
            return default
        return float(v)

    def boolean(self, t: Mapping[str, Any], at: str, *, default: bool) -> bool:
        v = self._get(t, at, False)
        if v is None:
            return default
        if not isinstance(v, bool):
            self.error(at, f"must be true or false, got {v!r}")
            return default
        return v

    def argv(self, t: Mapping[str, Any], at: str) -> tuple[str, ...]:
        v = self._get(t, at, False)
        if v is None:
            return ()
        if not (isinstance(v, list) and v and all(isinstance(x, str) for x in v)):
            self.error(at, "must be a non-empty list of strings (an argv, no shell), e.g. [\"./lb\", \"drain\"]")
            return ()
        return tuple(v)

    def path(self, t: Mapping[str, Any], at: str, *, required: bool = False,
             must_exist: bool = False) -> Path | None:
        v = self.string(t, at, required=required)
        if v is None:
            return None
        p = Path(v).expanduser()
        if not p.is_absolute():
            p = self.base_dir / p
        if must_exist and not p.exists():
            self.error(at, f"{p} does not exist")
        return p
