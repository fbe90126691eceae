"""The ready `dockship.toml` for the lab (design §3), written by `lab up`.

Environment `lab` lists the nodes; environment `lab-chef` finds the same
nodes through the lab's Chef server. TOML is written by hand: every value
goes through `json.dumps`, whose output for strings, numbers, booleans and
lists of them is also valid TOML.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    balancer_socket: Path | None = None     # the lab HAProxy's runtime API
    balancer_url: str | None = None


def config_path(paths: LabPaths) -> Path:
    return paths.root / "dockship.toml"


def _v(value: Any) -> str:
    """A TOML value: json.dumps of str/int/bool/list-of-those is valid TOML."""
    if isinstance(value, Path):
        value = str(value)
    return json.dumps(value, ensure_ascii=False)


def _inline(pairs: Sequence[tuple[str, Any]]) -> str:
    return "{ " + ", ".join(f"{k} = {_v(v)}" for k, v in pairs) + " }"


def render(v: LabConfigValues, path: Path) -> str:
    nodes = "\n".join(
        "  " + _inline([("name", n.name), ("docker", n.docker), ("address", n.address),
                        ("zone", n.zone), ("roles", ["web"])]) + ","
        for n in v.nodes)
    ssh = _inline([("user", v.ssh_user), ("key", v.ssh_key), ("known_hosts", v.ssh_known_hosts)])
    chef = _inline([("url", v.chef_url), ("client", v.chef_client), ("key", v.chef_key),
                    ("environment", v.chef_environment), ("docker", v.chef_docker)])
    balancer = ""
    if v.balancer_socket is not None:
        balancer = f"""[environments.lab.balancer]
# The lab's HAProxy ({v.balancer_url}) balances the nodes; each node is drained there
# before its container stops and put back in service once the new one is healthy.
kind = "haproxy"
socket = {_v(v.balancer_socket)}
backend = "hello"

"""
    return f"""\
# dockship configuration for the local lab, written by `dockship lab up`.
# It is rewritten by every `lab up` and removed by `lab down`: copy it before editing.
# Use it with:  dockship --config {path} roll --env lab   (or DOCKSHIP_CONFIG={path})
#
# Lab services this file points at:
#   package index  {v.index_url}  (upload with: twine upload --repository-url {v.index_upload_url} dist/*)
#   registry       {v.registry}  (TLS by the lab CA {v.ca_bundle}, no auth)
#   registry+auth  {v.registry_auth}  (user "dockship", password in {v.registry_password_file})
#   Chef server    {v.chef_url}

[index]
# PEP 503 simple index the service packages are installed from (pypiserver).
url = {_v(v.index_url)}

[registry]
# Images are pushed and pulled as {{registry}}/{{image}}:{{tag}}. The build engine and
# every node reach the registry at this one address; engines trust it through
# /etc/docker/certs.d/{v.registry}/ca.crt.
url = {_v(v.registry)}

[build]
# Python base image made by the lab from Debian bookworm packages (no Docker Hub here).
base_image = {_v(v.base_image)}
# template: the Dockerfile template shipped with dockship (set `template` to use your own).

[services.hello]
# The example service: the `hello-svc` package on the lab index.
package = "hello-svc"
image = "hello"
port = 8000                 # container port, published on the node
role = "web"                # runs on nodes with role "web"

[services.hello.health]
path = "/health"            # must answer 200 within `timeout` s, then stay healthy `min_healthy` s
status = 200

[environments.lab]
# The lab nodes: each its own Docker engine, reached over SSH with the lab's key.
nodes = [
{nodes}
]
ssh = {ssh}

[environments.lab.rollout]
canary = 1                  # the first node is rolled alone
batch = 1                   # then one node at a time
auto_rollback = true        # a failure puts every already-updated node back

{balancer}[environments.lab-chef]
# The same nodes, found in the lab's Chef server (goiardi) instead of listed:
# role:web AND chef_environment:lab, address from automatic.ipaddress, zone from normal.zone.
chef = {chef}
ssh = {ssh}
"""


def write_config(paths: LabPaths, values: LabConfigValues) -> Path:
    """Write the lab's dockship.toml (atomically) and return its path."""
    path = config_path(paths)
    text = render(values, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text() == text:
        return path
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
