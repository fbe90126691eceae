"""One connection to a Swarm manager that survives the loss of that manager.

Everything a Swarm roll does goes through a manager: a connection, not one
per node, which is the point of the Swarm backend for large fleets. The
configured manager is dialled first (`[environments.E] swarm.manager`, over
the same SSH/TLS rules as a node's engine); the swarm's other managers are
learnt from it, and when the manager in use stops answering the next one is
dialled at the same user and port, so a roll that loses a manager goes on.
A swarm without a leader for a moment (an election after the leader died)
answers 503: the call is tried again for a while, not failed.

Every call is counted (`calls`), and connections too (`connections`): the
bench compares what the controller costs on each backend.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import docker
import docker.errors
import requests

from dockship.config import Environment, Node
from dockship.errors import DockshipError, Unreachable, last_line
from dockship.fleet import NodeEngine

T = TypeVar("T")
NO_LEADER_WAIT = 30.0     # seconds an election may take before a call fails
# Calls in flight on the manager connection at once. Over SSH each is a channel, and sshd
# refuses channels past MaxSessions (10 by default), which would cost the connection; a
# roll of many nodes at once queues its polls here instead.
MAX_CALLS = 6


class SwarmManager:
    """`call(what, fn)` runs fn(api) on a manager, failing over to the others."""

    def __init__(self, env: Environment):
        if env.swarm is None:
            raise ValueError(f"environment {env.name} is not a swarm")
        self.env = env
        self.url = env.swarm.manager
        self._engine = NodeEngine(Node(name="swarm manager", docker=self.url), env)
        self._known: list[str] = [self.url]       # manager URLs, the configured one first
        self._lock = threading.Lock()
        self._in_flight = threading.BoundedSemaphore(MAX_CALLS)
        self.calls = 0
        self.connections = 0
        self.failovers: list[str] = []    # "manager X stopped answering; went on through Y"

    @property
    def address(self) -> str:
        return self._engine.address

    def connect(self) -> None:
        """Reach a manager and learn the others (so a later loss can be survived)."""
        nodes = self.call("list the swarm's nodes", lambda api: api.nodes())
        for raw in nodes:
            addr = ((raw.get("ManagerStatus") or {}).get("Addr") or "").rsplit(":", 1)[0]
            url = manager_url(self.url, addr) if addr else None
            if url and url not in self._known:
                self._known.append(url)

    def call(self, what: str, fn: Callable[[docker.APIClient], T]) -> T:
        tried: set[str] = set()
        waited_since: float | None = None
        while True:
            engine = self._current()
            try:
                with self._lock:
                    self.calls += 1
                with self._in_flight:
                    return fn(self._client(engine).api)
            except docker.errors.APIError as exc:
                if not _no_leader(exc):
                    raise
                waited_since = waited_since or time.monotonic()
                if time.monotonic() - waited_since > NO_LEADER_WAIT:
                    raise Unreachable(f"swarm manager {engine.node.docker}: {what}: the swarm "
                                      f"has had no leader for {NO_LEADER_WAIT:g} s") from None
                time.sleep(0.5)
            except (Unreachable, requests.RequestException, OSError, EOFError,
                    docker.errors.DockerException) as exc:
                tried.add(engine.node.docker)
                if not self._fail_over(engine, tried):
                    raise Unreachable(f"no swarm manager answered ({', '.join(sorted(tried))}): "
                                      f"{what}: {last_line(exc, 200)}") from None

    def _current(self) -> NodeEngine:
        with self._lock:
            return self._engine

    def _client(self, engine: NodeEngine) -> docker.DockerClient:
        fresh = not engine.connected
        client = engine.client
        if fresh:
            with self._lock:
                self.connections += 1
        return client

    def _fail_over(self, failed: NodeEngine, tried: set[str]) -> bool:
        """Dial the next manager not tried yet; False when none is left."""
        with self._lock:
            if self._engine is not failed:
                return True        # another thread already moved on
            failed.close()
            for url in self._known:
                if url not in tried:
                    self._engine = NodeEngine(Node(name="swarm manager", docker=url), self.env)
                    self.failovers.append(f"swarm manager {failed.node.docker} stopped "
                                          f"answering; went on through {url}")
                    return True
            return False

    def close(self) -> None:
        with self._lock:
            self._engine.close()


def manager_url(configured: str, host: str) -> str | None:
    """Another manager's endpoint: the configured one's scheme, user and port at `host`
    (None for a unix socket, which names no host)."""
    parts = urlsplit(configured)
    if parts.scheme not in ("ssh", "tcp") or not parts.hostname:
        return None
    netloc = host if ":" not in host else f"[{host}]"
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _no_leader(exc: docker.errors.APIError) -> bool:
    text = str(exc).lower()
    return exc.status_code == 503 or "does not have a leader" in text or "no leader" in text


class NotASwarm(DockshipError):
    """The configured manager is not a Swarm manager."""

    exit_code = 2
