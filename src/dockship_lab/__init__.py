"""The lab: a local test bed of real servers, behind `dockship lab up | down | status`.

`up()` brings up, idempotently, a build engine (started only if none
answers), the lab network, a CA and TLS registries, a package index, a
Python base image, N node engines reachable over SSH, a Chef server and an
etcd where the nodes are registered, then writes a ready `dockship.toml`; with
`swarm=True` the node engines also form one Docker Swarm (`dockship_lab.swarm`).
What runs and is healthy is reused;
what is half there (a crashed daemon, a stale pid file, a lost key) is
repaired. `status()` probes every component, so a crashed one shows as down.
`down()` removes everything the lab made except the base image cache and a
build engine it did not start.

Nothing here prints: `up` reports each step to a `progress(step, detail)`
callback, which `dockship_lab.cli` renders. This package is the lab only:
dockship itself never imports it; `dockship lab ...` reaches it through
`command`, by name.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker

from dockship.errors import UsageError
from dockship_lab import balancer, bastion, chefserver, etcdserver, labconfig, pypi
from dockship_lab import nodes as lab_nodes_mod
from dockship_lab import swarm as swarm_mod
from dockship_lab.baseimage import (base_image_in_registry, base_image_ref, ensure_base_image,
                                    ensure_tarball, tarball_path, verify_pull)
from dockship_lab.engine import (build_client, engine_answers, engine_down, engine_started_by_lab,
                                 engine_up)
from dockship_lab.network import ipv4_addresses, link_exists, network_down, network_up
from dockship_lab.nodes import SSH_USER, client_key, existing_nodes, known_hosts_file, nodes_down, nodes_up
from dockship_lab.mounts import remove_tree
from dockship_lab.paths import BRIDGE, LabPaths
from dockship_lab.process import LabError
from dockship_lab.registry import (AUTH_USER, AUTHED, OPEN, PORTS, password_file, registries_down,
                                   registries_up, registry_address, registry_answers)
from dockship_lab.tls import LabTLS, ensure_tls, install_registry_ca, remove_registry_ca, tls_files

if TYPE_CHECKING:
    import argparse

    from rich.console import Console

__all__ = ["LabError", "LabPaths", "LabStatus", "NodeStatus", "Progress", "command", "down",
           "start_engine", "status", "stop_engine", "up"]

Progress = Callable[[str, str], None]

STEPS = ("lock", "engine", "network", "tls", "registry", "index", "base-image", "nodes", "bastion",
         "chef", "etcd", "balancer", "swarm", "config")


# --- status records ----------------------------------------------------------

@dataclass(frozen=True)
class NodeStatus:
    name: str
    address: str
    docker: str         # ssh://root@ADDR, as in the config
    zone: str
    up: bool            # its engine answers


@dataclass(frozen=True)
class SSHInfo:
    user: str
    key: str
    known_hosts: str


@dataclass(frozen=True)
class ChefInfo:
    url: str
    client: str
    key: str
    environment: str


@dataclass(frozen=True)
class RegistryAuthInfo:
    url: str            # host:port of the registry behind basic auth
    user: str
    password_file: str  # 0600; the password is never printed


@dataclass(frozen=True)
class Components:
    """What answers right now (each is probed, not remembered)."""

    engine: bool
    network: bool
    registry: bool
    registry_auth: bool
    index: bool
    base_image: bool    # the tag is in the registry
    nodes: bool         # at least one node, and every node's engine answers
    chef: bool          # goiardi accepts the lab's client key
    config: bool
    balancer: bool = False  # HAProxy answers on its runtime API and listens on its frontend
    etcd: bool = False      # the lab's etcd runs and answers

    @property
    def all_up(self) -> bool:
        return all(getattr(self, f.name) for f in fields(self))


@dataclass(frozen=True)
class LabStatus:
    index_url: str
    index_upload_url: str
    registry: str
    base_image: str
    nodes: tuple[NodeStatus, ...]
    ssh: SSHInfo
    chef: ChefInfo
    config: str
    registry_auth: RegistryAuthInfo
    ca_bundle: str
    engine_started_by_lab: bool
    up: Components
    balancer: balancer.BalancerInfo | None = None
    bastion: bastion.BastionInfo | None = None
    swarm: swarm_mod.SwarmInfo | None = None                # the lab nodes form a swarm
    swarm_balancer: balancer.BalancerInfo | None = None     # HAProxy for labswarm's `hello`
    etcd: etcdserver.EtcdInfo = etcdserver.info()

    @property
    def ok(self) -> bool:
        return self.up.all_up

    def to_json(self) -> dict[str, Any]:
        """The `lab status --json` object: design §5's fixed keys, then extras."""
        return {
            "index_url": self.index_url,
            "index_upload_url": self.index_upload_url,
            "registry": self.registry,
            "base_image": self.base_image,
            "nodes": [asdict(n) for n in self.nodes],
            "ssh": asdict(self.ssh),
            "chef": asdict(self.chef),
            "config": self.config,
            "registry_auth": asdict(self.registry_auth),
            "ca_bundle": self.ca_bundle,
            "engine_started_by_lab": self.engine_started_by_lab,
            "balancer": self.balancer.to_json() if self.balancer else None,
            "bastion": asdict(self.bastion) if self.bastion else None,
            "swarm": self._swarm_json(),
            "etcd": asdict(self.etcd),
            "up": {**asdict(self.up), "all": self.up.all_up},
        }

    def _swarm_json(self) -> dict[str, Any] | None:
        if self.swarm is None:
            return None
        return {**self.swarm.to_json(),
                "balancer": self.swarm_balancer.to_json() if self.swarm_balancer else None}


# --- the command line -------------------------------------------------------

def command(args: argparse.Namespace, err: Console) -> int:
    """Run `dockship lab up|down|status` as parsed by dockship's CLI; the exit code."""
    from dockship_lab.cli import command as run_command

    return run_command(args, err)


# --- helpers -----------------------------------------------------------------

def _ssh_info(paths: LabPaths) -> SSHInfo:
    return SSHInfo(user=SSH_USER, key=str(client_key(paths)), known_hosts=str(known_hosts_file(paths)))


def _chef_info(paths: LabPaths) -> ChefInfo:
    return ChefInfo(url=chefserver.URL, client=chefserver.CLIENT,
                    key=str(chefserver.client_key_path(paths)), environment=chefserver.ENVIRONMENT)


def _node_engine_url(node: Any) -> str:
    url = str(getattr(node, "docker_unix", "") or "")
    if url.startswith("unix://"):
        return url
    return f"unix://{url or node.socket}"


def _network_up(paths: LabPaths) -> bool:
    try:
        return link_exists(BRIDGE) and f"{paths.host_address}/24" in ipv4_addresses(BRIDGE)
    except LabError:
        return False


def _require_root(action: str) -> None:
    _require_root_for(f"`dockship lab {action}`")


def _require_root_for(what: str) -> None:
    if os.geteuid() != 0:
        raise LabError(f"{what} needs root (network namespaces, dockerd, "
                       "/etc/docker/certs.d); run it as root")


LOCK_WAIT = 900.0   # seconds a `lab up`/`down` waits for another one to finish


@contextlib.contextmanager
def _locked(paths: LabPaths, action: str, report: Progress) -> Iterator[None]:
    """One `lab up`/`lab down` at a time on this machine; a second one waits its turn."""
    paths.run.parent.mkdir(parents=True, exist_ok=True)
    lock = paths.run.parent / f".{paths.run.name}.lock"
    with open(lock, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            report("lock", f"waiting for another `dockship lab` command to finish ({lock})")
            deadline = time.monotonic() + LOCK_WAIT
            while True:
                time.sleep(0.5)
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise LabError(f"another `dockship lab` command has held {lock} for "
                                       f"{LOCK_WAIT:.0f}s; find it with `fuser -v {lock}`, "
                                       f"then retry `dockship lab {action}`") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# --- status ------------------------------------------------------------------

def status(paths: LabPaths | None = None) -> LabStatus:
    """What the lab is, and which of its parts answer right now."""

    paths = paths or LabPaths.default()
    tls = tls_files(paths)
    have_ca = tls.ca_cert.exists()
    present = existing_nodes(paths)
    nodes = tuple(NodeStatus(name=n.name, address=n.address, docker=n.docker, zone=n.zone,
                             up=engine_answers(_node_engine_url(n)))
                  for n in present)
    swarm = swarm_mod.info([n for n, s in zip(present, nodes) if s.up])
    components = Components(
        engine=engine_answers(),
        network=_network_up(paths),
        registry=have_ca and registry_answers(paths, OPEN, tls),
        registry_auth=have_ca and registry_answers(paths, AUTHED, tls),
        index=pypi.index_answers(),
        base_image=have_ca and base_image_in_registry(paths, tls),
        nodes=bool(nodes) and all(n.up for n in nodes),
        chef=chefserver.chef_answers(paths),
        config=labconfig.config_path(paths).exists(),
        balancer=balancer.lab_balancer_answers(paths),
        etcd=etcdserver.etcd_answers(paths),
    )
    return LabStatus(
        index_url=pypi.INDEX_URL,
        index_upload_url=pypi.UPLOAD_URL,
        registry=registry_address(paths, OPEN),
        base_image=base_image_ref(paths),
        nodes=nodes,
        ssh=_ssh_info(paths),
        chef=_chef_info(paths),
        config=str(labconfig.config_path(paths)),
        registry_auth=RegistryAuthInfo(url=registry_address(paths, AUTHED), user=AUTH_USER,
                                       password_file=str(password_file(paths))),
        ca_bundle=str(tls.bundle),
        engine_started_by_lab=engine_started_by_lab(paths),
        up=components,
        balancer=balancer.lab_balancer_info(paths),
        bastion=bastion.info(paths),
        swarm=swarm,
        swarm_balancer=(balancer.swarm_balancer_info(paths)
                        if swarm is not None and balancer.swarm_balancer_answers(paths) else None),
        etcd=etcdserver.info(),
    )


# --- up ----------------------------------------------------------------------

def up(nodes: int = 3, paths: LabPaths | None = None, progress: Progress | None = None,
       *, swarm: bool = False) -> LabStatus:
    """Bring the whole lab up (reusing what runs, repairing what is half there).

    `swarm`: the node engines also form one swarm (reused when it is already
    exactly the lab's nodes). Without it a swarm the nodes already form is
    left as it is and still configured (`labswarm`): a plain `lab up` of
    another test session must not take it apart under a Swarm roll.
    """
    if nodes < 1:
        raise UsageError(f"--nodes must be at least 1, got {nodes}")
    paths = paths or LabPaths.default()
    report: Progress = progress or (lambda step, detail: None)
    _require_root("up")
    with _locked(paths, "up", report):
        _up(paths, nodes, report, swarm)
    return status(paths)


class _Background:
    """Run one function in a thread; `result()` joins and re-raises its exception."""

    def __init__(self, fn: Callable[[], Any], name: str):
        self._value: Any = None
        self._error: BaseException | None = None

        def target() -> None:
            try:
                self._value = fn()
            except BaseException as exc:  # noqa: BLE001 - re-raised in result()
                self._error = exc

        self._thread = threading.Thread(target=target, name=name, daemon=True)
        self._thread.start()

    def running(self) -> bool:
        return self._thread.is_alive()

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def _up(paths: LabPaths, count: int, report: Progress, swarm: bool) -> None:
    paths.root.mkdir(parents=True, exist_ok=True)
    # The base image's root filesystem takes longest and needs nothing else:
    # make it (only when not cached) while the services come up.
    if not tarball_path(paths).exists():
        report("base-image", "making the root filesystem with mmdebstrap in the background "
                             "(about 25 s, once per machine)")
    rootfs = _Background(lambda: ensure_tarball(paths), "dockship-lab-rootfs")
    try:
        _up_services(paths, count, report, rootfs, swarm)
    except BaseException:
        with contextlib.suppress(BaseException):
            rootfs.result()   # never leave mmdebstrap writing while we exit
        raise


def _up_services(paths: LabPaths, count: int, report: Progress, rootfs: _Background,
                 swarm: bool) -> None:
    report("engine", "checking the build engine")
    started = engine_up(paths)
    report("engine", "started dockerd on the default socket" if started else "using the running engine")

    report("network", f"bridge {BRIDGE} with {paths.host_address}/24")
    network_up(paths)

    report("tls", f"lab CA and a certificate for {paths.host_address}")
    tls = ensure_tls(paths)
    install_registry_ca(tls, paths.host_address, PORTS)

    report("registry", f"{registry_address(paths, OPEN)} and {registry_address(paths, AUTHED)} (auth)")
    restarted = registries_up(paths, tls)
    report("registry", f"restarted {', '.join(restarted)}" if restarted else "running")

    report("index", pypi.INDEX_URL)
    report("index", "started" if pypi.index_up(paths) else "running")

    ref = base_image_ref(paths)
    report("base-image", ref)
    if rootfs.running():
        report("base-image", "waiting for mmdebstrap")
    rootfs.result()
    _base_image(paths, tls, report)

    report("nodes", f"{count} node engine(s) on {paths.subnet}.0/24")
    lab_nodes = nodes_up(paths, count, bastion.known_hosts_lines(paths))
    first = lab_nodes[0]
    report("nodes", f"{first.name} pulls {ref}")
    node_engine = docker.DockerClient(base_url=_node_engine_url(first), timeout=300)
    try:
        verify_pull(node_engine, ref, first.name)
    finally:
        node_engine.close()

    jump = bastion.info(paths).jump_only
    report("bastion", f"{bastion.address(paths)}; {jump.node}'s port {jump.ssh_port} answers "
                      f"only connections through it")
    bastion.bastion_up(paths)

    report("chef", f"{chefserver.URL}, environment {chefserver.ENVIRONMENT}, role {chefserver.ROLE}")
    restarted_chef = chefserver.chef_up(paths, lab_nodes)
    report("chef", f"{'started and registered' if restarted_chef else 'running; updated'} "
                   f"{len(lab_nodes)} node(s)")

    report("etcd", f"{etcdserver.URL}, nodes under {etcdserver.PREFIX}")
    started_etcd = etcdserver.etcd_up(paths, lab_nodes)
    report("etcd", f"{'started' if started_etcd else 'running'}; registered "
                   f"{len(lab_nodes)} node(s)")

    lb = balancer.lab_balancer_info(paths)
    report("balancer", f"HAProxy {lb.frontend_url} -> backend {lb.backend} on the nodes' "
                       f"port {balancer.SERVICE_PORT}, runtime API {lb.socket}")
    balancer.lab_balancer_up(paths, lab_nodes)

    formed = _swarm_up(paths, lab_nodes, report, swarm)

    path = labconfig.write_config(paths, _config_values(paths, tls, lab_nodes, formed))
    report("config", str(path))


def _swarm_up(paths: LabPaths, lab_nodes: list[Any], report: Progress,
              wanted: bool) -> swarm_mod.SwarmInfo | None:
    """Form the swarm if `wanted`; either way, the swarm the nodes form (and its balancer)."""
    if wanted:
        report("swarm", f"{len(lab_nodes)} node(s), managers "
                        f"{', '.join(n.name for n in lab_nodes[:swarm_mod.MANAGERS])}")
        formed = swarm_mod.swarm_up(lab_nodes, lambda text: report("swarm", text))
    else:
        formed = swarm_mod.info(lab_nodes)
    if formed is not None:
        lb = balancer.swarm_balancer_info(paths)
        report("swarm", f"manager {formed.manager}; HAProxy {lb.frontend_url} -> backend "
                        f"{lb.backend} on the nodes' port {balancer.SWARM_SERVICE_PORT}")
        balancer.swarm_balancer_up(paths, lab_nodes)
    return formed


def _base_image(paths: LabPaths, tls: LabTLS, report: Progress) -> None:
    client = build_client()
    try:
        ensure_base_image(paths, client, tls, lambda text: report("base-image", text))
    finally:
        client.close()


def _config_values(paths: LabPaths, tls: LabTLS, lab_nodes: list[Any],
                   swarm: swarm_mod.SwarmInfo | None) -> labconfig.LabConfigValues:
    ssh = _ssh_info(paths)
    swarm_lb = balancer.swarm_balancer_info(paths)
    return labconfig.LabConfigValues(
        index_url=pypi.INDEX_URL,
        index_upload_url=pypi.UPLOAD_URL,
        registry=registry_address(paths, OPEN),
        registry_auth=registry_address(paths, AUTHED),
        registry_password_file=password_file(paths),
        ca_bundle=tls.bundle,
        base_image=base_image_ref(paths),
        nodes=tuple(labconfig.ConfigNode(name=n.name, address=n.address, docker=n.docker, zone=n.zone)
                    for n in lab_nodes),
        ssh_user=ssh.user,
        ssh_key=Path(ssh.key),
        ssh_known_hosts=Path(ssh.known_hosts),
        balancer_socket=balancer.lab_balancer_info(paths).socket,
        balancer_url=balancer.lab_balancer_info(paths).frontend_url,
        chef_url=chefserver.URL,
        chef_client=chefserver.CLIENT,
        chef_key=chefserver.client_key_path(paths),
        chef_environment=chefserver.ENVIRONMENT,
        # node1's engine, as the design's example: `lab up` keeps every node up
        swarm_manager=lab_nodes[0].docker if swarm is not None else None,
        swarm_publish=balancer.SWARM_SERVICE_PORT,
        swarm_balancer_socket=Path(swarm_lb.socket) if swarm is not None else None,
        swarm_balancer_url=swarm_lb.frontend_url if swarm is not None else None,
        etcd_url=etcdserver.URL,
        etcd_prefix=etcdserver.PREFIX,
    )


# --- down --------------------------------------------------------------------

def down(paths: LabPaths | None = None, progress: Progress | None = None) -> None:
    """Remove everything the lab made, except the base image cache and an engine it did not start.

    The base image stays on the build engine too (it is a cache as well); a
    node's copy goes with the node. Every step is attempted; failures are
    reported together at the end.
    """
    paths = paths or LabPaths.default()
    report: Progress = progress or (lambda step, detail: None)
    _require_root("down")
    with _locked(paths, "down", report):
        errors: list[str] = []

        def attempt(step: str, detail: str, fn: Callable[[], Any]) -> None:
            report(step, detail)
            try:
                fn()
            except LabError as exc:   # keep removing the rest; report every failure at the end
                errors.append(f"{step}: {exc}")

        attempt("balancer", "stopping HAProxy", lambda: balancer.balancers_down(paths))
        attempt("swarm", "every node leaves its swarm",
                lambda: swarm_mod.leave(existing_nodes(paths)))
        attempt("chef", "stopping goiardi", lambda: chefserver.chef_down(paths))
        attempt("etcd", "stopping etcd", lambda: etcdserver.etcd_down(paths))
        attempt("index", "stopping pypiserver", lambda: pypi.index_down(paths))
        attempt("registry", "stopping the registries", lambda: registries_down(paths))
        attempt("bastion", "removing the bastion", lambda: bastion.bastion_down(paths))
        attempt("nodes", "removing the node engines", lambda: nodes_down(paths))
        attempt("network", f"removing this lab from {BRIDGE}", lambda: network_down(paths))
        attempt("tls", "removing /etc/docker/certs.d entries",
                lambda: remove_registry_ca(paths.host_address, PORTS))
        if engine_started_by_lab(paths):
            attempt("engine", "stopping the dockerd the lab started", lambda: engine_down(paths))
        attempt("state", f"removing {paths.root} and {paths.run}", lambda: _remove_state(paths))
        if errors:
            raise LabError(f"lab down left something behind ({len(errors)} problem(s)); "
                           + "; ".join(errors) + "; fix it and run `dockship lab down` again")


# --- one node's engine, for failure tests --------------------------------------

def _lab_node(paths: LabPaths, name: str) -> lab_nodes_mod.LabNode:
    found = next((n for n in existing_nodes(paths) if n.name == name), None)
    if found is None:
        names = ", ".join(n.name for n in existing_nodes(paths)) or "none"
        raise LabError(f"no lab node {name!r} (the lab has: {names})")
    return found


def stop_engine(name: str, *, kill: bool = False, paths: LabPaths | None = None) -> None:
    """Stop lab node `name`'s Docker engine (SIGKILL with `kill`), e.g. a Swarm manager mid-roll.

    Its sshd stays up, so dockship's `ssh://` connection fails the way it does
    against a server whose dockerd died. Takes the lab lock while it works,
    so it never races a `lab up` halfway; a later `lab up` (or
    `start_engine`) brings the engine back.
    """
    paths = paths or LabPaths.default()
    _require_root_for("stopping a lab node's engine")
    with _locked(paths, "up", lambda step, detail: None):
        lab_nodes_mod.stop_engine(paths, _lab_node(paths, name), kill=kill)


def start_engine(name: str, *, paths: LabPaths | None = None,
                 timeout: float = swarm_mod.READY_TIMEOUT) -> None:
    """Start lab node `name`'s engine again; if it was in the swarm, wait until it is back
    in it, ready (and reachable, for a manager)."""
    paths = paths or LabPaths.default()
    _require_root_for("starting a lab node's engine")
    with _locked(paths, "up", lambda step, detail: None):
        target = _lab_node(paths, name)
        lab_nodes_mod.start_engine(paths, target)
    swarm_mod.wait_rejoined(target, existing_nodes(paths), timeout=timeout)


def _remove_state(paths: LabPaths) -> None:
    for directory in (paths.root, paths.run):
        remove_tree(directory)
