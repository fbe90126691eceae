"""Hooks: the user's commands run on the machine running dockship at fixed moments.

argv lists only (no shell unless the user writes one), with the deployment's
facts in `DOCKSHIP_*` environment variables. They are how any load balancer
is drained and re-enabled around a node's swap.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from dockship.errors import DockshipError

HOOK_TIMEOUT = 300.0


class HookFailed(DockshipError):
    """A hook exited non-zero (or could not run); for `pre_*` hooks nothing was changed."""

    def __init__(self, name: str, argv: tuple[str, ...], detail: str):
        self.name = name
        super().__init__(f"hook {name} ({' '.join(argv)}) {detail}")


@dataclass(frozen=True)
class HookContext:
    env: str
    service: str
    deploy_id: str
    from_tag: str | None = None
    to_tag: str | None = None
    node: str | None = None
    address: str | None = None
    zone: str | None = None

    def variables(self) -> dict[str, str]:
        out = {"DOCKSHIP_ENV": self.env, "DOCKSHIP_SERVICE": self.service,
               "DOCKSHIP_DEPLOY_ID": self.deploy_id,
               "DOCKSHIP_FROM_TAG": self.from_tag or "", "DOCKSHIP_TO_TAG": self.to_tag or ""}
        if self.node is not None:
            out.update(DOCKSHIP_NODE=self.node, DOCKSHIP_ADDRESS=self.address or "",
                       DOCKSHIP_ZONE=self.zone or "")
        return out


def run_hook(hooks: Mapping[str, tuple[str, ...]], name: str, ctx: HookContext, *,
             timeout: float = HOOK_TIMEOUT) -> None:
    """Run hook `name` if configured; raise HookFailed with its last output lines otherwise."""
    argv = hooks.get(name)
    if not argv:
        return
    env = {**os.environ, **ctx.variables()}
    try:
        proc = subprocess.run(list(argv), env=env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise HookFailed(name, argv, f"could not run: {argv[0]} not found") from None
    except PermissionError:
        raise HookFailed(name, argv, f"could not run: {argv[0]} is not executable") from None
    except subprocess.TimeoutExpired:
        raise HookFailed(name, argv, f"did not finish within {timeout:.0f}s") from None
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise HookFailed(name, argv, f"exited {proc.returncode}" + (f": {tail}" if tail else ""))
