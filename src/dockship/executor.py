"""Executing a roll plan: batch after batch, every node's swap gated on health, undone on failure.

The whole walk is `Deployment.run`: prepare every node in the background,
then for each batch swap its nodes (swap.py) and ask the batch policies
(policies.py); at the first failure stop taking nodes and, with
`auto_rollback`, put the updated nodes back in reverse order. A lost deploy
lock or a signal trips the roll's Halt, which every wait inside it watches:
the node in flight is finished or put back, and the roll stops the same way.
At every moment each node has a running container of some version, or the
report names the node that does not and why.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace

from dockship import parallel
from dockship.config import Environment, Service
from dockship.errors import ConfigError, DockshipError, last_line
from dockship.gates import Balancer, Gates
from dockship.halt import Halt
from dockship.hooks import HookContext, HookFailed, report_file, run_hook
from dockship.nodeops import NodeOps
from dockship.observer import QuietObserver, RollObserver
from dockship.plan import Batch, RollPlan, StepAction
from dockship.policies import BatchPolicy, CanaryBake, Failure, OverlapWatch, ZoneCheck
from dockship.report import NodeOutcome, NodeResult, Result, RollReport, roll_document
from dockship.runtime import Runtime
from dockship.swap import NodeSwap, Swapped, SwapRules
from dockship.times import format_time, utc_now

_INITIAL = {StepAction.UNCHANGED: NodeResult.UNCHANGED, StepAction.HELD: NodeResult.HELD,
            StepAction.DEPLOY: NodeResult.NOT_REACHED}


class Deployment:
    """Walks one plan over one set of nodes. Create, then `run()` once."""

    def __init__(self, plan: RollPlan, *, service: Service, env: Environment,
                 nodes: Mapping[str, NodeOps], observer: RollObserver | None = None,
                 halt: Halt | None = None, kind: str = "roll", balancer: Balancer | None = None,
                 policies: Sequence[BatchPolicy] | None = None, parallel_limit: int = 16,
                 runtime: Runtime | None = None, report_path: str | None = None):
        self.plan, self.service, self.env, self.nodes, self.kind = plan, service, env, nodes, kind
        self.observer = observer or QuietObserver()
        self.halt = halt or Halt()
        self.parallel = max(1, parallel_limit)
        self.report_path = report_path      # --report: what post_roll / on_failure are shown
        self.warnings: list[str] = []
        self.gates = Gates.of(env, service, self.warnings.append, balancer=balancer)
        check = service.health
        if plan.rollback:   # a rollback to each node's previous version holds its own window
            check = replace(check, min_healthy=check.rollback_min_healthy)
        self.rules = SwapRules(plan, check, service.health, service.stop_timeout, self.gates,
                               self.halt, self.observer, self.warnings.append, runtime)
        self.swaps = {s.node.name: NodeSwap(self.rules, nodes[s.node.name], s) for s in plan.steps}
        self.policies = list(policies) if policies is not None else self._default_policies(check)
        self.outcomes = {s.node.name: NodeOutcome(s.node.name, s.node.zone, s.from_tag, s.to_tag,
                                                  _INITIAL[s.action], 0.0, changed=s.changed)
                         for s in plan.steps}
        self.swapped: list[Swapped] = []
        self.started_at = utc_now()
        self._t0 = time.monotonic()
        self._prepared: dict[str, Future] = {}
        self._preparing: ThreadPoolExecutor | None = None
        self._start_lock = threading.Lock()

    def _default_policies(self, check) -> list[BatchPolicy]:
        rollout = self.env.rollout
        canary = {s.node.name for b in self.plan.batches if b.canary for s in b.steps}
        out: list[BatchPolicy] = [CanaryBake(rollout.bake, self.plan, self.nodes,
                                             port=self.service.host_port,
                                             check=self.service.health,
                                             cancel=self.halt, observer=self.observer),
                                  ZoneCheck(self.nodes, self.service.health, self.observer)]
        if rollout.overlap_min_healthy and check.min_healthy > 0:
            out.append(OverlapWatch(self.nodes, check, canary))
        return out

    # -- the walk ---------------------------------------------------------------------

    def run(self) -> RollReport:
        self.started_at, self._t0 = utc_now(), time.monotonic()
        problem = self._preflight()
        if problem:
            return self._finish(Result.FAILED, f"{problem}; nothing was changed")
        self.observer.planned(self.plan)
        self.prepare()
        failure: Failure | None = None
        try:
            batches = self.plan.batches
            for i, batch in enumerate(batches):
                following = batches[i + 1] if i + 1 < len(batches) else None
                failure = self._roll_batch(batch) or self._judge(batch, following)
                if failure:
                    break
            else:
                failure = self._judge_end()
        except Exception as exc:  # noqa: BLE001 - a bug must still put nodes back and report
            failure = Failure(None, f"internal error: {last_line(exc)}")
        finally:
            self.close()
        if failure is None:
            return self._closing("post_roll", Result.SUCCEEDED)
        return self._fail(failure)

    def _roll_batch(self, batch: Batch) -> Failure | None:
        """Swap every node of the batch at once; the first failure, or None."""
        todo = [s for s in batch.steps if s.action is StepAction.DEPLOY]
        if not todo:
            return None
        if self.halt.is_set():
            return Failure(None, self.halt.reason)
        failure = None
        for step, result, _ in parallel.each(todo, self._swap_node, limit=len(todo)):
            outcome, done = result
            self.outcomes[step.node.name] = outcome
            if done is not None:
                self.swapped.append(done)
                for policy in self.policies:
                    policy.swapped(done)
            elif failure is None:
                failure = Failure(step.node.name, f"{step.node.name}: {outcome.reason}")
        if failure and self.halt.is_set():
            failure = replace(failure, reason=f"{self.halt.reason} ({failure.reason})")
        return failure

    def _swap_node(self, step) -> tuple[NodeOutcome, Swapped | None]:
        check = self.rules.check
        for policy in self.policies:
            check = policy.gate(step, check)
        return self.swaps[step.node.name].run(self._prepared[step.node.name], check)

    def _judge(self, batch: Batch, following: Batch | None) -> Failure | None:
        for policy in self.policies:
            failure = policy.after(batch, following, self.swapped)
            if failure:
                return self._undo_first(failure)
        return None

    def _judge_end(self) -> Failure | None:
        for policy in self.policies:
            failure = policy.finish(self.swapped)
            if failure:
                return self._undo_first(failure)
        return None

    def _undo_first(self, failure: Failure) -> Failure:
        """A policy condemned one node: put it back now, reported as failed there."""
        done = failure.undo
        if done is not None and done in self.swapped:
            self.swapped.remove(done)
            back = self.swaps[done.step.node.name].undo(done)
            result = NodeResult.BROKEN if back.result is NodeResult.BROKEN else NodeResult.FAILED
            self.outcomes[back.name] = replace(back, result=result,
                                               reason=f"{failure.reason}; {back.reason}")
        return failure

    def _fail(self, failure: Failure) -> RollReport:
        if self.env.rollout.auto_rollback and self.swapped:
            self.observer.note(f"rolling back {len(self.swapped)} updated node(s)")
            for done in reversed(self.swapped):
                self.outcomes[done.step.node.name] = self.swaps[done.step.node.name].undo(done)
        results = [o.result for o in self.outcomes.values()]
        left = [o.name for o in self.outcomes.values()
                if o.result in (NodeResult.UPDATED, NodeResult.KEPT)]
        if left:
            self.warnings.append("left on the new version: " + ", ".join(left))
        broken = NodeResult.BROKEN in results
        return self._closing("on_failure", Result.FAILED if broken or left else Result.ROLLED_BACK,
                             failure.reason, failure.node)

    # -- before and after ---------------------------------------------------------------

    def _preflight(self) -> str | None:
        """The balancer and the pre_roll hook, before anything is touched; a problem, or None."""
        if self.halt.is_set():
            return self.halt.reason
        try:
            self.gates.check([self.swaps[s.node.name].context() for s in self.plan.steps
                              if s.action is StepAction.DEPLOY])
        except ConfigError:
            raise                        # a missing socket is bad configuration: exit 2
        except DockshipError as exc:
            return str(exc) if str(exc).startswith("balancer") else f"balancer: {exc}"
        try:
            run_hook(self.env.hooks, "pre_roll", self._context())
        except HookFailed as exc:
            return str(exc)
        return None

    def prepare(self, names: Sequence[str] | None = None) -> None:
        """Pull and create on the given nodes (default: all that change), ahead of their turn.

        Idempotent per node. A node may be prepared once the deploy lock is ours
        there (what it runs is read then, and stays so), before the lock is held
        everywhere: an image or a created container changes nothing it serves.
        `close()` removes what was prepared for a node the roll never reached.
        """
        with self._start_lock:
            if self._preparing is None:
                self._preparing = ThreadPoolExecutor(max_workers=self.parallel,
                                                     thread_name_prefix="prepare")
            for s in self.plan.steps:
                name = s.node.name
                if s.action is StepAction.DEPLOY and name not in self._prepared \
                        and (names is None or name in names):
                    self._prepared[name] = self._preparing.submit(self.swaps[name].prepare)

    def close(self) -> None:
        """Stop what runs in the background; remove containers prepared for nodes not reached."""
        for policy in self.policies:
            policy.close()
        with self._start_lock:
            if self._preparing is not None:
                for fut in self._prepared.values():
                    fut.cancel()
                self._preparing.shutdown(wait=True)
        reached = {n for n, o in self.outcomes.items() if o.result is not NodeResult.NOT_REACHED}
        for name, fut in self._prepared.items():
            if name in reached or fut.cancelled() or fut.exception() is not None:
                continue
            self.swaps[name].discard(fut.result().new_id)

    def prune_node(self, name: str) -> str | None:
        """After a success: keep `retain` old containers on one node; a warning, or None.

        The caller does it on the deploy lock's pass back over the nodes, still
        under the lock, so pruning costs the roll no round of its own.
        """
        done = next((d for d in self.swapped if d.step.node.name == name), None)
        if done is None:
            return None
        try:
            self.nodes[name].prune(self.service.retain, {done.old_id} if done.old_id else set())
        except Exception as exc:  # noqa: BLE001 - the roll succeeded; a leftover is a warning
            return f"{name}: pruning old containers failed: {last_line(exc, 300)}"
        return None

    def report(self, result: Result, reason: str | None = None,
               failed_node: str | None = None) -> RollReport:
        """The report as things stand (also what history records if run() never returned)."""
        bake = next((p.verdict for p in self.policies if isinstance(p, CanaryBake)), None)
        zones = tuple(g for p in self.policies if isinstance(p, ZoneCheck) for g in p.checked)
        return RollReport(self.kind, self.plan.env, self.plan.service, self.plan.target.tag,
                          self.plan.target.digest, result, self.plan.deploy_id,
                          tuple(self.outcomes[s.node.name] for s in self.plan.steps),
                          format_time(self.started_at), time.monotonic() - self._t0, reason,
                          failed_node, tuple(self.warnings), bake.to_json() if bake else None,
                          zones)

    def _finish(self, result: Result, reason: str | None = None,
                failed_node: str | None = None) -> RollReport:
        report = self.report(result, reason, failed_node)
        self.observer.finished(report)
        return report

    def _closing(self, hook: str, result: Result, reason: str | None = None,
                 failed_node: str | None = None) -> RollReport:
        """Run post_roll or on_failure with the report so far, then finish the report (which
        then also lists the hook's failure among its warnings)."""
        if self.env.hooks.get(hook):
            report = self.report(result, reason, failed_node)
            with report_file(self.report_path, roll_document([report])) as path:
                self._hook(hook, replace(self._context(), result=result.value, reason=reason,
                                         failed_node=failed_node, report=path))
        return self._finish(result, reason, failed_node)

    def _hook(self, name: str, ctx: HookContext) -> None:
        try:
            run_hook(self.env.hooks, name, ctx)
        except HookFailed as exc:
            self.warnings.append(str(exc))

    def _context(self) -> HookContext:
        return HookContext(self.plan.env, self.plan.service, self.plan.deploy_id,
                           to_tag=self.plan.target.tag)
