"""Node engines: one Docker client per node, opened lazily, in parallel, always closed.

`ssh://` goes through our own transport (dockship.toml's `ssh` table, then
ssh_config and the agent, jump hosts included, unknown hosts refused), `tcp://` through TLS settings, `unix://`
directly. Connections are opened with a bound on parallelism so a large
fleet does not become an SSH connection storm.

Opening an engine (its API version, then a ping) has a total deadline,
`deadline.ENGINE_CONNECT`: an engine that accepts and never answers is
reported then, not after the per-call timeout. Every call after that has
docker-py's per-read timeout, `API_TIMEOUT`; streams have stall limits
(`streams.stall_limit`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar
from urllib.parse import urlsplit

import docker
import docker.errors
import docker.tls
import requests

from dockship import deadline, parallel
from dockship.config import DEFAULT_PARALLEL, Environment, Node
from dockship.errors import DockshipError, Unreachable, last_line
from dockship.failures import engine_problem

T = TypeVar("T")
API_TIMEOUT = 60    # seconds docker-py waits for each read of an engine's answer


class NodeEngine:
    """A node and its engine client, connected on first use (Fabric's `@opens` habit)."""

    def __init__(self, node: Node, env: Environment, *, timeout: float = API_TIMEOUT,
                 connect: float = deadline.ENGINE_CONNECT):
        self.node = node
        self.env = env
        self.timeout = timeout
        self.connect = connect
        self._client: docker.DockerClient | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<NodeEngine {self.node.name} {self.node.docker}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NodeEngine) and other.node == self.node

    def __hash__(self) -> int:
        return hash(self.node)

    @property
    def name(self) -> str:
        return self.node.name

    @property
    def address(self) -> str:
        """Where the node's published ports answer: `address`, else the engine's host."""
        if self.node.address:
            return self.node.address
        parts = urlsplit(self.node.docker)
        return parts.hostname if parts.scheme in ("ssh", "tcp") and parts.hostname else "127.0.0.1"

    @property
    def connected(self) -> bool:
        return self._client is not None

    @property
    def client(self) -> docker.DockerClient:
        with self._lock:
            if self._client is None:
                self._client = self._open()
            return self._client

    def _open(self) -> docker.DockerClient:
        where = f"node {self.node.name} ({self.node.docker})"
        try:
            return deadline.call(self._connect, what=f"{where}: its engine", total=self.connect)
        except DockshipError as exc:
            if isinstance(exc, deadline.NoAnswer):
                raise
            raise type(exc)(f"node {self.node.name}: {exc}") from None
        except (docker.errors.DockerException, requests.RequestException, OSError) as exc:
            raise Unreachable(f"{where}: {engine_problem(exc, 'connect')}") from None

    def _connect(self) -> docker.DockerClient:
        """The client, asked for its version and pinged (run under `_open`'s deadline)."""
        url = self.node.docker
        scheme = urlsplit(url).scheme
        if scheme == "ssh":
            from dockship.sshengine import ssh_docker_client
            return ssh_docker_client(url, ssh=self.env.ssh, timeout=self.timeout)
        if scheme == "tcp":
            tls = self.env.tls
            tls_config = None
            if tls.ca or tls.cert:
                tls_config = docker.tls.TLSConfig(
                    client_cert=(str(tls.cert), str(tls.key)) if tls.cert and tls.key else None,
                    ca_cert=str(tls.ca) if tls.ca else None, verify=tls.verify)
            client = docker.DockerClient(base_url=url, tls=tls_config or False,
                                         timeout=self.timeout)
        else:
            client = docker.DockerClient(base_url=url, timeout=self.timeout)
        client.ping()
        return client

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                try:
                    self._client.close()
                except Exception:  # noqa: BLE001 - closing must never mask the real outcome
                    pass
                self._client = None


class Fleet:
    """The engines of one roll: opened together with a bound, closed together."""

    def __init__(self, nodes: Sequence[Node], env: Environment, *, parallel: int = DEFAULT_PARALLEL):
        self.engines = tuple(NodeEngine(n, env) for n in nodes)
        self.parallel = max(1, parallel)

    def __enter__(self) -> "Fleet":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self):
        return iter(self.engines)

    def __len__(self) -> int:
        return len(self.engines)

    def by_name(self, name: str) -> NodeEngine:
        return next(e for e in self.engines if e.name == name)

    def connect(self) -> None:
        """Open every engine now; all failures are reported together, one line each."""
        self.gather(lambda e: e.client)

    def gather(self, fn: Callable[[NodeEngine], T]) -> dict[str, T]:
        """fn on every engine, by node name; if any failed, one error naming every failure."""
        results: dict[str, T] = {}
        errors: list[DockshipError] = []
        for engine, value, exc in self.each(fn):
            if exc is None:
                results[engine.name] = value  # type: ignore[assignment]
            else:
                errors.append(exc if isinstance(exc, DockshipError)
                              else Unreachable(f"node {engine.name}: {last_line(exc)}"))
        if errors:
            raise type(errors[0])("; ".join(str(e) for e in errors))
        return results

    def each(self, fn: Callable[[NodeEngine], T], engines: Iterable[NodeEngine] | None = None
             ) -> list[tuple[NodeEngine, T | None, BaseException | None]]:
        """Run fn on engines in parallel (bounded); per-engine results, never losing a failure."""
        return parallel.each(list(self.engines if engines is None else engines), fn,
                             limit=self.parallel)

    def close(self) -> None:
        for e in self.engines:
            e.close()
