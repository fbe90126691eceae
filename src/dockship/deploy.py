"""`roll` and `rollback` as library calls: resolve, plan, lock, execute, record.

Everything that can be wrong with the input (environment, service, tag,
nodes, what each node runs) is found while planning, before the lock is
taken and before any node is touched; `--dry-run` stops after planning.
"""

from __future__ import annotations

import dataclasses
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, replace
from datetime import datetime, timezone

import docker.errors

from dockship import history
from dockship.config import DEFAULT_PARALLEL, Config, Environment, Service
from dockship.container import ServiceContainer, current_of
from dockship.credentials import registry_credentials
from dockship.engines import Fleet
from dockship.errors import UsageError
from dockship.inventory import nodes_for
from dockship.lock import DeployLock
from dockship.plan import Batch, NodeStep, RollPlan, StepAction, Target, make_batches
from dockship.registry import RegistryClient
from dockship.report import RollReport
from dockship.rollout import Deployment, QuietObserver, RollObserver
from dockship.tags import newest_tag, parse_version, tag_for


@dataclass(frozen=True)
class RollOptions:
    tag: str | None = None
    dry_run: bool = False
    canary_only: bool = False       # roll the canary batch only; promote later with a normal roll
    zone: str | None = None         # roll the nodes of this zone only
    lock_wait: float = 0.0
    lock_ttl: float = 1800.0
    parallel: int = DEFAULT_PARALLEL


def services_for(config: Config, env: Environment, service: str | None) -> list[Service]:
    """The named service, or every service of the config (each filtered to its nodes later)."""
    if service is not None:
        if service not in config.services:
            names = ", ".join(sorted(config.services)) or "none"
            raise UsageError(f"unknown service '{service}'; services in the config: {names}")
        return [config.services[service]]
    if not config.services:
        raise UsageError("the config defines no [services.NAME]; add one to roll it")
    return list(config.services.values())


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


def _node_states(fleet: Fleet, service: Service) -> dict[str, ServiceContainer | None]:
    return fleet.gather(lambda e: current_of(e.client, service.name))


def plan_roll(env: Environment, service: Service, fleet: Fleet, target: Target, *,
              canary_only: bool = False, zone: str | None = None) -> RollPlan:
    """Which nodes change, in which batches: reads the nodes, changes nothing."""
    if zone is not None:
        zones = sorted({e.node.zone for e in fleet if e.node.zone})
        if zone not in zones:
            raise UsageError(f"no node of '{service.name}' in environment '{env.name}' is in zone "
                             f"'{zone}'; zones: {', '.join(zones) or 'none (set zone on the nodes)'}")
    if canary_only and env.rollout.canary < 1:
        raise UsageError(f"--canary-only needs a canary: set environments.{env.name}.rollout.canary "
                         "to 1 or more")
    states = _node_states(fleet, service)
    steps = []
    for engine in fleet:
        cur = states[engine.name]
        same = cur is not None and cur.digest == target.digest and cur.status == "running"
        action = StepAction.UNCHANGED if same else StepAction.DEPLOY
        if action is StepAction.DEPLOY and zone is not None and engine.node.zone != zone:
            action = StepAction.HELD
        steps.append(NodeStep(engine.node, action, cur.tag if cur else None,
                              cur.digest if cur else None, target.tag, target.digest))
    rollout = env.rollout
    batches = make_batches(steps, rollout.canary, rollout.batch, by_zone=rollout.by_zone,
                           zones=rollout.zones)
    if canary_only:
        batches = _canary_only(batches)
    return RollPlan(env.name, service.name, target, batches, new_deploy_id())


def _canary_only(batches: tuple[Batch, ...]) -> tuple[Batch, ...]:
    """Keep the canary batch; every other node that would change is held on its version."""
    canary = [b for b in batches if b.canary]
    held = tuple(replace(s, action=StepAction.HELD) if s.action is StepAction.DEPLOY else s
                 for b in batches if not b.canary for s in b.steps)
    return tuple(canary) + ((Batch(1, False, held),) if held else ())


def plan_rollback(config: Config, env: Environment, service: Service, fleet: Fleet) -> RollPlan:
    """Every node back to the tag it ran before, from what the node itself records."""
    states = _node_states(fleet, service)
    repository = f"{config.registry}/{service.image}"
    steps = []
    for engine in fleet:
        cur = states[engine.name]
        if cur is None:
            raise UsageError(f"node {engine.name} runs no container of '{service.name}'; "
                             "nothing to roll back there (use --tag to roll a version)")
        if not cur.previous_digest:
            raise UsageError(f"node {engine.name} has no earlier version of '{service.name}' "
                             f"recorded (it runs its first deploy, {cur.tag}); use --tag TAG")
        try:
            engine.client.images.get(f"{repository}@{cur.previous_digest}")
        except docker.errors.ImageNotFound:
            raise UsageError(f"node {engine.name} no longer holds the image of "
                             f"{cur.previous_tag}; roll it back with --tag {cur.previous_tag} "
                             "(that pulls it)") from None
        steps.append(NodeStep(engine.node, StepAction.DEPLOY, cur.tag, cur.digest,
                              cur.previous_tag or "?", cur.previous_digest, pull=False))
    common = Counter((s.to_tag, s.to_digest) for s in steps).most_common(1)[0][0]
    target = Target(service.name, common[0], common[1], repository)
    batches = make_batches(steps, 0, env.rollout.batch)
    return RollPlan(env.name, service.name, target, batches, new_deploy_id(), rollback=True)


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
         cancel: threading.Event | None = None, rollback: bool = False) -> list[Outcome]:
    """Roll each service of the environment in turn; stop at the first that fails.

    `rollback=True` without a tag sends every node back to the tag it ran
    before; with a tag a rollback is simply a roll to that tag.
    """
    env = config.environment(env_name)
    chosen = services_for(config, env, service)
    if opts.tag is not None and len(chosen) > 1:
        raise UsageError("--tag needs --service when the environment runs several services")
    creds = registry_credentials(config.registry)
    observer = observer or QuietObserver()
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
        with Fleet(nodes, env, parallel=opts.parallel) as fleet:
            fleet.connect()
            if target is None:
                plan = plan_rollback(config, env, svc, fleet)
            else:
                plan = plan_roll(env, svc, fleet, target, canary_only=opts.canary_only,
                                 zone=opts.zone)
            if opts.dry_run:
                outcomes.append(Outcome(plan, None))
                continue
            report = execute(plan, env=env, service=svc, fleet=fleet, opts=opts,
                             observer=observer, cancel=cancel, credentials=creds,
                             kind="rollback" if rollback else "roll")
            outcomes.append(Outcome(plan, report))
            if not report.ok:
                break
    return outcomes


def execute(plan: RollPlan, *, env: Environment, service: Service, fleet: Fleet,
            opts: RollOptions, observer: RollObserver, cancel: threading.Event | None,
            credentials, kind: str) -> RollReport:
    """Lock, walk the plan, record the outcome on the nodes, unlock."""
    engines = [(e.name, e.client) for e in fleet]
    started = datetime.now(timezone.utc)
    # The ledgers are made ready on the lock's pass over the nodes and written on its
    # pass back: the history record costs no round of its own.
    ledger = history.Ledger(env.name, service.name)
    lock = DeployLock(engines, env=env.name, service=service.name, tag=plan.target.tag,
                      deploy_id=plan.deploy_id, ttl=opts.lock_ttl, wait=opts.lock_wait,
                      parallel=opts.parallel)
    deployment = Deployment(plan, service=service, env=env, fleet=fleet, credentials=credentials,
                            observer=observer, cancel=cancel, kind=kind,
                            heartbeat=lock.refresh_if_due)
    first = lock.engines[0][0]

    def prepare(node: str, client) -> None:
        if node == first:
            # Contenders are decided on the first node: the deploy is ours, so the pulls
            # start now and overlap taking the rest of the lock.
            deployment.start_pulls()
        ledger.prepare_node(node, client)

    lock.prepare = prepare
    try:
        with lock:
            report = deployment.run()
            rec = history.HistoryRecord(
                deploy_id=plan.deploy_id, kind=kind, env=env.name, service=service.name,
                user=lock.holder, started_at=started, finished_at=datetime.now(timezone.utc),
                tag=plan.target.tag, digest=plan.target.digest, result=report.result.value,
                reason=report.reason,
                nodes=tuple(history.NodeRecord(n.name, n.zone, n.from_tag, n.to_tag, n.result.value,
                                               n.seconds) for n in report.nodes))
            late: list[str] = []

            def finish(node: str, client) -> None:
                problem = deployment.prune_node(node)
                if problem:
                    late.append(problem)
                ledger.append(node, client, rec)

            lock.finish = finish
    finally:
        deployment.close()
    if lock.finish_failed:
        observer.note(f"history not recorded on: {', '.join(sorted(lock.finish_failed))}")
    if lock.release_failed:
        late.append(f"the deploy lock could not be released on {', '.join(lock.release_failed)}; "
                    f"it expires in {opts.lock_ttl:.0f}s")
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

