"""Watching a container come up: engine state plus probes, judged by `health`.

This is the I/O half of the health gate; `health.HealthJudge` is the pure
half. Probes go straight to the node's published port, never through a
proxy from the environment. A check is an HTTP(S) GET whose status must
match (with the Host header a name-based service needs), or for services
that speak no HTTP a TCP connect that must be accepted.
"""

from __future__ import annotations

import socket
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import docker.errors
import requests
import urllib3

from dockship import deadline
from dockship.config import HealthCheck
from dockship.container import ServiceContainer
from dockship.failures import reason
from dockship.health import HealthJudge, Observation, State, Verdict


STARTUP_POLL = 0.1   # seconds between probes before the first good answer

# `health.verify = false` (the default for https checks, see config.HealthCheck) is a choice
# made in the config, documented there; urllib3's warning about it would only be noise.
warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)


def http_probe(session: requests.Session, url: str, timeout: float, **kwargs
               ) -> tuple[int | None, str | None]:
    """One probe: the status within `timeout` seconds in all (a service that trickles its
    headers is as unhealthy as one that never answers), or why there was none. `kwargs`
    (headers, verify) go to the request."""
    try:
        resp = deadline.request(session, "GET", url, what=f"health probe {url}", total=timeout,
                                max_body=None, allow_redirects=False, **kwargs)
        return resp.status_code, None
    except deadline.NoAnswer as exc:
        return None, exc.phrase        # "no complete answer within 2 s"
    except requests.RequestException as exc:
        return None, reason(exc)       # "connection refused", "no answer within 2s", ...


@dataclass(frozen=True)
class Answer:
    status: int | None = None      # the HTTP status (http checks)
    connected: bool = False        # the port accepted the connection
    error: str | None = None       # why there was no answer


def tcp_probe(address: str, port: int, timeout: float) -> Answer:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return Answer(connected=True)
    except OSError as exc:
        return Answer(error=reason(exc))


def check_url(address: str, port: int, check: HealthCheck) -> str:
    return f"{check.scheme}://{_host(address)}:{port}{check.path}"


def probe_check(session: requests.Session, address: str, port: int, check: HealthCheck,
                timeout: float) -> Answer:
    """One probe of `check` at address:port, within `timeout` seconds in all."""
    if check.kind == "tcp":
        return tcp_probe(address, port, timeout)
    headers = {"Host": check.host} if check.host else None
    status, error = http_probe(session, check_url(address, port, check), timeout,
                               headers=headers, verify=check.verify)
    return Answer(status, status is not None, error)


@dataclass(frozen=True)
class EngineState:
    """What the engine says of the thing being watched (a container, or a Swarm task)."""

    status: str                   # running, exited, restarting, dead, created, removed...
    exit_code: int | None = None
    restarts: int = 0


def container_state(container: ServiceContainer) -> EngineState:
    try:
        state = container.client.api.inspect_container(container.id)
    except docker.errors.NotFound:
        return EngineState("removed")
    status = state["State"].get("Status", "unknown")
    if state["State"].get("Restarting"):
        status = "restarting"
    exit_code = state["State"].get("ExitCode") if status in ("exited", "dead") else None
    return EngineState(status, exit_code, int(state.get("RestartCount") or 0))


def observe(state: EngineState, probe: Callable[[], Answer], at: float) -> Observation:
    """The engine's state and, while it runs, one `probe()`."""
    answer = probe() if state.status == "running" else Answer()
    return Observation(at, state.status, exit_code=state.exit_code, restarts=state.restarts,
                       http_status=answer.status, connected=answer.connected, error=answer.error)


def wait_healthy(container: ServiceContainer, *, address: str, port: int, check: HealthCheck,
                 cancel: threading.Event | None = None,
                 on_update=None) -> Verdict:
    """Probe a container until the judge decides; `cancel` makes it give up (as a failure)."""
    return watch(lambda: container_state(container), address=address, port=port, check=check,
                 cancel=cancel, on_update=on_update)


def watch(state: Callable[[], EngineState], *, address: str, port: int, check: HealthCheck,
          cancel: threading.Event | None = None, on_update=None) -> Verdict:
    """Look at `state()` and probe address:port until the judge decides."""
    judge = HealthJudge(check)
    session = requests.Session()
    session.trust_env = False
    started = time.monotonic()
    probe_timeout = max(0.5, min(2.0, check.timeout / 4))
    try:
        while True:
            obs = observe(state(),
                          lambda: probe_check(session, address, port, check, probe_timeout),
                          time.monotonic() - started)
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
        answer = probe_check(session, address, port, check, 2.0)
    finally:
        session.close()
    if answer.connected if check.kind == "tcp" else answer.status == check.status:
        return "healthy"
    return (f"unhealthy ({answer.status})" if answer.status is not None
            else f"unreachable ({answer.error})")


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address
