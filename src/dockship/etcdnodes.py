"""Nodes registered in etcd (design §13): one JSON value per key under the environment's prefix.

    /dockship/nodes/stage/node1 = {"name": "node1", "address": "10.0.0.11", "zone": "a",
                                   "roles": ["web"], "docker": "ssh://root@10.0.0.11"}

Whatever writes those keys (a provisioning job, a person with etcdctl) is
not dockship, so each value is checked like configuration (design §8):
JSON, an object with known keys, a name, an address that is an IP address
or host name and nothing else, a zone, roles that are names, an engine
endpoint (`docker`, or the environment's template filled in). One bad entry
refuses the whole answer as a ConfigError (exit 2) that names its key and
what to fix, before anything is touched; so do two keys holding one name.
Nodes come back sorted by name, so plans do not depend on key order.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable

from dockship import checks
from dockship.config import EtcdSettings, Environment, Node, node_endpoint
from dockship.errors import ConfigError
from dockship.etcd import Etcd
from dockship.redact import redact_url

__all__ = ["ENTRY_KEYS", "etcd_nodes", "key_prefix", "parse_entries", "parse_entry"]

ENTRY_KEYS = ("name", "address", "zone", "roles", "docker")
MAX_VALUE = 64 << 10       # bytes of one entry: a node is a few hundred


def key_prefix(prefix: str) -> bytes:
    """The keys of an environment's nodes start with this: the prefix and a '/'."""
    return (prefix if prefix.endswith("/") else prefix + "/").encode()


def etcd_nodes(env: Environment, role: str | None) -> tuple[Node, ...]:
    """The nodes registered for `env` that run `role`, sorted by name."""
    settings = env.etcd
    assert settings is not None
    with Etcd.of(settings) as etcd:
        entries = etcd.get_prefix(key_prefix(settings.prefix))
    nodes = parse_entries(((e.key, e.value) for e in entries), settings,
                          setting=f"environments.{env.name}.etcd",
                          plain_tcp_ok=env.tls.enabled or env.allow_plain_tcp)
    return tuple(n for n in nodes if n.runs(role))


def parse_entries(entries: Iterable[tuple[bytes, bytes]], settings: EtcdSettings, *,
                  setting: str, plain_tcp_ok: bool = False) -> tuple[Node, ...]:
    """Every (key, value) as a Node, sorted by name; the first bad one is a ConfigError."""
    by_name: dict[str, bytes] = {}
    nodes = []
    for key, value in entries:
        node = parse_entry(key, value, settings, setting=setting, plain_tcp_ok=plain_tcp_ok)
        if node.name in by_name:
            raise ConfigError(
                f"{setting}: keys {_key(by_name[node.name])} and {_key(key)} on "
                f"{_server(settings)} both hold node '{node.name}'; delete one of them there "
                "(dockship touched nothing)")
        by_name[node.name] = key
        nodes.append(node)
    return tuple(sorted(nodes, key=lambda n: n.name))


def parse_entry(key: bytes, value: bytes, settings: EtcdSettings, *, setting: str,
                plain_tcp_ok: bool = False) -> Node:
    """One entry as a Node, checked like a node of the config file."""
    def refused(problem: str) -> ConfigError:
        return ConfigError(f"{setting}: the entry {_key(key)} on {_server(settings)} {problem}; "
                           "fix it there (dockship touched nothing)")

    data = _object(value, refused)
    unknown = [k for k in data if k not in ENTRY_KEYS]
    if unknown:
        close = difflib.get_close_matches(unknown[0][:100], ENTRY_KEYS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise refused(f"has the unknown key {checks.shown(unknown[0])}{hint}; known keys: "
                      f"{', '.join(ENTRY_KEYS)}")
    name, address = data.get("name"), data.get("address")
    if problem := checks.name_problem(name):
        raise refused(f"has a bad name: {problem}")
    if address is None:
        raise refused(f"(node {name}) has no \"address\"; add the IP address or host name "
                      "dockship reaches it by")
    if problem := checks.host_problem(address):
        raise refused(f"(node {name}): address {problem}")
    zone = data.get("zone")
    if isinstance(zone, int) and not isinstance(zone, bool):
        zone = str(zone)                  # "zone": 3 is zone "3", as in Chef
    if zone is not None and (problem := checks.name_problem(zone)):
        raise refused(f"(node {name}): zone {problem}")
    roles = data.get("roles")
    if roles is None:
        roles = []
    if not isinstance(roles, list):
        raise refused(f"(node {name}): roles must be a list of names like [\"web\"], got "
                      f"{checks.shown(roles)}")
    for role in roles:
        if problem := checks.name_problem(role):
            raise refused(f"(node {name}): role {problem}")
    docker = data.get("docker")
    if docker is None:
        docker = node_endpoint(settings.docker, name, address)
    if problem := checks.docker_endpoint_problem(docker):
        raise refused(f"(node {name}): docker {problem}")
    if docker.startswith("tcp://") and not plain_tcp_ok:
        raise refused(f"(node {name}): docker {checks.shown(docker)} is a tcp:// engine without "
                      "TLS, which would send registry credentials in clear; set the environment's "
                      "tls (or allow_plain_tcp = true), or reach it by ssh://")
    return Node(name=name, docker=docker, zone=zone or None, roles=tuple(dict.fromkeys(roles)),
                address=address)


def _object(value: bytes, refused) -> dict:
    if len(value) > MAX_VALUE:
        raise refused(f"is {len(value)} bytes, more than a node's entry can be "
                      f"({MAX_VALUE >> 10} KiB)")
    try:
        data = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise refused("is not JSON; write one node as {\"name\": \"node1\", \"address\": "
                      "\"10.0.0.11\", \"zone\": \"a\", \"roles\": [\"web\"]}") from None
    if not isinstance(data, dict):
        raise refused(f"is {checks.shown(data)}, not a JSON object; write one node as "
                      "{\"name\": ..., \"address\": ..., \"zone\": ..., \"roles\": [...]}")
    return data


def _key(key: bytes) -> str:
    return checks.shown(key.decode("utf-8", errors="replace"))


def _server(settings: EtcdSettings) -> str:
    return f"etcd {redact_url(settings.url)}"
