"""Watching a container come up: engine state plus HTTP probes, judged by `health`.

This is the I/O half of the health gate; `health.HealthJudge` is the pure
half. Probes go straight to the node's published port, never through a
proxy from the environment.
"""

from __future__ import annotations

import threading
import time

import docker.errors
import requests

from dockship import deadline
from dockship.config import HealthCheck
from dockship.container import ServiceContainer
from dockship.failures import reason
from dockship.health import HealthJudge, Observation, State, Verdict


STARTUP_POLL = 0.1   # seconds between probes before the first good answer


def http_probe(session: requests.Session, url: str, timeout: float) -> tuple[int | None, str | None]:
    """One probe: the status within `timeout` seconds in all (a service that trickles its
    headers is as unhealthy as one that never answers), or why there was none."""
    try:
        resp = deadline.request(session, "GET", url, what=f"health probe {url}", total=timeout,
                                max_body=None, allow_redirects=False)
        return resp.status_code, None
    except deadline.NoAnswer as exc:
        return None, exc.phrase        # "no complete answer within 2 s"
    except requests.RequestException as exc:
        return None, reason(exc)       # "connection refused", "no answer within 2s", ...


def observe(container: ServiceContainer, session: requests.Session, url: str, at: float,
            timeout: float) -> Observation:
    try:
        state = container.client.api.inspect_container(container.id)
    except docker.errors.NotFound:
        return Observation(at, "removed")
    status = state["State"].get("Status", "unknown")
    if state["State"].get("Restarting"):
        status = "restarting"
    exit_code = state["State"].get("ExitCode") if status in ("exited", "dead") else None
    restarts = int(state.get("RestartCount") or 0)
    http_status, error = (None, None)
    if status == "running":
        http_status, error = http_probe(session, url, timeout)
    return Observation(at, status, exit_code=exit_code, restarts=restarts,
                       http_status=http_status, error=error)


def wait_healthy(container: ServiceContainer, *, address: str, port: int, check: HealthCheck,
                 cancel: threading.Event | None = None,
                 on_update=None) -> Verdict:
    """Probe until the judge decides; `cancel` makes it give up (as a failure)."""
    judge = HealthJudge(check)
    url = f"http://{_host(address)}:{port}{check.path}"
    session = requests.Session()
    session.trust_env = False
    started = time.monotonic()
    probe_timeout = max(0.5, min(2.0, check.timeout / 4))
    try:
        while True:
            obs = observe(container, session, url, time.monotonic() - started, probe_timeout)
            verdict = judge.observe(obs)
            if on_update is not None:
                on_update(verdict)
            if verdict.done:
                return verdict
            if cancel is not None and cancel.is_set():
                return Verdict(State.FAILED, "interrupted before it was proven healthy")
            # Until the first good answer, poll fast: a service that is up in 0.3 s should not
            # wait out a whole interval (that is most of a node's window). Then the interval.
            time.sleep(check.interval if verdict.healthy_since is not None
                       else min(check.interval, STARTUP_POLL))
    finally:
        session.close()


def probe_once(address: str, port: int, check: HealthCheck) -> str:
    """A one-shot health word for `status`: healthy, unhealthy (503), or unreachable."""
    session = requests.Session()
    session.trust_env = False
    try:
        code, error = http_probe(session, f"http://{_host(address)}:{port}{check.path}", 2.0)
    finally:
        session.close()
    if code == check.status:
        return "healthy"
    return f"unhealthy ({code})" if code is not None else f"unreachable ({error})"


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address
