"""Which nodes run a service in an environment: a static list, a Chef search, or etcd.

Either way the answer is a tuple of `Node` records in a stable order (config
order for lists, name order for Chef and etcd), resolved before anything is
touched. etcd's entries are read and checked in `etcdnodes`.
What a Chef server says about its nodes is checked like configuration
(design §8): a name, an address that is an IP address or host name and
nothing else, a zone; one bad node refuses the whole answer, naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dockship import checks
from dockship.chef import ChefClient
from dockship.config import ChefSettings, Environment, Node, Service, node_endpoint
from dockship.etcdnodes import etcd_nodes
from dockship.errors import ConfigError, UsageError, printable
from dockship.redact import redact_url


def nodes_for(env: Environment, service: Service) -> tuple[Node, ...]:
    """The nodes of `env` that run `service` (by its role); at least one, or a clear error."""
    if env.swarm is not None:   # its nodes are reached through the manager (backends.py)
        raise UsageError(f"environment '{env.name}' is a Docker Swarm: its nodes are reached "
                         "through its manager, not one by one; this command works on "
                         "environments with `nodes` or `chef` (roll, rollback, status, history "
                         "and lock work on a swarm)")
    if env.chef is not None:
        nodes = chef_nodes(env.chef, env.name, service.role, setting=f"environments.{env.name}.chef")
        where = (f"Chef search 'role:{service.role} AND chef_environment:{env.chef.environment}'"
                 if service.role else f"Chef search 'chef_environment:{env.chef.environment}'")
    elif env.etcd is not None:
        nodes = etcd_nodes(env, service.role)
        where = f"etcd {redact_url(env.etcd.url)} under {env.etcd.prefix}" + (
            f" with role '{service.role}'" if service.role else "")
    else:
        nodes = tuple(n for n in env.nodes or () if n.runs(service.role))
        where = f"environments.{env.name}.nodes" + (f" with role '{service.role}'" if service.role else "")
    if not nodes:
        raise UsageError(f"no nodes for service '{service.name}' in environment '{env.name}' "
                         f"({where} found none)")
    return nodes


def chef_nodes(chef: ChefSettings, env_name: str, role: str | None, *, setting: str) -> tuple[Node, ...]:
    """Nodes found by a partial search, sorted by name; a node with bad data is a ConfigError."""
    query = f"chef_environment:{chef.environment}"
    if role:
        query = f"role:{role} AND {query}"
    keys = {"name": ["name"]}
    for field in ("address", "zone"):
        path = chef.attributes.get(field)
        if path:
            keys[field] = path.split(".")
    verify = chef.verify if isinstance(chef.verify, bool) else str(chef.verify)
    with ChefClient(chef.url, chef.client, chef.key, sign_version=chef.sign_version,
                    verify=verify, setting=setting) as client:
        rows = client.search("node", query, keys=keys)
    return tuple(chef_node(row, chef, role, setting=setting)
                 for row in sorted(rows, key=lambda r: str(r.get("name"))))


def chef_node(row: Mapping[str, Any], chef: ChefSettings, role: str | None, *,
              setting: str) -> Node:
    """One search row (`name`, `address`, `zone`) as a Node, checked like a configured node."""
    name, address, zone = row.get("name"), row.get("address"), row.get("zone")
    if isinstance(zone, int) and not isinstance(zone, bool):
        zone = str(zone)                  # zone = 3 in Chef is zone "3"
    zone = zone or None
    shown = checks.shown(name) if isinstance(name, str) else "?"
    server = f"the Chef server {printable(chef.url)}"
    if problem := checks.name_problem(name):
        raise ConfigError(f"{setting}: a node found on {server} has a bad name: {problem}; "
                          "fix the node there (dockship touched nothing)")
    if address is None or address == "":
        raise ConfigError(f"{setting}.attributes.address: Chef node {shown} has no "
                          f"'{chef.attributes.get('address')}' attribute to reach it by; set "
                          "attributes.address to the attribute holding its address")
    if problem := checks.host_problem(address):
        raise ConfigError(f"{setting}.attributes.address: Chef node {shown}: address {problem}; "
                          f"fix the node's '{chef.attributes.get('address')}' attribute on {server}")
    if zone is not None and (problem := checks.name_problem(zone)):
        raise ConfigError(f"{setting}.attributes.zone: Chef node {shown}: zone {problem}; "
                          f"fix the node's '{chef.attributes.get('zone')}' attribute on {server}")
    docker = node_endpoint(chef.docker, name, address)
    if problem := checks.docker_endpoint_problem(docker):
        raise ConfigError(f"{setting}.docker: for Chef node {shown}: {problem}")
    return Node(name=name, docker=docker, zone=zone, roles=(role,) if role else (),
                address=address)
