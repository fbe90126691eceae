"""The lab's load balancer: HAProxy in front of the lab nodes, drained through its runtime API.

`lab up` starts one for the example service `hello`: a frontend on
127.0.0.1:8080, backend `hello` with one server per node (`node1` ...) at
the node's address and port 8000, HTTP health checks on /health. With a
swarm (`lab up --swarm`) a second one, `hello-swarm`, balances the same
service's Swarm tasks: frontend 127.0.0.1:8082, nodes' port 8001. Tests start
more, one per service they roll (`balancer_up(paths, name, ...)`): each is
its own HAProxy process with its own config, runtime API socket, pid file and
log, named `haproxy-NAME` under the lab's dirs, so `lab down` finds and stops
every one of them.

HAProxy runs in the foreground (`-db`) as a lab daemon (pid file and command
line, like the other lab daemons). A changed config (other nodes) restarts it;
a running one with the same config is reused.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dockship.errors import DockshipError
from dockship.haproxy import RuntimeAPI
from dockship_lab.engine import ensure_daemon, lab_pid, log_path, require_program, stop_lab_daemon
from dockship_lab.paths import LabPaths
from dockship_lab.process import LabError, port_open, run

HOST = "127.0.0.1"
NAME = "hello"            # the lab balancer: backend of the example service
PORT = 8080               # its frontend
SERVICE_PORT = 8000       # the example service's port on the nodes
# The same service run as Swarm tasks (environment `labswarm`) on the same node
# engines as the `lab` containers, so it publishes another port there.
SWARM_NAME = "hello-swarm"
SWARM_PORT = 8082
SWARM_SERVICE_PORT = 8001
PROGRAM = "haproxy"
_PREFIX = "haproxy-"


@dataclass(frozen=True)
class BalancerInfo:
    name: str
    socket: str           # runtime API (level admin): `[environments.X.balancer] socket`
    frontend_url: str     # send requests here
    backend: str          # the backend with one server per node, named like the nodes

    def to_json(self) -> dict[str, str]:
        return {"url": self.frontend_url, "socket": self.socket, "backend": self.backend}


def _check_name(name: str) -> None:
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise LabError(f"balancer name {name!r}: use letters, digits, '-', '_' and '.'")


def socket_path(paths: LabPaths, name: str = NAME) -> Path:
    return paths.run / f"{_PREFIX}{name}.sock"


def _pidfile(paths: LabPaths, name: str) -> Path:
    return paths.run / f"{_PREFIX}{name}.pid"


def config_file(paths: LabPaths, name: str = NAME) -> Path:
    return paths.root / "balancer" / f"{name}.cfg"


def info(paths: LabPaths, name: str = NAME, listen_port: int = PORT, *,
         listen_host: str = HOST) -> BalancerInfo:
    return BalancerInfo(name=name, socket=str(socket_path(paths, name)),
                        frontend_url=f"http://{listen_host}:{listen_port}", backend=name)


def _node(n: Any) -> tuple[str, str]:
    """(name, address) of a lab node: a status record, a lab node, or its JSON dict."""
    if isinstance(n, Mapping):
        return str(n["name"]), str(n["address"])
    return str(n.name), str(n.address)


def render(name: str, socket: Path, listen_host: str, listen_port: int, service_port: int,
           nodes: Sequence[Any]) -> str:
    servers = "\n".join(f"    server {n} {addr}:{service_port}" for n, addr in map(_node, nodes))
    return f"""\
# HAProxy for the dockship lab ({name}), written by dockship; rewritten by `lab up`.
global
    # The runtime API dockship drains and readies nodes through.
    stats socket {socket} mode 600 level admin
    stats timeout 30s
    # -db keeps HAProxy in the foreground: stdout is the lab's log of it.
    log stdout format raw local0 info

defaults
    mode http
    log global
    option httplog
    option dontlog-normal       # log only errors and abnormal requests
    option dontlognull          # and not the port probes of `lab status`
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-request 10s
    timeout http-keep-alive 10s
    timeout queue 10s
    timeout check 2s
    retries 3
    option redispatch

frontend {name}_in
    bind {listen_host}:{listen_port}
    default_backend {name}

backend {name}
    balance roundrobin
    option httpchk GET /health
    http-check expect status 200
    default-server check inter 500ms fall 2 rise 2
{servers}
"""


def answers(paths: LabPaths, name: str = NAME, listen_port: int = PORT, *,
            listen_host: str = HOST) -> bool:
    """Does the balancer run (its pid), answer on its runtime API and listen on its frontend?"""
    if lab_pid(_pidfile(paths, name), PROGRAM) is None:
        return False
    try:
        RuntimeAPI(socket_path(paths, name), setting="lab balancer socket", timeout=3).info()
    except DockshipError:
        return False
    return port_open(listen_host, listen_port)


def balancer_up(paths: LabPaths, name: str, listen_port: int, service_port: int,
                nodes: Sequence[Any], *, listen_host: str = HOST) -> BalancerInfo:
    """Start (or reuse) HAProxy `name`: frontend listen_host:listen_port, backend `name`
    with a server per node (named like the node) at address:service_port."""
    _check_name(name)
    if not nodes:
        raise LabError(f"balancer {name}: no nodes to balance")
    haproxy = require_program(PROGRAM, "haproxy")
    sock = socket_path(paths, name)
    cfg = config_file(paths, name)
    text = render(name, sock, listen_host, listen_port, service_port, nodes)
    old = cfg.read_text() if cfg.exists() else None
    changed = old != text
    if changed:
        _stop(paths, name, old)
        cfg.parent.mkdir(parents=True, exist_ok=True)
        tmp = cfg.with_name(f".{cfg.name}.tmp")
        tmp.write_text(text)
        checked = run([haproxy, "-c", "-f", str(tmp)], check=False)
        if checked.returncode != 0:
            tail = " | ".join((checked.stderr or checked.stdout).strip().splitlines()[-3:])
            raise LabError(f"HAProxy rejects the balancer config {tmp}: {tail}")
        os.replace(tmp, cfg)
    sock.parent.mkdir(parents=True, exist_ok=True)
    ensure_daemon(what=f"load balancer (HAProxy {name}) at {listen_host}:{listen_port}",
                  program=PROGRAM, argv=[haproxy, "-db", "-f", str(cfg)],
                  pidfile=_pidfile(paths, name), logfile=log_path(paths, f"{_PREFIX}{name}"),
                  healthy=lambda: answers(paths, name, listen_port, listen_host=listen_host),
                  listen=(listen_host, listen_port), timeout=15,
                  before_start=lambda: sock.unlink(missing_ok=True))
    return info(paths, name, listen_port, listen_host=listen_host)


_BIND = re.compile(r"^\s*bind\s+(\S+):(\d+)\s*$", re.MULTILINE)


def _stop(paths: LabPaths, name: str, config_text: str | None) -> bool:
    """Stop HAProxy `name`, and wait until its frontend port is free again.

    HAProxy's threads outlive its main thread by a moment: the pid looks dead
    (a zombie leader) while a worker thread still holds the listening socket.
    """
    stopped = stop_lab_daemon(_pidfile(paths, name), PROGRAM)
    bind = _BIND.search(config_text or "")
    if stopped and bind:
        host, port = bind.group(1), int(bind.group(2))
        deadline = time.monotonic() + 10
        while port_open(host, port, timeout=0.2) and time.monotonic() < deadline:
            time.sleep(0.05)
    return stopped


def balancer_down(paths: LabPaths, name: str) -> bool:
    """Stop HAProxy `name` and remove its socket and config; True if it was running."""
    _check_name(name)
    cfg = config_file(paths, name)
    stopped = _stop(paths, name, cfg.read_text() if cfg.exists() else None)
    socket_path(paths, name).unlink(missing_ok=True)
    config_file(paths, name).unlink(missing_ok=True)
    return stopped


def balancers_down(paths: LabPaths) -> list[str]:
    """Stop every lab balancer (the lab's and any a test left); the names that were running."""
    names = sorted(p.name[len(_PREFIX):-len(".pid")] for p in paths.run.glob(f"{_PREFIX}*.pid"))
    names += sorted(p.stem for p in (paths.root / "balancer").glob("*.cfg") if p.stem not in names)
    return [n for n in names if balancer_down(paths, n)]


# --- the lab's own balancer, for `lab up / status / down` --------------------------------

def lab_balancer_up(paths: LabPaths, nodes: Sequence[Any]) -> BalancerInfo:
    return balancer_up(paths, NAME, PORT, SERVICE_PORT, nodes)


def lab_balancer_answers(paths: LabPaths) -> bool:
    return answers(paths, NAME, PORT)


def lab_balancer_info(paths: LabPaths) -> BalancerInfo:
    return info(paths, NAME, PORT)


def swarm_balancer_up(paths: LabPaths, nodes: Sequence[Any]) -> BalancerInfo:
    return balancer_up(paths, SWARM_NAME, SWARM_PORT, SWARM_SERVICE_PORT, nodes)


def swarm_balancer_answers(paths: LabPaths) -> bool:
    return answers(paths, SWARM_NAME, SWARM_PORT)


def swarm_balancer_info(paths: LabPaths) -> BalancerInfo:
    return info(paths, SWARM_NAME, SWARM_PORT)


__all__ = ["BalancerInfo", "HOST", "NAME", "PORT", "SERVICE_PORT", "SWARM_NAME", "SWARM_PORT",
           "SWARM_SERVICE_PORT", "answers", "balancer_down", "balancer_up", "balancers_down",
           "config_file", "info", "lab_balancer_answers", "lab_balancer_info", "lab_balancer_up",
           "render", "socket_path", "swarm_balancer_answers", "swarm_balancer_info",
           "swarm_balancer_up"]
