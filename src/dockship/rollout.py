"""Executing a roll plan: node by node, gated on health, undone on failure.

A node's swap is a scope (compose's recreate, pipx's preserve_venv): the
old container is stopped and *kept*, the new one started and proven healthy,
and only then is the swap final; any failure in between puts the old
container back at once. When a later node fails, the nodes already updated
are put back too, in reverse order (`auto_rollback`). At every moment each
node has a running container of some version, or the report says precisely
which node does not and why.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Protocol

import docker.errors

from dockship.bake import BakeVerdict, run_bake
from dockship.config import Environment, Service
from dockship.container import (ServiceContainer, containers_of, create, current_of, logs_tail,
                                prune, remove, start, stop)
from dockship.credentials import Credentials
from dockship.engine import StreamError, drain
from dockship.engines import Fleet, NodeEngine
from dockship.errors import ConfigError, DockshipError, last_line
from dockship.health import State, Verdict
from dockship.hooks import HookContext, HookFailed, run_hook
from dockship.plan import NodeStep, RollPlan, StepAction
from dockship.probe import probe_once, wait_healthy
from dockship.report import NodeReport, NodeResult, Result, RollReport
from dockship.stateimage import ENGINE_ERRORS


class RollObserver(Protocol):
    """Receives progress events; the live table and the JSON report are observers."""

    def planned(self, plan: RollPlan) -> None: ...
    def node(self, name: str, phase: str, detail: str = "") -> None: ...
    def note(self, text: str) -> None: ...
    def finished(self, report: RollReport) -> None: ...


class QuietObserver:
    def planned(self, plan: RollPlan) -> None: pass
    def node(self, name: str, phase: str, detail: str = "") -> None: pass
    def note(self, text: str) -> None: pass
    def finished(self, report: RollReport) -> None: pass


# --- balancer: a node leaves traffic before its container stops, rejoins once healthy ---

class Balancer(Protocol):
    """Takes a node out of traffic and puts it back (HAProxy built in; hooks for any other).

    Each method gets the node's facts as hooks do, raises a DockshipError when
    it cannot do its job, and returns one line for the progress display.
    """

    def check(self, nodes: list[HookContext]) -> None: ...            # before anything is touched
    def drain(self, ctx: HookContext, cancel: threading.Event | None = None) -> str: ...
    def ready(self, ctx: HookContext, cancel: threading.Event | None = None) -> str: ...


def balancer_for(env: Environment, service: Service) -> Balancer | None:
    """The balancer of `[environments.NAME.balancer]`, or None without one."""
    settings = env.balancer
    if settings is None:
        return None
    if settings.kind == "haproxy":
        from dockship.haproxy import HAProxyBalancer
        return HAProxyBalancer(settings, service.name)
    raise ConfigError(f"{settings.at}.kind: '{settings.kind}' is not supported")
# --- end balancer ----------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """A node made ready ahead of its turn: its running container, and the new one created.

    A created container holds no port and serves nothing, so making it while
    earlier nodes are still being swapped is free; the node's own window is
    then only stop + start + health.
    """

    old: ServiceContainer | None
    new: ServiceContainer


@dataclass(frozen=True)
class Swapped:
    """What a successful swap leaves behind, to undo it later if a later node fails."""

    step: NodeStep
    old_id: str | None
    new_id: str
    started: float


class Deployment:
    """Walks one plan over one fleet. Create, then `run()` once."""

    def __init__(self, plan: RollPlan, *, service: Service, env: Environment, fleet: Fleet,
                 credentials: Credentials | None = None, observer: RollObserver | None = None,
                 cancel: threading.Event | None = None, kind: str = "roll",
                 heartbeat: Callable[[], object] | None = None):
        self.plan = plan
        self.service = service
        self.env = env
        self.fleet = fleet
        self.credentials = credentials
        self.observer = observer or QuietObserver()
        self.cancel = cancel or threading.Event()
        self.kind = kind
        self.heartbeat = heartbeat   # called between batches: keeps the deploy lock fresh
        self.warnings: list[str] = []
        self.bake: BakeVerdict | None = None
        self.balancer = balancer_for(env, service)
        # A rollback (to each node's previous version) holds rollback_min_healthy instead.
        self._check = (replace(service.health, min_healthy=service.health.rollback_min_healthy)
                       if plan.rollback else service.health)
        self._overlap = env.rollout.overlap_min_healthy and self._check.min_healthy > 0
        # The canary always holds its whole window before anything else is touched:
        # a sick release must stop at the first node, overlap or not.
        self._canary = {s.node.name for b in plan.batches if b.canary for s in b.steps}
        self._hold_stop = threading.Event()
        self._taken: set[str] = set()   # nodes whose prepared container _deploy has taken over
        self._prefetch: ThreadPoolExecutor | None = None
        self._to_prune: dict[str, str | None] = {}   # node -> the old container it keeps
        self._pulls: dict[str, Future] = {}

    # -- before the lock -------------------------------------------------------------

    def start_pulls(self) -> None:
        """Start pulling the target image on every node that changes, at once.

        Safe before the deploy lock is held (an image on a node changes nothing it
        runs), so the pulls overlap taking the lock. `run()` starts them if this
        was not called; `close()` stops those not begun.
        """
        if self._prefetch is not None:
            return
        steps = [s for s in self.plan.steps if s.action is StepAction.DEPLOY]
        self._prefetch = ThreadPoolExecutor(max_workers=self.fleet.parallel, thread_name_prefix="pull")
        self._pulls = {s.node.name: self._prefetch.submit(self._pull, s) for s in steps}

    def close(self) -> None:
        if self._prefetch is not None:
            self._prefetch.shutdown(wait=True, cancel_futures=True)

    # -- the walk ---------------------------------------------------------------------

    def run(self) -> RollReport:
        started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        t0 = time.monotonic()
        reports: dict[str, NodeReport] = {}
        initial = {StepAction.UNCHANGED: NodeResult.UNCHANGED, StepAction.HELD: NodeResult.HELD,
                   StepAction.DEPLOY: NodeResult.NOT_REACHED}
        for step in self.plan.steps:
            result = initial[step.action]
            reports[step.node.name] = NodeReport(step.node.name, step.node.zone, step.from_tag,
                                                 step.to_tag, result, 0.0)
        unbalanced = None
        if self.balancer is not None:
            # Socket, backend and every node's server, before anything is touched; a missing
            # socket is a ConfigError (exit 2) and escapes, anything else fails the roll.
            try:
                self.balancer.check([self._ctx(s, self.fleet.by_name(s.node.name))
                                     for s in self.plan.steps if s.action is StepAction.DEPLOY])
            except ConfigError:
                raise
            except DockshipError as exc:
                unbalanced = f"balancer: {exc}"
        self.observer.planned(self.plan)

        def finish(result: Result, reason: str | None = None, failed: str | None = None) -> RollReport:
            report = RollReport(self.kind, self.plan.env, self.plan.service, self.plan.target.tag,
                                self.plan.target.digest, result, self.plan.deploy_id,
                                tuple(reports[s.node.name] for s in self.plan.steps), started_at,
                                time.monotonic() - t0, reason, failed, tuple(self.warnings),
                                self.bake.to_json() if self.bake else None)
            self.observer.finished(report)
            return report

        if unbalanced:
            return finish(Result.FAILED, f"{unbalanced}; nothing was changed")
        try:
            run_hook(self.env.hooks, "pre_roll", self._ctx())
        except HookFailed as exc:
            return finish(Result.FAILED, f"{exc}; nothing was changed")

        swapped: list[Swapped] = []
        failure: tuple[str, str] | None = None
        watches: list[tuple[Swapped, Future]] = []
        self.start_pulls()
        with ThreadPoolExecutor(max_workers=self.fleet.parallel, thread_name_prefix="prepare") as early, \
                ThreadPoolExecutor(max_workers=max(1, len(self.plan.steps)), thread_name_prefix="hold") as holds:
            prepared = {s.node.name: early.submit(self._prepare, s, self._pulls[s.node.name])
                        for s in self.plan.steps if s.node.name in self._pulls}
            batches = self.plan.batches
            for i, batch in enumerate(batches):
                todo = [s for s in batch.steps if s.action is StepAction.DEPLOY]
                if not todo:
                    continue
                if self.cancel.is_set():
                    failure = ("", "interrupted")
                    break
                if self.heartbeat is not None:
                    self.heartbeat()
                outcomes = self._in_parallel(todo, lambda s: self._deploy_guarded(s, prepared[s.node.name]))
                for step, (report, done) in zip(todo, outcomes):
                    reports[step.node.name] = report
                    if done is not None:
                        swapped.append(done)
                        if self._overlap and step.node.name not in self._canary:
                            watches.append((done, holds.submit(self._hold, done)))
                    elif failure is None:
                        failure = (step.node.name, f"{step.node.name}: {report.reason}")
                failure = failure or self._held_failure(watches, swapped, reports, wait=False)
                if failure:
                    break
                if batch.canary and self.env.rollout.bake.seconds > 0:
                    failure = self._bake(batch)
                    if failure:
                        break
                zone_done = batch.zone is not None and (i + 1 == len(batches)
                                                        or batches[i + 1].zone != batch.zone)
                if zone_done:
                    failure = self._verify_zone(batch.zone, swapped)
                    if failure:
                        break
            if failure is None:   # the roll ends when the last window has been held
                failure = self._held_failure(watches, swapped, reports, wait=True)
            if failure:
                self._hold_stop.set()
                for fut in (*prepared.values(), *self._pulls.values()):
                    fut.cancel()
        self._discard_unused(prepared)
        self.close()

        if failure is None:
            self._to_prune = {d.step.node.name: d.old_id for d in swapped}
            try:
                run_hook(self.env.hooks, "post_roll", self._ctx())
            except HookFailed as exc:
                self.warnings.append(str(exc))
            return finish(Result.SUCCEEDED)

        failed_node, reason = failure
        if self.env.rollout.auto_rollback and swapped:
            self.observer.note(f"rolling back {len(swapped)} updated node(s)")
            for done in reversed(swapped):
                reports[done.step.node.name] = self._restore(done)
        broken = [r for r in reports.values() if r.result is NodeResult.BROKEN]
        left = [r for r in reports.values() if r.result in (NodeResult.UPDATED, NodeResult.KEPT)]
        result = Result.FAILED if broken or left else Result.ROLLED_BACK
        if left:
            self.warnings.append("left on the new version: " + ", ".join(r.name for r in left))
        try:
            run_hook(self.env.hooks, "on_failure", self._ctx())
        except HookFailed as exc:
            self.warnings.append(str(exc))
        return finish(result, reason, failed_node or None)

    def _hold(self, done: Swapped) -> Verdict:
        """Watch a swapped node until it has stayed healthy min_healthy (runs beside the next batch)."""
        engine = self.fleet.by_name(done.step.node.name)
        container = ServiceContainer.from_id(engine.client, done.new_id)
        return wait_healthy(container, address=engine.address, port=self.service.port,
                            check=self._check, cancel=self._hold_stop)

    def _held_failure(self, watches: list[tuple[Swapped, Future]], swapped: list[Swapped],
                      reports: dict[str, NodeReport], *, wait: bool) -> tuple[str, str] | None:
        """The first node whose background window failed, put back at once; or None."""
        for done, fut in watches:
            if not wait and not fut.done():
                continue
            try:
                verdict = fut.result()
            except Exception as exc:  # noqa: BLE001 - an engine error while watching is a failure
                verdict = Verdict(State.FAILED, _engine_problem(done.step.node.name, exc, "watching"))
            if verdict.state is State.HEALTHY:
                continue
            name = done.step.node.name
            self._hold_stop.set()
            swapped.remove(done)
            back = self._restore(done)
            reason = f"did not stay healthy {self._check.min_healthy:g}s: {verdict.reason}"
            result = NodeResult.BROKEN if back.result is NodeResult.BROKEN else NodeResult.FAILED
            reports[name] = replace(back, result=result, reason=f"{reason}; {back.reason}")
            return (name, f"{name}: {reason}")
        return None

    def _bake(self, batch) -> tuple[str, str] | None:
        """Judge the canary against nodes still on the old version; a failure, or None."""
        bake = self.env.rollout.bake
        path = bake.path or self.service.health.path
        port = self.service.port

        def url(step: NodeStep) -> str:
            return f"http://{self.fleet.by_name(step.node.name).address}:{port}{path}"

        canary = [s for s in batch.steps if s.action is StepAction.DEPLOY]
        baseline = [s for s in self.plan.steps if s not in batch.steps and s.from_digest
                    and s.from_digest != s.to_digest]
        for s in canary:
            self.observer.node(s.node.name, "baking", f"{bake.seconds:g}s against "
                               f"{len(baseline)} baseline node(s)")
        verdict = run_bake([url(s) for s in canary], [url(s) for s in baseline], bake,
                           cancel=self.cancel)
        self.bake = verdict
        self.observer.note(f"canary bake {'passed' if verdict.passed else 'FAILED'}: {verdict.reason}")
        if verdict.passed:
            for s in canary:
                self.observer.node(s.node.name, "updated", "bake passed")
            return None
        return (canary[0].node.name, f"canary bake failed: {verdict.reason}")

    def _verify_zone(self, zone: str, swapped: list[Swapped]) -> tuple[str, str] | None:
        """Before the next zone: every node of this zone must still be healthy."""
        self.observer.note(f"zone {zone} done; verifying its nodes before the next zone")
        for done in swapped:
            if done.step.node.zone != zone:
                continue
            engine = self.fleet.by_name(done.step.node.name)
            health = probe_once(engine.address, self.service.port, self.service.health)
            if health != "healthy":
                return (engine.name, f"{engine.name}: {health} when zone {zone} was verified")
        return None

    def _in_parallel(self, steps: list[NodeStep], fn: Callable[[NodeStep], tuple[NodeReport, Swapped | None]]
                     ) -> list[tuple[NodeReport, Swapped | None]]:
        if len(steps) == 1:
            return [fn(steps[0])]
        with ThreadPoolExecutor(max_workers=len(steps), thread_name_prefix="node") as pool:
            return [f.result() for f in [pool.submit(fn, s) for s in steps]]

    def _ctx(self, step: NodeStep | None = None, engine: NodeEngine | None = None) -> HookContext:
        if step is None:
            return HookContext(self.plan.env, self.plan.service, self.plan.deploy_id,
                               to_tag=self.plan.target.tag)
        return HookContext(self.plan.env, self.plan.service, self.plan.deploy_id,
                           from_tag=step.from_tag, to_tag=step.to_tag, node=step.node.name,
                           address=engine.address if engine else None, zone=step.node.zone)

    # -- one node ---------------------------------------------------------------------

    def _ref(self, step: NodeStep) -> str:
        return f"{self.plan.target.repository}@{step.to_digest}"

    def _pull(self, step: NodeStep) -> None:
        """Bring the target image onto the node ahead of its turn (all nodes at once)."""
        engine = self.fleet.by_name(step.node.name)
        client = engine.client
        ref = self._ref(step)
        try:
            client.images.get(ref)
            return
        except docker.errors.ImageNotFound:
            pass
        if not step.pull:
            raise StreamError(f"rollback on {step.node.name}", f"image {ref} is no longer on the node")
        progress: dict[str, tuple[int, int]] = {}

        def on_chunk(chunk: dict) -> None:
            detail = chunk.get("progressDetail") or {}
            if chunk.get("id") and detail.get("total"):
                progress[chunk["id"]] = (detail.get("current", 0), detail["total"])
                done = sum(c for c, _ in progress.values()) / 1e6
                total = sum(t for _, t in progress.values()) / 1e6
                self.observer.node(step.node.name, "pulling", f"{done:.1f}/{total:.1f} MB")

        auth = self.credentials.as_auth_config() if self.credentials else None
        drain(client.api.pull(self.plan.target.repository, tag=step.to_digest, stream=True,
                              decode=True, auth_config=auth), f"pull of {ref} on {step.node.name}",
              on_chunk)

    def _prepare(self, step: NodeStep, pull: Future) -> Prepared:
        """Once pulled: read the running container, create the new one (before the node's turn)."""
        pull.result()
        engine = self.fleet.by_name(step.node.name)
        old = current_of(engine.client, self.service.name)
        try:
            new = create(engine.client, self.service, env=self.plan.env, ref=self._ref(step),
                         tag=step.to_tag, digest=step.to_digest, deploy_id=self.plan.deploy_id,
                         previous=old)
        except Exception as exc:
            raise DockshipError(_engine_problem(step.node.name, exc,
                                                "could not create the new container")) from exc
        return Prepared(old, new)

    def _discard_unused(self, prepared: dict[str, Future]) -> None:
        """Remove containers prepared for nodes the roll never reached (it stopped early)."""
        for name, fut in prepared.items():
            if name in self._taken or fut.cancelled() or fut.exception() is not None:
                continue
            self._discard(name, fut.result().new)

    def _deploy_guarded(self, step: NodeStep, prepared: Future) -> tuple[NodeReport, Swapped | None]:
        """`_deploy`, but an error it did not foresee marks the node BROKEN instead of
        escaping: the roll must still put the other nodes back and report every node."""
        t0 = time.monotonic()
        self._taken.add(step.node.name)
        try:
            return self._deploy(step, prepared)
        except Exception as exc:  # noqa: BLE001 - reported per node, never lost
            reason = _engine_problem(step.node.name, exc, "unexpected error")
            self.observer.node(step.node.name, "BROKEN", reason)
            return NodeReport(step.node.name, step.node.zone, step.from_tag, step.to_tag,
                              NodeResult.BROKEN, time.monotonic() - t0,
                              f"{reason}; the node's state is unknown, check it"), None

    def _deploy(self, step: NodeStep, prepared: Future) -> tuple[NodeReport, Swapped | None]:
        t0 = time.monotonic()
        name = step.node.name
        svc = self.service
        engine = self.fleet.by_name(name)

        def report(result: NodeResult, reason: str | None = None, logs: list[str] | None = None) -> NodeReport:
            return NodeReport(name, step.node.zone, step.from_tag, step.to_tag, result,
                              time.monotonic() - t0, reason, tuple(logs or ()))

        if not prepared.done():
            self.observer.node(name, "pulling")
        try:
            ready: Prepared = prepared.result()
        except Exception as exc:  # noqa: BLE001 - any failure before a change is "nothing changed"
            self.observer.node(name, "failed", "not prepared")
            return report(NodeResult.FAILED, f"{_short(exc)}; nothing changed on this node"), None
        old, new = ready.old, ready.new
        ctx = self._ctx(step, engine)
        try:
            self.observer.node(name, "pre_node hook")
            run_hook(self.env.hooks, "pre_node", ctx)
            problem = self._drain(name, ctx)
        except HookFailed as exc:
            problem = f"{exc}"
        if problem:
            self._discard(name, new)
            self.observer.node(name, "failed", problem)
            return report(NodeResult.FAILED, f"{problem}; nothing changed on this node"), None

        in_service = False
        try:
            if old is not None:
                self.observer.node(name, "stopping", old.tag or "")
                stop(old, svc.stop_timeout)
            self.observer.node(name, "starting", step.to_tag)
            start(new)
            self.observer.node(name, "health", "waiting")
            # With overlap the window is held in the background (_hold); here the first good answer.
            overlap = self._overlap and name not in self._canary
            gate = replace(self._check, min_healthy=0) if overlap else self._check
            verdict = wait_healthy(new, address=engine.address, port=svc.port, check=gate,
                                   cancel=self.cancel,
                                   on_update=lambda v: self.observer.node(name, "health", v.reason))
        except Exception as exc:  # noqa: BLE001 - whatever broke, the old container goes back
            verdict = Verdict(State.FAILED, _engine_problem(name, exc, "could not start the new container"))

        if verdict.state is State.HEALTHY and self.balancer is not None:
            try:
                self.observer.node(name, "ready", "waiting for the balancer")
                self.observer.node(name, "in service", self.balancer.ready(ctx, self.cancel))
                in_service = True
            except DockshipError as exc:   # ready() leaves the node drained when it fails
                verdict = Verdict(State.FAILED, f"balancer: {exc}")
        if verdict.state is State.HEALTHY:
            try:
                run_hook(self.env.hooks, "post_node", ctx)
            except HookFailed as exc:
                verdict = Verdict(State.FAILED, str(exc))
        if verdict.state is State.HEALTHY:
            self.observer.node(name, "updated", verdict.reason)
            return report(NodeResult.UPDATED, verdict.reason), Swapped(step, old.id if old else None,
                                                                      new.id, t0)

        # The new version failed here: keep its last words, then put the old one back.
        logs = logs_tail(new)
        if in_service:
            self._drain(name, ctx, cancellable=False)
        self.observer.node(name, "putting back", step.from_tag or "")
        self._discard(name, new)
        problem = self._put_back(engine, old, ctx)
        if problem:
            self.observer.node(name, "BROKEN", problem)
            return report(NodeResult.BROKEN, f"{verdict.reason}; and {problem}", logs), None
        self.observer.node(name, "failed", verdict.reason)
        return report(NodeResult.FAILED, verdict.reason, logs), None

    def _discard(self, name: str, new: ServiceContainer) -> None:
        """Stop and remove a new container that will not serve (best effort, never raises)."""
        try:
            stop(new, 1)
            remove(new)
        except ENGINE_ERRORS as exc:
            self.warnings.append(f"{name}: could not remove the unused container {new.name}: {_short(exc)}")

    def prune_node(self, name: str) -> str | None:
        """After a successful run(): keep `retain` old containers on one node; a warning, or None.

        Not part of run(): the caller does it on the deploy lock's pass back over the
        nodes (still under the lock), so pruning costs the roll no round of its own.
        """
        if name not in self._to_prune:
            return None
        old_id = self._to_prune.pop(name)
        try:
            prune(containers_of(self.fleet.by_name(name).client, self.service.name),
                  self.service.retain, protect={old_id} if old_id else set())
        except Exception as exc:  # noqa: BLE001 - the roll succeeded; a leftover is a warning
            return f"{name}: pruning old containers failed: {_short(exc)}"
        return None

    def _put_back(self, engine: NodeEngine, old: ServiceContainer | None, ctx: HookContext) -> str | None:
        """Start the previous container again and prove it healthy; a problem, or None."""
        if old is None:
            return None
        try:
            start(old)
            verdict = wait_healthy(old, address=engine.address, port=self.service.port,
                                   check=self.service.health)
        except ENGINE_ERRORS as exc:
            return (f"the previous container {old.name} could not be started: "
                    f"{_engine_problem(engine.name, exc, 'start failed')}")
        if verdict.state is not State.HEALTHY:
            return f"the previous container {old.name} is not healthy again: {verdict.reason}"
        self._ready_or_warn(engine.name, ctx)
        try:
            run_hook(self.env.hooks, "post_node", ctx)
        except HookFailed as exc:
            self.warnings.append(f"{engine.name}: {exc}")
        return None

    def _restore(self, done: Swapped) -> NodeReport:
        """Undo a successful swap because a later node failed (automatic rollback)."""
        t0 = time.monotonic()
        step = done.step
        name = step.node.name
        engine = self.fleet.by_name(name)
        ctx = HookContext(self.plan.env, self.plan.service, self.plan.deploy_id,
                          from_tag=step.to_tag, to_tag=step.from_tag, node=name,
                          address=engine.address, zone=step.node.zone)

        def report(result: NodeResult, reason: str | None) -> NodeReport:
            return NodeReport(name, step.node.zone, step.from_tag, step.to_tag, result,
                              time.monotonic() - t0, reason)

        if done.old_id is None:
            self.observer.node(name, "kept", "no previous version to go back to")
            return report(NodeResult.KEPT, "no previous version to go back to; left on the new one")
        self.observer.node(name, "rolling back", step.from_tag or "")
        try:
            run_hook(self.env.hooks, "pre_node", ctx)
        except HookFailed as exc:
            self.warnings.append(f"{name}: {exc} (rolled back anyway)")
        problem = self._drain(name, ctx, cancellable=False)   # a rollback runs after Ctrl-C too
        if problem:
            self.warnings.append(f"{name}: {problem} (rolled back anyway)")
        try:
            client = engine.client
            new = ServiceContainer.from_id(client, done.new_id)
            old = ServiceContainer.from_id(client, done.old_id)
            stop(new, self.service.stop_timeout)
        except ENGINE_ERRORS as exc:
            problem = _engine_problem(name, exc, "could not stop the new container")
            self.observer.node(name, "BROKEN", problem)
            return report(NodeResult.BROKEN, problem)
        problem = self._put_back(engine, old, ctx)
        if problem:
            # The previous version will not come back: the new one is better than nothing.
            try:
                start(new)
                self._ready_or_warn(name, ctx)
            except ENGINE_ERRORS:
                pass
            self.observer.node(name, "BROKEN", problem)
            return report(NodeResult.BROKEN, problem)
        self.observer.node(name, "rolled back", step.from_tag or "")
        return report(NodeResult.ROLLED_BACK, f"put back on {step.from_tag}")

    # -- the balancer around a swap --------------------------------------------------

    def _drain(self, name: str, ctx: HookContext, *, cancellable: bool = True) -> str | None:
        """Take the node out of the balancer and let its requests finish; a problem, or None."""
        if self.balancer is None:
            return None
        self.observer.node(name, "draining")
        try:
            detail = self.balancer.drain(ctx, self.cancel if cancellable else None)
        except DockshipError as exc:
            if cancellable:   # the node stays as it was: back into traffic if it left it
                self._ready_or_warn(name, ctx)
            return f"balancer: {exc}"
        self.observer.node(name, "drained", detail)
        if cancellable and self.cancel.is_set():
            self._ready_or_warn(name, ctx)
            return "interrupted while draining"
        return None

    def _ready_or_warn(self, name: str, ctx: HookContext) -> None:
        """Put the node back into the balancer; a failure is a warning (its container runs)."""
        if self.balancer is None:
            return
        try:
            self.observer.node(name, "in service", self.balancer.ready(ctx))
        except DockshipError as exc:
            self.warnings.append(f"{name}: balancer: {exc}")


def _engine_problem(node: str, exc: BaseException, doing: str) -> str:
    """One line for a failed engine call: an engine that answered, or one that did not."""
    if isinstance(exc, docker.errors.APIError) or not isinstance(exc, ENGINE_ERRORS):
        return f"{doing}: {_short(exc)}"
    return f"{doing}: the engine of {node} is unreachable ({_short(exc)})"


def _short(exc: BaseException) -> str:
    return last_line(exc, 300)
