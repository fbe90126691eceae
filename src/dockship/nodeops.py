"""What a roll does to one node, as a narrow interface: eight verbs and two records.

The roll's state machine (swap.py, executor.py) speaks only this interface,
so every path through it, rollbacks included, runs in unit tests against an
in-memory node (tests/unit/fakenode.py) as well as against real engines
(`DockerNode`, here). Each verb is one engine operation or one health gate;
a verb that fails raises, and the caller decides what the failure means.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import docker.errors

from dockship.config import HealthCheck, Service
from dockship.container import (ServiceContainer, containers_of, create, current_of, logs_tail,
                                prune, remove, start, stop)
from dockship.credentials import Credentials
from dockship.streams import drain
from dockship.fleet import NodeEngine
from dockship.health import Verdict
from dockship.nodestate import Running
from dockship.probe import wait_healthy
from dockship.redact import known
from dockship.runtime import Runtime


@dataclass(frozen=True)
class Launch:
    """A container to create: the image by digest, the lineage its labels record, and the
    settings it runs with (None: the service's own, without secrets)."""

    env: str
    ref: str                 # repository@sha256:..., never a mutable tag
    tag: str
    digest: str
    deploy_id: str
    previous: Running | None
    runtime: Runtime | None = None


class NodeOps(Protocol):
    name: str
    address: str             # where the service's published port answers

    def current(self) -> Running | None: ...
    def has_image(self, ref: str) -> bool: ...
    def pull(self, ref: str, progress: Callable[[str], None]) -> None: ...
    def create(self, launch: Launch) -> str: ...
    def start(self, cid: str) -> None: ...
    def stop(self, cid: str, timeout: float) -> None: ...
    def remove(self, cid: str) -> None: ...
    def probe(self, cid: str, check: HealthCheck, *, cancel: threading.Event | None = None,
              on_update: Callable[[Verdict], None] | None = None) -> Verdict: ...
    def logs(self, cid: str, lines: int = 20) -> list[str]: ...
    def prune(self, keep: int, protect: set[str]) -> list[str]: ...


def running_of(c: ServiceContainer) -> Running:
    return Running(c.id, c.name, c.tag, c.digest, c.previous_tag, c.previous_digest, c.settings)


class DockerNode:
    """NodeOps on a real engine, for one service."""

    def __init__(self, engine: NodeEngine, service: Service, *,
                 credentials: Credentials | None = None):
        self.engine = engine
        self.service = service
        self.credentials = credentials
        self.name = engine.name

    @property
    def address(self) -> str:
        """Where the published port answers: the node, or the one address it is bound to."""
        return self.service.publish.reach(self.engine.address)

    def _container(self, cid: str) -> ServiceContainer:
        # By id alone: every verb below is one engine call, with no inspect ahead of it
        # (over SSH each call costs a round trip, and a swap is on a node's critical path).
        return ServiceContainer(self.engine.client, {"Id": cid})

    def current(self) -> Running | None:
        found = current_of(self.engine.client, self.service.name)
        return running_of(found) if found else None

    def has_image(self, ref: str) -> bool:
        try:
            self.engine.client.api.inspect_image(ref)
            return True
        except docker.errors.ImageNotFound:
            return False

    def pull(self, ref: str, progress: Callable[[str], None]) -> None:
        repository, _, digest = ref.partition("@")
        layers: dict[str, tuple[int, int]] = {}

        def on_chunk(chunk: dict) -> None:
            detail = chunk.get("progressDetail") or {}
            if chunk.get("id") and detail.get("total"):
                layers[chunk["id"]] = (detail.get("current", 0), detail["total"])
                done = sum(c for c, _ in layers.values()) / 1e6
                total = sum(t for _, t in layers.values()) / 1e6
                progress(f"{done:.1f}/{total:.1f} MB")

        auth = self.credentials.as_auth_config() if self.credentials else None
        drain(self.engine.client.api.pull(repository, tag=digest, stream=True, decode=True,
                                          auth_config=auth),
              f"pull of {ref} on {self.name}", on_chunk)

    def create(self, launch: Launch) -> str:
        prev = launch.previous
        return create(self.engine.client, self.service, env=launch.env, ref=launch.ref,
                      tag=launch.tag, digest=launch.digest, deploy_id=launch.deploy_id,
                      previous_tag=prev.tag if prev else None,
                      previous_digest=prev.digest if prev else None, runtime=launch.runtime).id

    def start(self, cid: str) -> None:
        start(self._container(cid))

    def stop(self, cid: str, timeout: float) -> None:
        stop(self._container(cid), timeout)

    def remove(self, cid: str) -> None:
        remove(self._container(cid))

    def probe(self, cid: str, check: HealthCheck, *, cancel: threading.Event | None = None,
              on_update: Callable[[Verdict], None] | None = None) -> Verdict:
        return wait_healthy(self._container(cid), address=self.address, port=self.service.host_port,
                            check=check, cancel=cancel, on_update=on_update)

    def logs(self, cid: str, lines: int = 20) -> list[str]:
        # Best effort ([] if the engine is gone). The lines go to the report and history: a
        # service that prints a secret it was given must not put it there.
        secrets = known()
        return [secrets.scrub(line) for line in logs_tail(self._container(cid), lines)]

    def prune(self, keep: int, protect: set[str]) -> list[str]:
        return prune(containers_of(self.engine.client, self.service.name), keep, protect=protect)
