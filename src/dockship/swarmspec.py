"""How a dockship service is laid out on a Docker Swarm, as pure functions of plain data.

Swarm updates a service's tasks in an order of its own, keeps one previous
spec, and an automatic rollback clears that (design §6). dockship's roll
needs more: a canary first, zones one at a time, each node gated on its own
health probe, and the previous version of every node kept until the roll
is over. So dockship keeps each version a node may run as its own Swarm
service, a *revision* (Kubernetes keeps ReplicaSets the same way), and
moves nodes between revisions with a node label that the revisions'
placement constraints read:

    revision  hello-lab-1a2b3c4d5e6f   global, constraint
              node.labels.dockship.run.lab.hello == hello-lab-1a2b3c4d5e6f
    node      dockship.run.lab.hello  = the revision it runs (the cursor)
              dockship.prev.lab.hello = the revision it ran before

Moving one node is two label writes: clear the cursor (Swarm stops the old
task: stop-first, so the host-mode port is free), then point it at the new
revision (Swarm starts the new task). Putting a node back is the same walk
the other way; the old revision is still there, untouched. A revision no
node points at runs no task; the newest few are kept, like stopped
containers on an SSH node.

The swarm's own node labels say who a node is: `dockship.name` (default:
its hostname), `dockship.zone` and `dockship.roles` (comma-separated; none:
any role), so zones are node labels, and a zone-at-a-time roll is a
sequence of label writes on that zone's nodes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dockship import checks
from dockship.config import HealthCheck
from dockship.errors import ConfigError, UsageError
from dockship.labels import DEPLOY_ID, DEPLOYED_AT, DIGEST, ENV, ROOT, SERVICE, SETTINGS, TAG

NAME_LABEL = "dockship.name"
ZONE_LABEL = "dockship.zone"
ROLES_LABEL = "dockship.roles"
REVISION = f"{ROOT}.revision"          # on a revision service: its own name
MAX_SERVICE_NAME = 63
NANO = 1_000_000_000


def cursor_label(env: str, service: str) -> str:
    """The node label naming the revision the node runs."""
    return f"dockship.run.{env}.{service}"


def previous_label(env: str, service: str) -> str:
    """The node label naming the revision the node ran before (what a rollback goes back to)."""
    return f"dockship.prev.{env}.{service}"


def revision_name(env: str, service: str, deploy_id: str) -> str:
    """`hello-lab-1a2b3c4d5e6f`: Swarm service names are letters, digits and inner dashes.

    One revision per deploy: a roll never changes a service that has tasks,
    and names never collide (the deploy id is random; the labels hold the truth).
    """
    head = re.sub(r"[^A-Za-z0-9]+", "-", f"{service}-{env}").strip("-")
    tail = re.sub(r"[^A-Za-z0-9]+", "", deploy_id)[:12] or "x"
    return f"{head[:MAX_SERVICE_NAME - len(tail) - 1].rstrip('-')}-{tail}"


def constraint(env: str, service: str, revision: str) -> str:
    return f"node.labels.{cursor_label(env, service)} == {revision}"


@dataclass(frozen=True)
class SwarmNodeInfo:
    """A swarm node as dockship sees it: who it is (from its labels) and its engine's state."""

    id: str
    version: int
    name: str
    address: str
    zone: str | None
    roles: tuple[str, ...]
    labels: Mapping[str, str]
    ready: bool
    active: bool
    manager_addr: str | None = None     # "10.0.0.1:2377" for a manager

    def runs(self, role: str | None) -> bool:
        return role is None or not self.roles or role in self.roles


def node_info(raw: Mapping[str, Any]) -> SwarmNodeInfo:
    """One entry of `GET /nodes` as a SwarmNodeInfo; ValueError if it has no usable identity."""
    spec = raw.get("Spec") or {}
    labels = dict(spec.get("Labels") or {})
    desc = raw.get("Description") or {}
    status = raw.get("Status") or {}
    name = labels.get(NAME_LABEL) or desc.get("Hostname") or ""
    roles = tuple(r.strip() for r in (labels.get(ROLES_LABEL) or "").split(",") if r.strip())
    manager = raw.get("ManagerStatus") or {}
    return SwarmNodeInfo(
        id=str(raw.get("ID") or ""), version=int((raw.get("Version") or {}).get("Index") or 0),
        name=name, address=str(status.get("Addr") or ""), zone=labels.get(ZONE_LABEL) or None,
        roles=roles, labels=labels, ready=status.get("State") == "ready",
        active=spec.get("Availability", "active") == "active",
        manager_addr=manager.get("Addr") or None)


def usable_nodes(raw: list[Mapping[str, Any]], *, env: str, service: str,
                 role: str | None) -> list[SwarmNodeInfo]:
    """The ready, active nodes that run `role`, by name. What a swarm says of its nodes is
    checked like configuration (design §8): a bad name, zone or address label, or two nodes
    of one name, refuse the whole answer, naming the node."""
    out: dict[str, SwarmNodeInfo] = {}
    where = f"environments.{env}.swarm"
    for entry in raw:
        info = node_info(entry)
        if not (info.ready and info.active and info.runs(role)):
            continue
        shown = checks.shown(info.name or info.id)
        if problem := checks.name_problem(info.name):
            raise ConfigError(f"{where}: swarm node {checks.shown(info.id)} has a bad name "
                              f"{problem}; set its label with `docker node update "
                              f"--label-add dockship.name=NAME {info.id[:12]}`")
        if info.zone is not None and (problem := checks.name_problem(info.zone)):
            raise ConfigError(f"{where}: swarm node {shown}: label dockship.zone {problem}")
        for r in info.roles:
            if problem := checks.name_problem(r):
                raise ConfigError(f"{where}: swarm node {shown}: label dockship.roles {problem}")
        if problem := checks.host_problem(info.address):
            raise ConfigError(f"{where}: swarm node {shown}: address {problem}")
        if info.name in out:
            raise ConfigError(f"{where}: two swarm nodes are named {shown} "
                              f"({out[info.name].id[:12]} and {info.id[:12]}); give each a "
                              "dockship.name label")
        out[info.name] = info
    if not out:
        with_role = f" with role '{role}' (label dockship.roles)" if role else ""
        raise UsageError(f"no ready swarm nodes{with_role} for service '{service}' in "
                         f"environment '{env}'")
    return [out[k] for k in sorted(out)]


@dataclass(frozen=True)
class Revision:
    """One revision service: what its tasks run."""

    name: str
    id: str
    tag: str | None
    digest: str | None
    deploy_id: str | None
    settings: str | None
    deployed_at: str | None

    @classmethod
    def of(cls, raw: Mapping[str, Any]) -> "Revision":
        spec = raw.get("Spec") or {}
        labels = spec.get("Labels") or {}
        return cls(name=spec.get("Name", ""), id=raw.get("ID", ""), tag=labels.get(TAG),
                   digest=labels.get(DIGEST), deploy_id=labels.get(DEPLOY_ID),
                   settings=labels.get(SETTINGS), deployed_at=labels.get(DEPLOYED_AT))


def revision_labels(env: str, service: str, *, name: str, tag: str, digest: str,
                    deploy_id: str, settings: str, deployed_at: str) -> dict[str, str]:
    """The labels of a revision service and of its containers (the container labels an SSH
    roll writes, so `docker ps --filter label=io.dockship.service=hello` finds both)."""
    return {SERVICE: service, ENV: env, TAG: tag, DIGEST: digest, DEPLOY_ID: deploy_id,
            SETTINGS: settings, DEPLOYED_AT: deployed_at, REVISION: name}


# The container HEALTHCHECK Swarm watches (it holds a task in "starting" until it passes, and
# replaces a task that turns unhealthy later). dockship's own probe still gates every node:
# this only lets Swarm heal a node between rolls. The URL and Host come in as arguments, never
# as code; the image is a Python service, so python3 is there.
_HTTP_CHECK = (
    "import sys,ssl,urllib.request,urllib.error\n"
    "u,h,ok=sys.argv[1],sys.argv[2],sys.argv[3]\n"
    "r=urllib.request.Request(u,headers={'Host':h} if h else {})\n"
    "try:c=urllib.request.urlopen(r,timeout=float(sys.argv[4]),"
    "context=ssl._create_unverified_context()).status\n"
    "except urllib.error.HTTPError as e:c=e.code\n"
    "sys.exit(0 if str(c)==ok else 1)\n")
_TCP_CHECK = ("import socket,sys\n"
              "socket.create_connection(('127.0.0.1',int(sys.argv[1])),float(sys.argv[2])).close()\n")


def healthcheck(check: HealthCheck, port: int) -> dict[str, Any]:
    """The HEALTHCHECK of a revision's containers, from the service's health settings."""
    probe_timeout = max(1.0, min(5.0, check.timeout / 4))
    if check.kind == "tcp":
        test = ["CMD", "python3", "-c", _TCP_CHECK, str(port), f"{probe_timeout:g}"]
    else:
        url = f"{check.scheme}://127.0.0.1:{port}{check.path}"
        test = ["CMD", "python3", "-c", _HTTP_CHECK, url, check.host or "", str(check.status),
                f"{probe_timeout:g}"]
    return {"Test": test, "Interval": int(max(1.0, check.interval) * NANO),
            "Timeout": int((probe_timeout + 1) * NANO), "Retries": 3,
            "StartPeriod": int(check.timeout * NANO)}


def container_spec(*, ref: str, command: tuple[str, ...], env: Mapping[str, str],
                   labels: Mapping[str, str], stop_timeout: float,
                   health: Mapping[str, Any] | None) -> dict[str, Any]:
    """ContainerSpec: the image by digest, with an init (a stop takes 0.15 s, not 10 s).
    `command` replaces the image's CMD, as `docker run IMAGE ARGS` does (Swarm's `Args`)."""
    spec: dict[str, Any] = {
        "Image": ref, "Env": [f"{k}={v}" for k, v in sorted(env.items())],
        "Labels": dict(labels), "Init": True, "StopGracePeriod": int(stop_timeout * NANO)}
    if command:
        spec["Args"] = list(command)
    if health is not None:
        spec["Healthcheck"] = dict(health)
    return spec


def service_spec(*, name: str, env: str, service: str, container: Mapping[str, Any],
                 labels: Mapping[str, str], port: int, host_port: int,
                 min_healthy: float) -> dict[str, Any]:
    """A revision: global (one task per node whose cursor names it), published in host mode
    with DNS round robin (no IPVS here, design §6: the balancer in front does the rest)."""
    monitor = int(max(1.0, min_healthy) * NANO)
    update = {"Parallelism": 1, "Delay": 0, "FailureAction": "rollback", "Monitor": monitor,
              "Order": "stop-first", "MaxFailureRatio": 0}
    return {
        "Name": name, "Labels": dict(labels),
        "TaskTemplate": {
            "ContainerSpec": dict(container),
            "RestartPolicy": {"Condition": "any", "Delay": NANO, "MaxAttempts": 0},
            "Placement": {"Constraints": [constraint(env, service, name)]},
            "ForceUpdate": 0,
        },
        "Mode": {"Global": {}},
        # A revision's tasks are never updated by dockship (a roll moves nodes between
        # revisions); these only shape a `docker service update` someone runs by hand.
        "UpdateConfig": update, "RollbackConfig": dict(update, FailureAction="pause"),
        "EndpointSpec": {"Mode": "dnsrr", "Ports": [
            {"Protocol": "tcp", "TargetPort": port, "PublishedPort": host_port,
             "PublishMode": "host"}]},
    }


def task_state(task: Mapping[str, Any]) -> tuple[str, str, str]:
    """(desired state, actual state, its error or message) of one task."""
    status = task.get("Status") or {}
    return (str(task.get("DesiredState") or ""), str(status.get("State") or ""),
            str(status.get("Err") or status.get("Message") or ""))


LIVE_STATES = frozenset({"new", "pending", "assigned", "accepted", "preparing", "ready",
                         "starting", "running"})
FAILED_STATES = frozenset({"failed", "rejected", "orphaned"})


def running_task(tasks: list[Mapping[str, Any]], *, started: bool = False
                 ) -> Mapping[str, Any] | None:
    """The newest task that runs (desired and actual state `running`); with `started`, also
    one whose container has started and waits for its HEALTHCHECK (`starting`)."""
    states = {"running", "starting"} if started else {"running"}
    live = [t for t in tasks if task_state(t)[0] == "running" and task_state(t)[1] in states]
    return max(live, key=lambda t: str(t.get("CreatedAt") or ""), default=None)


def start_problem(tasks: list[Mapping[str, Any]], since: str) -> str | None:
    """Why the revision's task on a node failed to start (a task created at or after `since`
    that failed or was rejected), or None while it may still come up."""
    for t in sorted(tasks, key=lambda t: str(t.get("CreatedAt") or "")):
        desired, state, err = task_state(t)
        if str(t.get("CreatedAt") or "") >= since and state in FAILED_STATES:
            return f"the task {state}: {err or 'no reason given'}"
    return None


def stopped(tasks: list[Mapping[str, Any]]) -> bool:
    """No task of the revision is live on the node any more (its container is gone)."""
    return not any(task_state(t)[1] in LIVE_STATES for t in tasks)
