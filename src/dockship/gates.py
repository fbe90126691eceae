"""Gates around a node's swap: what must happen before its old container stops and after
its new one is proven healthy.

Hooks (`pre_node` / `post_node`) and a load balancer (drain / ready) are the
same thing to the roll: a node *leaves* service before it is touched and
*joins* again once it serves. A gate that refuses to let a node leave means
nothing changes on that node; one that refuses to let it join means the new
version is not accepted there, and the old one goes back. Gates are a stack:
they are left in order and joined in reverse (pre_node runs before the
drain, post_node after the node is back in the balancer).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from dockship.config import Environment, Service
from dockship.errors import ConfigError, DockshipError
from dockship.hooks import HookContext, run_hook
from dockship.observer import Phase

Say = Callable[[Phase, str], None]


class GateRefused(DockshipError):
    """A gate would not let the node leave or join; `joined` lists the gates it had passed."""

    def __init__(self, text: str, joined: Sequence["Gate"] = ()):
        super().__init__(text)
        self.joined = tuple(joined)


class Gate(Protocol):
    def check(self, nodes: list[HookContext]) -> None: ...
    def leave(self, ctx: HookContext, cancel: threading.Event | None, say: Say) -> None: ...
    def join(self, ctx: HookContext, cancel: threading.Event | None, say: Say) -> None: ...


class Balancer(Protocol):
    """Takes a node out of traffic and puts it back (HAProxy built in; hooks for any other).

    Each method gets the node's facts as hooks do, raises a DockshipError when
    it cannot do its job, and returns one line for the progress display.
    """

    def check(self, nodes: list[HookContext]) -> None: ...            # before anything is touched
    def drain(self, ctx: HookContext, cancel: threading.Event | None = None) -> str: ...
    def ready(self, ctx: HookContext, cancel: threading.Event | None = None) -> str: ...


class HookGate:
    """`pre_node` before a node leaves, `post_node` once it serves again."""

    def __init__(self, hooks: Mapping[str, tuple[str, ...]]):
        self.hooks = hooks

    def check(self, nodes: list[HookContext]) -> None:
        pass

    def leave(self, ctx: HookContext, cancel: threading.Event | None, say: Say) -> None:
        if self.hooks.get("pre_node"):
            say(Phase.PRE_NODE, "")
            run_hook(self.hooks, "pre_node", ctx)

    def join(self, ctx: HookContext, cancel: threading.Event | None, say: Say) -> None:
        if self.hooks.get("post_node"):
            say(Phase.POST_NODE, "")
            run_hook(self.hooks, "post_node", ctx)


class BalancerGate:
    """A load balancer: drained before the stop, ready once healthy."""

    def __init__(self, balancer: Balancer, warn: Callable[[str], None]):
        self.balancer = balancer
        self.warn = warn

    def check(self, nodes: list[HookContext]) -> None:
        self.balancer.check(nodes)

    def leave(self, ctx: HookContext, cancel: threading.Event | None, say: Say) -> None:
        say(Phase.DRAINING, "")
        try:
            detail = self.balancer.drain(ctx, cancel)
        except DockshipError as exc:
            if cancel is not None:       # the node stays as it was: back into traffic
                self._ready_quietly(ctx, say)
            raise GateRefused(f"balancer: {exc}") from None
        say(Phase.DRAINED, detail)
        if cancel is not None and cancel.is_set():
            self._ready_quietly(ctx, say)
            raise GateRefused("interrupted while draining")

    def join(self, ctx: HookContext, cancel: threading.Event | None, say: Say) -> None:
        say(Phase.READY, "waiting for the balancer")
        try:
            say(Phase.IN_SERVICE, self.balancer.ready(ctx, cancel))
        except DockshipError as exc:     # ready() leaves the node drained when it fails
            raise GateRefused(f"balancer: {exc}") from None

    def _ready_quietly(self, ctx: HookContext, say: Say) -> None:
        try:
            say(Phase.IN_SERVICE, self.balancer.ready(ctx))
        except DockshipError as exc:
            self.warn(f"{ctx.node}: balancer: {exc}")


class Gates:
    """The gate stack of one roll."""

    def __init__(self, gates: Sequence[Gate], warn: Callable[[str], None]):
        self.gates = tuple(gates)
        self.warn = warn

    @classmethod
    def of(cls, env: Environment, service: Service, warn: Callable[[str], None],
           balancer: Balancer | None = None) -> "Gates":
        """Hooks, and the environment's balancer (or the one given)."""
        stack: list[Gate] = [HookGate(env.hooks)]
        balancer = balancer if balancer is not None else balancer_for(env, service)
        if balancer is not None:
            stack.append(BalancerGate(balancer, warn))
        return cls(stack, warn)

    def check(self, nodes: list[HookContext]) -> None:
        for gate in self.gates:
            gate.check(nodes)

    def leave(self, ctx: HookContext, cancel: threading.Event | None, say: Say) -> None:
        """Every gate lets the node leave, or GateRefused (the node is as it was)."""
        for gate in self.gates:
            try:
                gate.leave(ctx, cancel, say)
            except GateRefused:
                raise
            except DockshipError as exc:
                raise GateRefused(str(exc)) from None

    def join(self, ctx: HookContext, cancel: threading.Event | None, say: Say) -> None:
        """Every gate takes the node back, or GateRefused naming those that did."""
        joined: list[Gate] = []
        for gate in reversed(self.gates):
            try:
                gate.join(ctx, cancel, say)
            except DockshipError as exc:
                raise GateRefused(str(exc), joined) from None
            joined.append(gate)

    def leave_quietly(self, ctx: HookContext, say: Say, only: Sequence[Gate] | None = None) -> None:
        """Leave, never stopping for a refusal: the node goes back whatever a gate says."""
        for gate in self.gates:
            if only is not None and gate not in only:
                continue
            try:
                gate.leave(ctx, None, say)
            except DockshipError as exc:
                self.warn(f"{ctx.node}: {exc} (put back anyway)")

    def join_quietly(self, ctx: HookContext, say: Say) -> None:
        """Join after a node was put back: its container runs, so a refusal is a warning."""
        for gate in reversed(self.gates):
            try:
                gate.join(ctx, None, say)
            except DockshipError as exc:
                self.warn(f"{ctx.node}: {exc}")


def balancer_for(env: Environment, service: Service) -> Balancer | None:
    """The balancer of `[environments.NAME.balancer]`, or None without one."""
    settings = env.balancer
    if settings is None:
        return None
    if settings.kind == "haproxy":
        from dockship.haproxy import HAProxyBalancer
        return HAProxyBalancer(settings, service.name)
    raise ConfigError(f"{settings.at}.kind: '{settings.kind}' is not supported")
