"""Batch policies: judgements between batches, each a small object that returns a failure or nothing.

- `CanaryBake`: after the canary batch, the canary serves beside nodes still
  on the old version and must not do worse (bake.py measures).
- `ZoneCheck`: before the next zone starts, every node of the zone just
  finished must still answer healthy.
- `OverlapWatch`: with `overlap_min_healthy`, a node's min_healthy window is
  held in the background while the next batch goes on (Swarm's update
  monitor); a window that fails fails the roll, and that node goes back first.

The roll asks each policy after every batch and once more before it calls
itself a success; it never needs to know which policies there are.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Protocol

from dockship.bake import BakeVerdict, run_bake
from dockship.config import Bake, HealthCheck
from dockship.health import State, Verdict
from dockship.nodeops import NodeOps
from dockship.observer import Phase, RollObserver
from dockship.plan import Batch, NodeStep, RollPlan, StepAction
from dockship.report import GateOutcome
from dockship.swap import Swapped, held_window


@dataclass(frozen=True)
class Failure:
    """Why a roll stops: the node it happened on (if one), and a node to put back first."""

    node: str | None
    reason: str
    undo: Swapped | None = None


class BatchPolicy(Protocol):
    def gate(self, step: NodeStep, check: HealthCheck) -> HealthCheck: ...
    def swapped(self, done: Swapped) -> None: ...
    def after(self, batch: Batch, following: Batch | None,
              swapped: Sequence[Swapped]) -> Failure | None: ...
    def finish(self, swapped: Sequence[Swapped]) -> Failure | None: ...
    def close(self) -> None: ...


class Policy:
    """No judgement at all: the base the policies override what they need of."""

    def gate(self, step: NodeStep, check: HealthCheck) -> HealthCheck:
        return check

    def swapped(self, done: Swapped) -> None:
        pass

    def after(self, batch: Batch, following: Batch | None,
              swapped: Sequence[Swapped]) -> Failure | None:
        return None

    def finish(self, swapped: Sequence[Swapped]) -> Failure | None:
        return None

    def close(self) -> None:
        pass


Measure = Callable[..., BakeVerdict]


class CanaryBake(Policy):
    def __init__(self, settings: Bake, plan: RollPlan, nodes: Mapping[str, NodeOps], *,
                 port: int, check: HealthCheck, cancel: threading.Event,
                 observer: RollObserver, measure: Measure = run_bake):
        self.settings, self.plan, self.nodes = settings, plan, nodes
        self.port, self.path = port, settings.path or check.path
        self.scheme = check.scheme
        # the service's own Host header and certificate rule, as its health check has them
        self.http = {"headers": {"Host": check.host} if check.host else None,
                     "verify": check.verify}
        self.cancel, self.observer, self.measure = cancel, observer, measure
        self.verdict: BakeVerdict | None = None

    def _url(self, step: NodeStep) -> str:
        address = self.nodes[step.node.name].address
        host = f"[{address}]" if ":" in address else address
        return f"{self.scheme}://{host}:{self.port}{self.path}"

    def after(self, batch: Batch, following: Batch | None,
              swapped: Sequence[Swapped]) -> Failure | None:
        if not batch.canary or self.settings.seconds <= 0:
            return None
        canary = [s for s in batch.steps if s.action is StepAction.DEPLOY]
        baseline = [s for s in self.plan.steps if s not in batch.steps and s.from_digest
                    and s.from_digest != s.to_digest]
        for s in canary:
            self.observer.node(s.node.name, Phase.BAKING, f"{self.settings.seconds:g}s against "
                               f"{len(baseline)} baseline node(s)")
        verdict = self.measure([self._url(s) for s in canary], [self._url(s) for s in baseline],
                               self.settings, cancel=self.cancel, **self.http)
        self.verdict = verdict
        self.observer.note(f"canary bake {'passed' if verdict.passed else 'FAILED'}: {verdict.reason}")
        if not verdict.passed:
            return Failure(canary[0].node.name, f"canary bake failed: {verdict.reason}")
        for s in canary:
            self.observer.node(s.node.name, Phase.UPDATED, "bake passed")
        return None


class ZoneCheck(Policy):
    def __init__(self, nodes: Mapping[str, NodeOps], check: HealthCheck, observer: RollObserver):
        self.nodes = nodes
        # One look, not a window: the nodes were proven healthy when they were swapped.
        self.check = replace(check, min_healthy=0, timeout=min(check.timeout, 5.0))
        self.observer = observer
        self.checked: list[GateOutcome] = []    # each zone verified, for the CI reports

    def after(self, batch: Batch, following: Batch | None,
              swapped: Sequence[Swapped]) -> Failure | None:
        zone = batch.zone
        if zone is None or (following is not None and following.zone == zone):
            return None
        self.observer.note(f"zone {zone} done; verifying its nodes before the next zone")
        t0 = time.monotonic()
        failure = self._verify(zone, swapped)
        self.checked.append(GateOutcome(f"zone check {zone}", failure is None,
                                        failure.reason if failure else None,
                                        time.monotonic() - t0))
        return failure

    def _verify(self, zone: str, swapped: Sequence[Swapped]) -> Failure | None:
        for done in swapped:
            if done.step.node.zone != zone:
                continue
            name = done.step.node.name
            try:
                verdict = self.nodes[name].probe(done.new_id, self.check)
            except Exception as exc:  # noqa: BLE001 - an engine that does not answer fails the zone
                verdict = Verdict(State.FAILED, f"engine error: {exc}")
            if verdict.state is not State.HEALTHY:
                return Failure(name, f"{name}: {verdict.reason} when zone {zone} was verified")
        return None


class OverlapWatch(Policy):
    def __init__(self, nodes: Mapping[str, NodeOps], check: HealthCheck, canary: set[str]):
        self.nodes, self.check, self.canary = nodes, check, canary
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(nodes)), thread_name_prefix="hold")
        self._watches: list[tuple[Swapped, Future]] = []

    def gate(self, step: NodeStep, check: HealthCheck) -> HealthCheck:
        # The canary always holds its whole window before anything else is touched.
        return check if step.node.name in self.canary else held_window(check)

    def swapped(self, done: Swapped) -> None:
        if done.step.node.name not in self.canary:
            ops = self.nodes[done.step.node.name]
            self._watches.append((done, self._pool.submit(ops.probe, done.new_id, self.check,
                                                          cancel=self._stop)))

    def after(self, batch: Batch, following: Batch | None,
              swapped: Sequence[Swapped]) -> Failure | None:
        return self._failed(swapped, wait=False)

    def finish(self, swapped: Sequence[Swapped]) -> Failure | None:
        return self._failed(swapped, wait=True)

    def _failed(self, swapped: Sequence[Swapped], *, wait: bool) -> Failure | None:
        for done, fut in self._watches:
            if done not in swapped or (not wait and not fut.done()):
                continue
            try:
                verdict = fut.result()
            except Exception as exc:  # noqa: BLE001 - an engine error while watching is a failure
                verdict = Verdict(State.FAILED, f"engine error while watching: {exc}")
            if verdict.state is not State.HEALTHY:
                self._stop.set()
                name = done.step.node.name
                return Failure(name, f"{name}: did not stay healthy {self.check.min_healthy:g}s: "
                                     f"{verdict.reason}", undo=done)
        return None

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
