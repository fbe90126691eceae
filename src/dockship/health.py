"""Health judgement: is a freshly started container healthy, still pending, or failed?

Pure logic, fed with observations, so the rules are tested without servers:
- a container that exited or is restarting has failed at once (no point
  waiting out the timeout for a crash);
- an HTTP answer with the expected status starts the "min_healthy" window;
  any bad answer inside the window resets it (the service must *stay*
  healthy, Nomad's `min_healthy_time`);
- past `timeout` without a completed window, it has failed, and the verdict
  says what was seen last (refused, 503, healthy for only 1.2 s...).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from dockship.config import HealthCheck


class State(enum.Enum):
    PENDING = "pending"
    HEALTHY = "healthy"
    FAILED = "failed"


@dataclass(frozen=True)
class Observation:
    """One look at the container: its engine state and one HTTP probe."""

    at: float                       # seconds since the container started
    container: str                  # engine state: running, exited, restarting, dead, created...
    exit_code: int | None = None
    restarts: int = 0
    http_status: int | None = None  # None: no HTTP answer (see error)
    connected: bool = False         # the port accepted a connection (what a tcp check asks)
    error: str | None = None        # why there was no answer: refused, timeout...


@dataclass(frozen=True)
class Verdict:
    state: State
    reason: str
    healthy_since: float | None = None

    @property
    def done(self) -> bool:
        return self.state is not State.PENDING


class HealthJudge:
    """Accumulates observations of one container into a verdict."""

    def __init__(self, check: HealthCheck):
        self.check = check
        self.healthy_since: float | None = None
        self.last_problem = "no answer yet"
        self.verdict = Verdict(State.PENDING, self.last_problem)

    def observe(self, obs: Observation) -> Verdict:
        if self.verdict.done:
            return self.verdict
        self.verdict = self._judge(obs)
        return self.verdict

    def _judge(self, obs: Observation) -> Verdict:
        if obs.container in ("exited", "dead"):
            code = f" with code {obs.exit_code}" if obs.exit_code is not None else ""
            return Verdict(State.FAILED, f"container exited{code} after {obs.at:.1f}s")
        if obs.container == "restarting" or obs.restarts > 0:
            return Verdict(State.FAILED, f"container is restarting (crash loop) after {obs.at:.1f}s")
        answered = (obs.connected if self.check.kind == "tcp"
                    else obs.http_status == self.check.status)
        good = obs.container == "running" and answered
        if good:
            if self.healthy_since is None:
                self.healthy_since = obs.at
            held = obs.at - self.healthy_since
            if held >= self.check.min_healthy:
                return Verdict(State.HEALTHY, f"healthy after {obs.at:.1f}s"
                               + (f", held {held:.1f}s" if self.check.min_healthy else ""),
                               self.healthy_since)
        else:
            if self.healthy_since is not None:
                self.last_problem = (f"was healthy for {obs.at - self.healthy_since:.1f}s, then "
                                     + self._describe(obs))
            else:
                self.last_problem = self._describe(obs)
            self.healthy_since = None
        if obs.at >= self.check.timeout:
            if self.healthy_since is not None:
                reason = (f"healthy for only {obs.at - self.healthy_since:.1f}s of the required "
                          f"{self.check.min_healthy:g}s within the {self.check.timeout:g}s timeout")
            else:
                reason = f"not healthy within {self.check.timeout:g}s: {self.last_problem}"
            return Verdict(State.FAILED, reason)
        return Verdict(State.PENDING, self.last_problem if not good else "holding", self.healthy_since)

    def _describe(self, obs: Observation) -> str:
        if obs.container != "running":
            return f"container is {obs.container}"
        if obs.http_status is not None:
            return f"GET {self.check.path} answered {obs.http_status} (expected {self.check.status})"
        return f"{self.check.describe()} got no answer ({obs.error or 'no response'})"
