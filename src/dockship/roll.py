"""`roll` and `rollback` as library calls: resolve, read, plan, lock, execute, record.

Everything that can be wrong with the input (environment, service, tag,
nodes, what each node runs) is found while planning, before the lock is
taken and before any node is touched; `--dry-run` stops after planning.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from dockship import history, parallel, servicesecrets
from dockship.config import DEFAULT_PARALLEL, Config, Environment, Service
from dockship.credentials import Credentials, registry_credentials
from dockship.fleet import Fleet
from dockship.errors import UsageError
from dockship.halt import Halt
from dockship.etcdlock import lock_stores
from dockship.inventory import nodes_for
from dockship.lock import DEFAULT_TTL, DeployLock, LeaseKeeper
from dockship.nodeops import DockerNode
from dockship.nodestate import NodeState
from dockship.observer import QuietObserver, RollObserver
from dockship.plan import RollPlan, Target, plan_rollback, plan_roll
from dockship.registry import RegistryClient
from dockship.report import Result, RollReport
from dockship.runtime import Runtime
from dockship.executor import Deployment
from dockship.tags import newest_tag, parse_version, tag_for
from dockship.times import human_duration, utc_now


@dataclass(frozen=True)
class RollOptions:
    tag: str | None = None
    dry_run: bool = False
    canary_only: bool = False       # roll the canary batch only; promote later with a normal roll
    zone: str | None = None         # roll the nodes of this zone only
    lock_wait: float = 0.0
    lock_ttl: float = DEFAULT_TTL
    message: str = ""               # stored with the deploy lock: who and why (a CI job URL)
    parallel: int = DEFAULT_PARALLEL
    report_path: str | None = None  # --report: the file post_roll / on_failure hooks are shown


def services_for(config: Config, env: Environment, service: str | None) -> list[Service]:
    """The named service, or every service of the config (each filtered to its nodes later),
    as `env` runs it: its [environments.NAME.services.X] settings applied."""
    if service is not None:
        return [config.service_for(env.name, service)]
    if not config.services:
        raise UsageError("the config defines no [services.NAME]; add one to roll it")
    return config.services_in(env.name)


def resolve_target(config: Config, service: Service, tag: str | None,
                   registry: RegistryClient) -> Target:
    """The tag to roll (given, or the newest final release in the registry) and its digest."""
    repository = f"{config.registry}/{service.image}"
    if tag is None:
        tags = registry.tags(service.image)
        tag = newest_tag(tags)
        if tag is None:
            raise UsageError(f"{repository} has no release tags in the registry; "
                             f"run `dockship build {service.package}` first")
    digest = registry.manifest_digest(service.image, tag)
    if digest is None:
        try:  # a version typed as a version (1!2.0, 1.0+abc) rather than as its tag
            mapped = tag_for(parse_version(tag))
        except UsageError:
            mapped = tag
        if mapped != tag:
            digest = registry.manifest_digest(service.image, mapped)
            tag = mapped
    if digest is None:
        available = sorted(registry.tags(service.image), reverse=True)[:8]
        raise UsageError(f"tag '{tag}' of {repository} is not in the registry; available: "
                         f"{', '.join(available) or 'none'}")
    return Target(service=service.name, tag=tag, digest=digest, repository=repository)


def read_nodes(fleet: Fleet, service: Service, repository: str, *,
               rollback: bool = False) -> list[NodeState]:
    """One parallel pass: what every node runs (and, for a rollback, whether the image of
    its previous version is still there). Planning is then a pure function of this."""
    def read(engine) -> NodeState:
        node = DockerNode(engine, service)
        running = node.current()
        images: frozenset[str] = frozenset()
        prev = running.previous_digest if running else None
        if rollback and prev and node.has_image(f"{repository}@{prev}"):
            images = frozenset({prev})
        return NodeState(engine.node, running, images)

    states = fleet.gather(read)
    return [states[e.name] for e in fleet]


def new_deploy_id() -> str:
    """Short and random: it names containers and history files, and is typed by humans."""
    return uuid.uuid4().hex[:12]


@dataclass(frozen=True)
class Outcome:
    """One service's roll: its plan, and its report unless it was a dry run."""

    plan: RollPlan
    report: RollReport | None


def roll(config: Config, env_name: str, *, service: str | None = None,
         opts: RollOptions = RollOptions(), observer: RollObserver | None = None,
         halt: Halt | None = None, rollback: bool = False) -> list[Outcome]:
    """Roll each service of the environment in turn; stop at the first that fails.

    `rollback=True` without a tag sends every node back to the tag it ran
    before; with a tag a rollback is simply a roll to that tag.
    """
    env = config.environment(env_name)
    chosen = services_for(config, env, service)
    if opts.tag is not None and len(chosen) > 1:
        raise UsageError("--tag needs --service when the environment runs several services")
    secrets = servicesecrets.resolve(env, chosen)    # a missing one: exit 2, nothing read yet
    runtimes = {svc.name: Runtime.of(svc, secrets[svc.name]) for svc in chosen}
    creds = registry_credentials(config.registry)
    observer = observer or QuietObserver()
    halt = halt or Halt()
    outcomes: list[Outcome] = []
    with RegistryClient(config.registry, credentials=creds) as registry:
        planned = []
        for svc in chosen:
            nodes = nodes_for(env, svc)
            target = None
            if not (rollback and opts.tag is None):
                target = resolve_target(config, svc, opts.tag, registry)
            planned.append((svc, nodes, target))
    for svc, nodes, target in planned:
        if halt.is_set():     # stopped while an earlier service rolled: leave the rest alone
            break
        with Fleet(nodes, env, parallel=opts.parallel) as fleet:
            fleet.connect()
            repository = f"{config.registry}/{svc.image}"
            states = read_nodes(fleet, svc, repository, rollback=target is None)
            if target is None:
                plan = plan_rollback(env, svc, states, repository, deploy_id=new_deploy_id())
            else:
                plan = plan_roll(env, svc, states, target, deploy_id=new_deploy_id(),
                                 canary_only=opts.canary_only, zone=opts.zone,
                                 settings=runtimes[svc.name])
            if opts.dry_run:
                outcomes.append(Outcome(plan, None))
                continue
            report = execute(plan, env=env, service=svc, fleet=fleet, opts=opts,
                             observer=observer, halt=halt, credentials=creds,
                             kind="rollback" if rollback else "roll",
                             runtime=runtimes[svc.name])
            outcomes.append(Outcome(plan, report))
            if not report.ok:
                break
    return outcomes


def execute(plan: RollPlan, *, env: Environment, service: Service, fleet: Fleet,
            opts: RollOptions, observer: RollObserver, halt: Halt,
            credentials: Credentials | None, kind: str,
            runtime: Runtime | None = None) -> RollReport:
    """Lock, walk the plan under a renewed lease, record the outcome on the nodes, unlock.

    History is written in a `finally`: every roll that took the lock is
    recorded, whatever happened, with the reason it stopped.
    """
    nodes = {e.name: DockerNode(e, service, credentials=credentials) for e in fleet}
    clients = {e.name: e.client for e in fleet}
    deployment = Deployment(plan, service=service, env=env, nodes=nodes, observer=observer,
                            halt=halt, kind=kind, parallel_limit=opts.parallel, runtime=runtime,
                            report_path=opts.report_path)
    lock = DeployLock(lock_stores(env, list(clients.items()), service.name),
                      env=env.name, service=service.name, tag=plan.target.tag,
                      deploy_id=plan.deploy_id, ttl=opts.lock_ttl, wait=opts.lock_wait,
                      message=opts.message, parallel_limit=opts.parallel)
    ledger = history.Ledger(env.name, service.name)

    def covered(store: str) -> list[str]:
        """The nodes a lock store stands for: its own, or every node (one etcd lease)."""
        return list(clients) if env.etcd is not None else [store]

    def taken(store: str) -> None:
        # The node is ours: prepare it (pull, read, create) while the lock is taken elsewhere.
        names = covered(store)
        deployment.prepare(names)
        _on_each(names, lambda node: ledger.prepare_node(node, clients[node]), opts.parallel)

    halt.begin_changes()     # from the first lock on, a signal winds the roll down
    try:
        lock.acquire(on_taken=taken, halt=halt)
    except BaseException:
        deployment.close()   # the lock is someone else's: remove what was prepared
        raise
    report = None
    try:
        with LeaseKeeper(lock, on_lost=halt.trip):
            report = deployment.run()
    finally:
        if report is None:   # run() never returns without a report; this is for a bug
            report = deployment.report(Result.FAILED, "internal error: the roll stopped early")
        report = _record_and_release(report, deployment, lock, ledger, clients, observer,
                                     covered)
    return report


def _on_each(nodes: list[str], fn: Callable[[str], object], limit: int) -> None:
    """fn on every node at once (one lease may stand for all of them); the first error raised."""
    errors = [exc for _, _, exc in parallel.each(nodes, fn, limit=limit) if exc is not None]
    if errors:
        raise errors[0]


def _record_and_release(report: RollReport, deployment: Deployment, lock: DeployLock,
                        ledger: history.Ledger, clients: dict, observer: RollObserver,
                        covered: Callable[[str], list[str]]) -> RollReport:
    """History on every node (under the lock where it is still ours), pruning, release."""
    rec = history.HistoryRecord.of(report, user=lock.info.holder, finished_at=utc_now())
    late: list[str] = []
    unrecorded: set[str] = set(clients)

    def record(node: str) -> None:
        if report.ok:
            problem = deployment.prune_node(node)
            if problem:
                late.append(problem)
        ledger.append(node, clients[node], rec)
        unrecorded.discard(node)

    def before_release(store: str) -> None:
        _on_each(covered(store), record, lock.parallel)

    failed = lock.release(before=before_release)
    for node in sorted(unrecorded):     # a lost lock: the record still goes there, best effort
        try:
            ledger.append(node, clients[node], rec)
            unrecorded.discard(node)
        except Exception:  # noqa: BLE001 - listed below
            pass
    if unrecorded:
        late.append(f"history not recorded on: {', '.join(sorted(unrecorded))}")
    if failed:
        late.append(f"the deploy lock could not be released on {', '.join(failed)}; "
                    f"it expires {human_duration(lock.info.ttl)} after its last renewal")
    for message in late:
        observer.note(message)
    return dataclasses.replace(report, warnings=(*report.warnings, *late)) if late else report


def read_history(config: Config, env_name: str, service: str | None) -> list[history.HistoryRecord]:
    env = config.environment(env_name)
    chosen = services_for(config, env, service)
    nodes: dict[str, object] = {}
    for svc in chosen:
        for n in nodes_for(env, svc):
            nodes.setdefault(n.name, n)
    with Fleet(list(nodes.values()), env) as fleet:
        fleet.connect()
        engines = [(e.name, e.client) for e in fleet]
        wanted = {svc.name for svc in chosen}
        return [r for r in history.read(engines, env.name, service) if r.service in wanted]

