"""Canary bake: the canary serves side by side with the old version, and must not do worse.

A health check says a process is up; a bake says the new version behaves.
For `rollout.bake` seconds dockship sends the same steady trickle of
requests to the canary nodes and to baseline nodes still on the old
version, then compares error rates and p95 latencies. Comparing with a
baseline measured at the same moment, on the same machine, cancels out
load and noise that an absolute threshold would trip on.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests

from dockship.config import Bake
from dockship.probe import http_probe


@dataclass(frozen=True)
class Sample:
    ok: bool
    latency_ms: float


@dataclass(frozen=True)
class Figures:
    requests: int
    errors: int
    p50_ms: float
    p95_ms: float

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors,
                "error_rate": round(self.error_rate, 4), "p50_ms": round(self.p50_ms, 2),
                "p95_ms": round(self.p95_ms, 2)}

    def describe(self) -> str:
        return (f"{self.errors}/{self.requests} errors ({self.error_rate:.1%}), "
                f"p95 {self.p95_ms:.1f} ms")


@dataclass(frozen=True)
class BakeVerdict:
    passed: bool
    reason: str
    canary: Figures
    baseline: Figures | None
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"passed": self.passed, "reason": self.reason, "seconds": round(self.seconds, 2),
                "canary": self.canary.to_json(),
                "baseline": self.baseline.to_json() if self.baseline else None}


def figures(samples: Sequence[Sample]) -> Figures:
    latencies = sorted(s.latency_ms for s in samples if s.ok)
    return Figures(len(samples), sum(1 for s in samples if not s.ok),
                   _percentile(latencies, 50), _percentile(latencies, 95))


def _percentile(sorted_values: Sequence[float], pct: float) -> float:
    if not sorted_values:
        return 0.0
    rank = max(0, math.ceil(pct / 100 * len(sorted_values)) - 1)
    return sorted_values[rank]


def judge(canary: Sequence[Sample], baseline: Sequence[Sample] | None, bake: Bake,
          seconds: float = 0.0) -> BakeVerdict:
    """The verdict from two sets of samples; pure, so its rules are unit-tested."""
    c = figures(canary)
    b = figures(baseline) if baseline else None
    if c.requests == 0:
        return BakeVerdict(False, "the canary answered no bake request", c, b, seconds)
    base_rate = b.error_rate if b else 0.0
    increase = c.error_rate - base_rate
    if increase > bake.max_error_increase:
        against = f"baseline {b.describe()}" if b else "no baseline"
        return BakeVerdict(False, f"canary error rate {c.error_rate:.1%} exceeds "
                           f"{'baseline ' + format(base_rate, '.1%') if b else '0%'} by more than "
                           f"{bake.max_error_increase:.1%} (canary {c.describe()}; {against})",
                           c, b, seconds)
    if b and b.requests and c.p95_ms > bake.min_p95_ms:
        ratio = c.p95_ms / max(b.p95_ms, bake.min_p95_ms)
        if ratio > bake.max_p95_ratio:
            return BakeVerdict(False, f"canary p95 latency {c.p95_ms:.1f} ms is {ratio:.2f}× the "
                               f"baseline's {b.p95_ms:.1f} ms (allowed {bake.max_p95_ratio:g}×)",
                               c, b, seconds)
    summary = f"canary {c.describe()}" + (f"; baseline {b.describe()}" if b else "; no baseline node")
    return BakeVerdict(True, summary, c, b, seconds)


def _probe_loop(url: str, rate: float, until: float, cancel: threading.Event | None,
                **http: Any) -> list[Sample]:
    session = requests.Session()
    session.trust_env = False
    samples: list[Sample] = []
    interval = 1.0 / rate
    next_at = time.monotonic()
    try:
        while time.monotonic() < until and not (cancel and cancel.is_set()):
            t0 = time.monotonic()
            status, _ = http_probe(session, url, 2.0, **http)
            ok = status is not None and status < 500
            samples.append(Sample(ok, (time.monotonic() - t0) * 1000))
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
    finally:
        session.close()
    return samples


def run_bake(canary_urls: Sequence[str], baseline_urls: Sequence[str], bake: Bake, *,
             cancel: threading.Event | None = None, headers: dict | None = None,
             verify: bool = False) -> BakeVerdict:
    """Probe every canary and baseline URL at `bake.rate` per second for `bake.seconds`
    (with the health check's Host header and certificate rule)."""
    started = time.monotonic()
    until = started + bake.seconds
    urls = list(canary_urls) + list(baseline_urls)
    with ThreadPoolExecutor(max_workers=len(urls), thread_name_prefix="bake") as pool:
        results = [pool.submit(_probe_loop, u, bake.rate, until, cancel, headers=headers,
                               verify=verify) for u in urls]
        samples = [f.result() for f in results]
    canary = [s for per in samples[:len(canary_urls)] for s in per]
    baseline = [s for per in samples[len(canary_urls):] for s in per]
    verdict = judge(canary, baseline or None, bake, time.monotonic() - started)
    if cancel is not None and cancel.is_set():
        return BakeVerdict(False, "interrupted during the bake", verdict.canary, verdict.baseline,
                           verdict.seconds)
    return verdict
