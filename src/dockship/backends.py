"""Where one service's nodes of an environment are driven from: their own engines, or a swarm.

The roll core speaks three narrow interfaces: `NodeOps` (a node's eight
verbs), `LockStore` (a lease's four) and a ledger (prepare, append). A
backend hands out those three for one service of one environment:

- `EngineBackend`: every node's own Docker engine (over SSH, TLS or a
  socket), one connection each (fleet.Fleet); the history lives on every
  node, and so does the lock, except in an environment found in etcd,
  where it is one etcd lease (etcdlock.py) standing for every node.
- `SwarmBackend`: one Swarm manager for all nodes (swarm.SwarmFleet); the
  lock and the history are Swarm configs.

The lock's stores are named for what they hold: a node for the engine
backend (or "etcd"), the whole swarm for the other; `covers(store)` says
which nodes a store's lock stands for, so a roll prepares and records the
right nodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from dockship import history, parallel
from dockship.config import DEFAULT_PARALLEL, Environment, Node, Service
from dockship.credentials import Credentials
from dockship.fleet import Fleet
from dockship.inventory import nodes_for
from dockship.etcdlock import lock_stores
from dockship.lock import LockStore
from dockship.nodeops import DockerNode, NodeOps
from dockship.nodestate import NodeState
from dockship.swarm import SwarmFleet
from dockship.swarmstate import SwarmLedger, SwarmLockStore


class Ledger(Protocol):
    def prepare(self, store: str) -> None: ...
    def append(self, store: str, rec: history.HistoryRecord) -> None: ...


class Backend(Protocol):
    nodes: tuple[Node, ...]
    kind: str

    def __enter__(self) -> "Backend": ...
    def __exit__(self, *exc: object) -> None: ...
    def read(self, repository: str, *, rollback: bool = False) -> list[NodeState]: ...
    def ops(self, credentials: Credentials | None) -> dict[str, NodeOps]: ...
    def lock_stores(self) -> Sequence[LockStore]: ...
    def covers(self, store: str) -> list[str]: ...
    def ledger(self) -> Ledger: ...
    def notes(self) -> list[str]: ...


def open_backend(env: Environment, service: Service, *, parallel: int = DEFAULT_PARALLEL,
                 connect: bool = True) -> Backend:
    """The backend of `env` for `service`; `connect=False` leaves a node engine that does not
    answer to fail where it is used (a read-only command reports it as that node's row)."""
    if env.swarm is not None:
        return SwarmBackend(env, service)
    return EngineBackend(env, service, parallel=parallel, connect=connect)


class EngineBackend:
    """Each node's own engine (fleet.Fleet): what an SSH roll has always done."""

    kind = "engines"

    def __init__(self, env: Environment, service: Service, *, parallel: int = DEFAULT_PARALLEL,
                 connect: bool = True):
        self.env, self.service, self._connect = env, service, connect
        self.nodes = nodes_for(env, service)
        self.fleet = Fleet(self.nodes, env, parallel=parallel)

    def __enter__(self) -> "EngineBackend":
        self.fleet.__enter__()
        if self._connect:
            try:
                self.fleet.connect()
            except BaseException:
                self.fleet.close()
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.fleet.close()

    def read(self, repository: str, *, rollback: bool = False) -> list[NodeState]:
        """One parallel pass: what every node runs (and, for a rollback, whether the image of
        its previous version is still there). Planning is then a pure function of this."""
        def read(engine) -> NodeState:
            node = DockerNode(engine, self.service)
            running = node.current()
            images: frozenset[str] = frozenset()
            prev = running.previous_digest if running else None
            if rollback and prev and node.has_image(f"{repository}@{prev}"):
                images = frozenset({prev})
            return NodeState(engine.node, running, images)

        states = self.fleet.gather(read)
        return [states[e.name] for e in self.fleet]

    def ops(self, credentials: Credentials | None) -> dict[str, NodeOps]:
        return {e.name: DockerNode(e, self.service, credentials=credentials) for e in self.fleet}

    def lock_stores(self) -> Sequence[LockStore]:
        # Each engine is opened when its store is first used: `lock status` reports a node
        # that does not answer as that node's row.
        return lock_stores(self.env, [(e.name, _OnFirstUse(e)) for e in self.fleet],
                           self.service.name)

    def covers(self, store: str) -> list[str]:
        return [n.name for n in self.nodes] if self.env.etcd is not None else [store]

    def ledger(self) -> Ledger:
        return _EngineLedger(history.Ledger(self.env.name, self.service.name), self)

    def notes(self) -> list[str]:
        return []


class _OnFirstUse:
    """A node's Docker client, connected when first used."""

    def __init__(self, engine):
        self._engine = engine

    def __getattr__(self, name: str):
        return getattr(self._engine.client, name)


class _EngineLedger:
    """History on every node a lock store stands for, those nodes at once."""

    def __init__(self, ledger: history.Ledger, backend: EngineBackend):
        self._ledger, self._backend = ledger, backend

    def _each(self, store: str, fn) -> None:
        fleet = self._backend.fleet
        nodes = [fleet.by_name(n) for n in self._backend.covers(store)]
        errors = [exc for _, _, exc in parallel.each(nodes, fn, limit=fleet.parallel) if exc]
        if errors:
            raise errors[0]

    def prepare(self, store: str) -> None:
        self._each(store, lambda e: self._ledger.prepare_node(e.name, e.client))

    def append(self, store: str, rec: history.HistoryRecord) -> None:
        self._each(store, lambda e: self._ledger.append(e.name, e.client, rec))


class SwarmBackend:
    """A swarm's nodes, through one manager (swarm.SwarmFleet)."""

    kind = "swarm"
    STORE = "swarm"

    def __init__(self, env: Environment, service: Service):
        self.env, self.service = env, service
        self.fleet = SwarmFleet(env, service)
        self.nodes: tuple[Node, ...] = ()
        self._infos: list = []

    def __enter__(self) -> "SwarmBackend":
        self.fleet.__enter__()
        try:
            self._infos = self.fleet.infos()
        except BaseException:
            self.fleet.__exit__()
            raise
        self.nodes = tuple(SwarmFleet.node_record(i, self.fleet.manager.url) for i in self._infos)
        return self

    def __exit__(self, *exc: object) -> None:
        self.fleet.__exit__()

    def read(self, repository: str, *, rollback: bool = False) -> list[NodeState]:
        return self.fleet.read_states(self._infos, rollback=rollback)

    def ops(self, credentials: Credentials | None) -> dict[str, NodeOps]:
        return dict(self.fleet.ops(credentials, self._infos))

    def lock_stores(self) -> Sequence[LockStore]:
        return [SwarmLockStore(self.fleet.call, self.env.name, self.service.name, self.STORE)]

    def covers(self, store: str) -> list[str]:
        return [n.name for n in self.nodes]

    def ledger(self) -> Ledger:
        return SwarmLedger(self.fleet.call, self.env.name, self.service.name)

    def notes(self) -> list[str]:
        """What the report should say about the swarm itself (a manager lost on the way)."""
        return list(self.fleet.manager.failovers)
