"""The lab's Chef server: goiardi, in memory, on 127.0.0.1:4545.

goiardi keeps everything in memory and writes a fresh `admin.pem` into its
conf root at each start. So after a (re)start everything is registered again:
environment `lab`, role `web`, the API client `dockship` (its key saved for
the generated config) and one node per lab node. While it keeps running and
the saved `dockship` key still works, only the nodes are brought up to date.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from dockship.chef import ChefClient, create_client, ensure_environment, ensure_role, upsert_node
from dockship.errors import DockshipError
from dockship_lab.engine import ensure_daemon, lab_pid, log_path, require_program, stop_lab_daemon
from dockship_lab.paths import LabPaths, write_file
from dockship_lab.process import LabError

HOST = "127.0.0.1"
PORT = 4545
URL = f"http://{HOST}:{PORT}"
ADMIN = "admin"
CLIENT = "dockship"
ENVIRONMENT = "lab"
ROLE = "web"
_LAB_NODE_NAME = re.compile(r"^node\d+$")


class NodeLike(Protocol):
    name: str
    address: str
    zone: str


def chef_dir(paths: LabPaths) -> Path:
    return paths.root / "chef"


def client_key_path(paths: LabPaths) -> Path:
    return chef_dir(paths) / f"{CLIENT}.pem"


def _conf_root(paths: LabPaths) -> Path:
    return chef_dir(paths) / "server"


def _pidfile(paths: LabPaths) -> Path:
    return paths.run / "goiardi.pid"


def _admin(paths: LabPaths) -> ChefClient:
    return ChefClient(URL, ADMIN, _conf_root(paths) / "admin.pem", timeout=5, setting="lab chef admin")


def _client(paths: LabPaths) -> ChefClient:
    return ChefClient(URL, CLIENT, client_key_path(paths), timeout=5, setting="lab chef client")


def _works(make: Callable[[], ChefClient], path: str) -> bool:
    try:
        with make() as chef:
            chef.get(path)
        return True
    except (DockshipError, OSError):
        return False


def chef_running(paths: LabPaths) -> bool:
    return lab_pid(_pidfile(paths), "goiardi") is not None


def chef_answers(paths: LabPaths) -> bool:
    """Does the server accept the lab's `dockship` client key?"""
    return client_key_path(paths).exists() and _works(lambda: _client(paths), f"clients/{CLIENT}")


def _clear_keys(conf: Path) -> None:
    conf.mkdir(parents=True, exist_ok=True)
    for pem in conf.glob("*.pem"):
        pem.unlink()


def chef_up(paths: LabPaths, nodes: Sequence[NodeLike]) -> bool:
    """Start (or reuse) goiardi and register the lab in it; True if it was (re)started."""
    goiardi = require_program("goiardi", "goiardi")
    conf = _conf_root(paths)
    argv = [goiardi, "-A", "-I", HOST, "-P", str(PORT), "-H", HOST, "--conf-root", str(conf),
            "-g", "warning"]
    restarted = ensure_daemon(
        what=f"Chef server (goiardi) at {URL}", program="goiardi", argv=argv, pidfile=_pidfile(paths),
        logfile=log_path(paths, "goiardi"), listen=(HOST, PORT), timeout=30,
        healthy=lambda: _works(lambda: _admin(paths), f"users/{ADMIN}"),
        before_start=lambda: _clear_keys(conf))
    try:
        with _admin(paths) as admin:
            ensure_environment(admin, ENVIRONMENT, description="dockship lab nodes")
            ensure_role(admin, ROLE, description="runs the lab's web services")
            if restarted or not chef_answers(paths):
                write_file(client_key_path(paths), create_client(admin, CLIENT), 0o600)
            _register_nodes(admin, nodes)
    except DockshipError as exc:
        raise LabError(f"registering the lab in the Chef server at {URL} failed: {exc}") from None
    if not chef_answers(paths):
        raise LabError(f"the Chef server at {URL} does not accept the new '{CLIENT}' client key "
                       f"({client_key_path(paths)}); see {log_path(paths, 'goiardi')}")
    return restarted


def _register_nodes(admin: ChefClient, nodes: Sequence[NodeLike]) -> None:
    wanted = {n.name for n in nodes}
    for node in nodes:
        upsert_node(admin, node.name, environment=ENVIRONMENT, run_list=[f"role[{ROLE}]"],
                    automatic={"ipaddress": node.address, "hostname": node.name, "fqdn": node.name},
                    normal={"zone": node.zone})
    # Nodes of an earlier, larger lab would still be found by searches.
    for name in sorted(admin.get("nodes") or {}):
        if _LAB_NODE_NAME.match(name) and name not in wanted:
            admin.delete(f"nodes/{quote(name, safe='')}")


def chef_down(paths: LabPaths) -> None:
    stop_lab_daemon(_pidfile(paths), "goiardi")
