"""A service's containers on one node, read and written through their labels.

State lives on the node (compose's habit): which tag and digest a container
runs, which deploy started it, and what the node ran before it are labels of
the container itself, so `status`, `rollback` and a second operator all read
the same truth without any local file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import docker
import docker.errors

from dockship.config import Service

from dockship.labels import (DEPLOY_ID, DEPLOYED_AT, DIGEST, ENV, PREVIOUS_DIGEST as PREV_DIGEST,
                             PREVIOUS_TAG as PREV_TAG, SERVICE, SETTINGS, TAG)
from dockship.runtime import Runtime


@dataclass(frozen=True)
class ServiceContainer:
    """One container of a service on a node: the client plus its inspect data."""

    client: docker.DockerClient
    attrs: Mapping[str, Any]

    @classmethod
    def from_id(cls, client: docker.DockerClient, cid: str) -> "ServiceContainer":
        return cls(client, client.api.inspect_container(cid))

    def get(self, dotted: str, default: Any = None) -> Any:
        """A value of the inspect dict by dotted path, e.g. `State.Health.Status`."""
        value: Any = self.attrs
        for key in dotted.split("."):
            if not isinstance(value, Mapping) or key not in value:
                return default
            value = value[key]
        return value

    @property
    def id(self) -> str:
        return self.attrs["Id"]

    @property
    def name(self) -> str:
        return self.attrs.get("Name", "").lstrip("/")

    @property
    def labels(self) -> Mapping[str, str]:
        return self.get("Config.Labels") or {}

    @property
    def tag(self) -> str | None:
        return self.labels.get(TAG)

    @property
    def digest(self) -> str | None:
        return self.labels.get(DIGEST)

    @property
    def deploy_id(self) -> str | None:
        return self.labels.get(DEPLOY_ID)

    @property
    def previous_tag(self) -> str | None:
        return self.labels.get(PREV_TAG) or None

    @property
    def previous_digest(self) -> str | None:
        return self.labels.get(PREV_DIGEST) or None

    @property
    def settings(self) -> str | None:
        """The settings label: hashes of its env, secrets, command and ports (runtime.py)."""
        return self.labels.get(SETTINGS) or None

    @property
    def deployed_at(self) -> str:
        return self.labels.get(DEPLOYED_AT, "")

    @property
    def image_id(self) -> str:
        return self.attrs.get("Image", "")

    @property
    def status(self) -> str:
        return self.get("State.Status", "unknown")

    @property
    def running(self) -> bool:
        return self.status in ("running", "restarting")

    @property
    def started_at(self) -> str | None:
        value = self.get("State.StartedAt")
        return None if not value or value.startswith("0001-") else value

    def refresh(self) -> "ServiceContainer":
        return ServiceContainer.from_id(self.client, self.id)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ServiceContainer) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<ServiceContainer {self.name} {self.tag} {self.status}>"


def containers_of(client: docker.DockerClient, service: str) -> list[ServiceContainer]:
    """Every container of `service` on the node, newest deploy first."""
    found = client.api.containers(all=True, filters={"label": f"{SERVICE}={service}"})
    out = [ServiceContainer.from_id(client, c["Id"]) for c in found]
    return sorted(out, key=lambda c: (c.deployed_at, c.get("Created", "")), reverse=True)


def current(containers: list[ServiceContainer]) -> ServiceContainer | None:
    """The running container of the service (the newest, if somehow several run)."""
    return next((c for c in containers if c.running), None)


def current_of(client: docker.DockerClient, service: str) -> ServiceContainer | None:
    """`current(containers_of(...))` in two engine calls: only the running one is inspected.

    (containers_of inspects every retained container: `retain` + 1 calls per node.)
    """
    found = client.api.containers(filters={"label": f"{SERVICE}={service}",
                                           "status": ["running", "restarting"]})
    if not found:
        return None
    newest = max(found, key=lambda c: ((c.get("Labels") or {}).get(DEPLOYED_AT, ""), c.get("Created", 0)))
    return ServiceContainer.from_id(client, newest["Id"])


def container_name(service: str, tag: str, deploy_id: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_.-]", "_", f"{service}-{tag}-{deploy_id}")


def create(client: docker.DockerClient, service: Service, *, env: str, ref: str, tag: str,
           digest: str, deploy_id: str, previous_tag: str | None,
           previous_digest: str | None, runtime: Runtime | None = None) -> ServiceContainer:
    """Create (not start) the container of `service` at `ref`, labelled with its lineage and
    the hashes of its settings; `runtime` (default: the service's, no secrets) is what it runs
    with. Secret values go into its environment only."""
    runtime = runtime or Runtime.of(service)
    labels = {
        SERVICE: service.name, ENV: env, TAG: tag, DIGEST: digest, DEPLOY_ID: deploy_id,
        PREV_TAG: previous_tag or "",
        PREV_DIGEST: previous_digest or "",
        DEPLOYED_AT: datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        SETTINGS: runtime.label(),
    }
    address = runtime.publish.address
    host_config = client.api.create_host_config(
        port_bindings={runtime.port: (address, runtime.host_port) if address else runtime.host_port},
        restart_policy={"Name": "unless-stopped"},
        init=True,   # PID 1 that forwards SIGTERM: a stop takes 0.15 s, not the 10 s timeout
    )
    name = container_name(service.name, tag, deploy_id)

    def make() -> dict:
        return client.api.create_container(
            image=ref, name=name, command=list(runtime.command) or None,
            environment=runtime.environment(), labels=labels, ports=[runtime.port],
            host_config=host_config, stop_timeout=int(service.stop_timeout),
        )
    try:
        created = make()
    except docker.errors.APIError as exc:
        if exc.status_code != 409:
            raise
        old = client.api.inspect_container(name)
        # A leftover of an interrupted attempt of this very deploy: never running, safe to drop.
        ours = (old["Config"].get("Labels") or {}).get(DEPLOY_ID) == deploy_id
        if not ours or old["State"]["Running"]:
            raise
        client.api.remove_container(old["Id"], force=True)
        created = make()
    return ServiceContainer.from_id(client, created["Id"])


def stop(c: ServiceContainer, timeout: float) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds; the container is kept."""
    c.client.api.stop(c.id, timeout=int(timeout))


def start(c: ServiceContainer) -> None:
    c.client.api.start(c.id)


def logs_tail(c: ServiceContainer, lines: int = 20) -> list[str]:
    try:
        raw = c.client.api.logs(c.id, stdout=True, stderr=True, tail=lines)
    except Exception:  # noqa: BLE001 - last words are best effort (the engine may be gone)
        return []
    return raw.decode(errors="replace").rstrip().splitlines()[-lines:]


def remove(c: ServiceContainer) -> None:
    c.client.api.remove_container(c.id, force=True)


def prune(containers: list[ServiceContainer], keep: int, *, protect: set[str]) -> list[str]:
    """Keep `keep` stopped containers (the protected ones first, then the newest); remove the rest.

    A container that never started (prepared by a roll that was killed before the
    node's turn) ran no version, so it is never worth a retained slot.
    """
    stopped = [c for c in containers if not c.running]
    room = max(0, keep - sum(1 for c in stopped if c.id in protect))
    never = [c for c in stopped if c.status == "created" and c.id not in protect]
    others = [c for c in stopped if c.id not in protect and c not in never]
    removed = []
    for c in never + others[room:]:
        try:
            remove(c)
            removed.append(c.name)
        except docker.errors.DockerException:
            continue
    return removed
