"""Which nodes run a service in an environment: a static list, or a Chef search.

Either way the answer is a tuple of `Node` records in a stable order (config
order for lists, name order for Chef), resolved before anything is touched.
"""

from __future__ import annotations

from dockship.chef import ChefClient
from dockship.config import ChefSettings, Environment, Service, docker_endpoint_problem
from dockship.config import Node
from dockship.errors import ConfigError, UsageError


def nodes_for(env: Environment, service: Service) -> tuple[Node, ...]:
    """The nodes of `env` that run `service` (by its role); at least one, or a clear error."""
    if env.chef is not None:
        nodes = chef_nodes(env.chef, env.name, service.role, setting=f"environments.{env.name}.chef")
        where = (f"Chef search 'role:{service.role} AND chef_environment:{env.chef.environment}'"
                 if service.role else f"Chef search 'chef_environment:{env.chef.environment}'")
    else:
        nodes = tuple(n for n in env.nodes or () if n.runs(service.role))
        where = f"environments.{env.name}.nodes" + (f" with role '{service.role}'" if service.role else "")
    if not nodes:
        raise UsageError(f"no nodes for service '{service.name}' in environment '{env.name}' "
                         f"({where} found none)")
    return nodes


def chef_nodes(chef: ChefSettings, env_name: str, role: str | None, *, setting: str) -> tuple[Node, ...]:
    """Nodes found by a partial search, sorted by name."""
    query = f"chef_environment:{chef.environment}"
    if role:
        query = f"role:{role} AND {query}"
    keys = {"name": ["name"]}
    for field in ("address", "zone"):
        path = chef.attributes.get(field)
        if path:
            keys[field] = path.split(".")
    with ChefClient(chef.url, chef.client, chef.key, sign_version=chef.sign_version,
                    setting=setting) as client:
        rows = client.search("node", query, keys=keys)
    nodes = []
    for row in sorted(rows, key=lambda r: str(r.get("name"))):
        name, address = row.get("name"), row.get("address")
        if not name or not address:
            raise ConfigError(f"{setting}.attributes: Chef node {name or '?'} has no "
                              f"'{chef.attributes.get('address')}' attribute to reach it by; "
                              "set attributes.address to the attribute holding its address")
        docker = chef.docker.replace("{address}", str(address)).replace("{name}", str(name))
        problem = docker_endpoint_problem(docker)
        if problem:
            raise ConfigError(f"{setting}.docker: for node {name}: {problem}")
        zone = row.get("zone")
        nodes.append(Node(name=str(name), docker=docker, zone=str(zone) if zone else None,
                          roles=(role,) if role else (), address=str(address)))
    return tuple(nodes)

