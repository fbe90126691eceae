"""The ready `dockship.toml` for the lab (design §3), written by `lab up`.

Environment `lab` lists the nodes; environment `lab-chef` finds the same
nodes through the lab's Chef server, and `labetcd` in the lab's etcd. Environment
`labswarm` is written only while the lab nodes form a swarm (`lab up --swarm`): it has
no node list, its nodes are the swarm's, and an engine that is in no swarm would only
fail its rolls. Its Swarm tasks share the node engines with `lab`'s containers, so its
`hello` publishes port 8001 instead of 8000. The file is written from plain data by
`dockship.configfile`, the one config writer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dockship import configfile
from dockship_lab.paths import LabPaths


@dataclass(frozen=True)
class ConfigNode:
    name: str
    address: str
    docker: str
    zone: str


@dataclass(frozen=True)
class LabConfigValues:
    index_url: str
    index_upload_url: str
    registry: str
    registry_auth: str
    registry_password_file: Path
    ca_bundle: Path
    base_image: str
    nodes: tuple[ConfigNode, ...]
    ssh_user: str
    ssh_key: Path
    ssh_known_hosts: Path
    chef_url: str
    chef_client: str
    chef_key: Path
    chef_environment: str
    chef_docker: str = "ssh://root@{address}"
    etcd_url: str | None = None             # the lab's etcd, where the nodes are registered
    etcd_prefix: str | None = None
    balancer_socket: Path | None = None     # the lab HAProxy's runtime API
    balancer_url: str | None = None
    swarm_manager: str | None = None        # ssh://root@ADDRESS: the lab nodes form a swarm
    swarm_publish: int = 8001               # labswarm's host port for `hello`
    swarm_balancer_socket: Path | None = None
    swarm_balancer_url: str | None = None


def config_path(paths: LabPaths) -> Path:
    return paths.root / "dockship.toml"


def data(v: LabConfigValues) -> dict[str, Any]:
    """The lab config as the dict that is written out."""
    ssh = {"user": v.ssh_user, "key": v.ssh_key, "known_hosts": v.ssh_known_hosts}
    rollout = {"canary": 1, "batch": 1, "auto_rollback": True}
    lab: dict[str, Any] = {
        "nodes": [{"name": n.name, "docker": n.docker, "address": n.address, "zone": n.zone,
                   "roles": ["web"]} for n in v.nodes],
        "ssh": ssh,
        "rollout": rollout,
    }
    if v.balancer_socket is not None:
        lab["balancer"] = _balancer(v.balancer_socket, "hello")
    environments: dict[str, Any] = {
        "lab": lab,
        "lab-chef": {
            "chef": {"url": v.chef_url, "client": v.chef_client, "key": v.chef_key,
                     "environment": v.chef_environment, "docker": v.chef_docker},
            "ssh": ssh,
        },
    }
    if v.swarm_manager is not None:
        environments["labswarm"] = _labswarm(v, ssh, rollout)
    if v.etcd_url is not None:
        # the nodes of `lab` as etcd lists them; ssh, rollout and balancer as `lab`
        environments["labetcd"] = {"etcd": {"url": v.etcd_url, "prefix": v.etcd_prefix},
                                   **{k: value for k, value in lab.items() if k != "nodes"}}
    return {
        "index": {"url": v.index_url},
        "registry": {"url": v.registry},
        "build": {"base_image": v.base_image},
        "services": {"hello": {
            "package": "hello-svc",
            "image": "hello",
            "port": 8000,
            "role": "web",
            "health": {"path": "/health", "status": 200},
        }},
        "environments": environments,
    }


def _balancer(socket: Path, backend: str) -> dict[str, Any]:
    return {"kind": "haproxy", "socket": socket, "backend": backend}


def _labswarm(v: LabConfigValues, ssh: dict[str, Any], rollout: dict[str, Any]) -> dict[str, Any]:
    """The lab nodes as a swarm: no `nodes` (the swarm's nodes are the environment's)."""
    env: dict[str, Any] = {
        "swarm": {"manager": v.swarm_manager},
        "ssh": ssh,
        "rollout": rollout,
        "services": {"hello": {"publish": v.swarm_publish}},
    }
    if v.swarm_balancer_socket is not None:
        env["balancer"] = _balancer(v.swarm_balancer_socket, "hello-swarm")
    return env


def comment(v: LabConfigValues, path: Path) -> str:
    """The file's opening comment: how to use it, and what each table is."""
    etcd_line = f"\n  etcd           {v.etcd_url}" if v.etcd_url is not None else ""
    etcd = (f"\n[environments.labetcd]  the same nodes registered in the lab's etcd ({v.etcd_url}),\n"
            f"                   one JSON value per key under {v.etcd_prefix}; the deploy lock is an\n"
            "                   etcd lease; ssh, rollout and balancer as in `lab`"
            if v.etcd_url is not None else "")
    balancer = (f"; the lab's HAProxy ({v.balancer_url}) balances\n"
                "                   the nodes: each is drained there before its container stops"
                if v.balancer_socket is not None else "")
    swarm = "" if v.swarm_manager is None else f"""
[environments.labswarm]  the lab nodes as one Docker Swarm (three managers), managed through
                   {v.swarm_manager}; no node list: the swarm's nodes, labelled dockship.name,
                   dockship.zone and dockship.roles; `hello` publishes port {v.swarm_publish} (host mode)
                   there, beside lab's containers on 8000""" + (
        f"; HAProxy {v.swarm_balancer_url} balances it" if v.swarm_balancer_socket else "")
    return f"""\
dockship configuration for the local lab, written by `dockship lab up`.
It is rewritten by every `lab up` and removed by `lab down`: copy it before editing.
Use it with:  dockship --config {path} roll --env lab   (or DOCKSHIP_CONFIG={path})

Lab services this file points at:
  package index  {v.index_url}  (upload with: twine upload --repository-url {v.index_upload_url} dist/*)
  registry       {v.registry}  (TLS by the lab CA {v.ca_bundle}, no auth)
  registry+auth  {v.registry_auth}  (user "dockship", password in {v.registry_password_file})
  Chef server    {v.chef_url}{etcd_line}

[index]            the PEP 503 simple index (pypiserver) the service packages are installed from
[registry]         images are pushed and pulled as {{registry}}/{{image}}:{{tag}}; the build engine
                   and every node reach it at this one address and trust it through
                   /etc/docker/certs.d/{v.registry}/ca.crt
[build]            a Python base image made by the lab from Debian bookworm packages (no Docker
                   Hub here); no `template`: the Dockerfile template shipped with dockship
[services.hello]   the example service: package hello-svc on the lab index, port 8000 published
                   on nodes with role "web"; healthy once /health answers 200
[environments.lab] the lab nodes, each its own Docker engine reached over SSH with the lab's key;
                   the first node alone, then one at a time, every updated node put back on a
                   failure{balancer}
[environments.lab-chef]  the same nodes found in the lab's Chef server (goiardi):
                   role:web AND chef_environment:lab, address from automatic.ipaddress{etcd}{swarm}"""


def write_config(paths: LabPaths, values: LabConfigValues) -> Path:
    """Write the lab's dockship.toml (atomically) and return its path."""
    path = config_path(paths)
    return configfile.write(path, data(values), comment=comment(values, path))
