"""Hooks: the user's commands run on the machine running dockship at fixed moments.

argv lists only (no shell unless the user writes one), with the deployment's
facts in `DOCKSHIP_*` environment variables. They are how any load balancer
is drained and re-enabled around a node's swap.

A hook is someone else's program: it inherits dockship's environment without
the secrets (design §8): no `DOCKSHIP_REGISTRY_*`, `DOCKSHIP_SMTP_PASSWORD`,
`DOCKER_AUTH_CONFIG`, no variable named secret by the caller (a service's
``secrets``, design §11) and no variable holding a known secret value.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dockship.errors import DockshipError
from dockship.redact import Secrets, known, redact

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
    # post_roll and on_failure only (design §12): how the roll ended, and its JSON report.
    result: str | None = None
    reason: str | None = None
    failed_node: str | None = None
    report: str | None = None

    def variables(self) -> dict[str, str]:
        out = {"DOCKSHIP_ENV": self.env, "DOCKSHIP_SERVICE": self.service,
               "DOCKSHIP_DEPLOY_ID": self.deploy_id,
               "DOCKSHIP_FROM_TAG": self.from_tag or "", "DOCKSHIP_TO_TAG": self.to_tag or ""}
        if self.node is not None:
            out.update(DOCKSHIP_NODE=self.node, DOCKSHIP_ADDRESS=self.address or "",
                       DOCKSHIP_ZONE=self.zone or "")
        if self.result is not None:
            # An environment value cannot hold NUL; anything else of the reason is kept as text.
            out.update(DOCKSHIP_RESULT=self.result,
                       DOCKSHIP_REASON=(self.reason or "").replace("\0", ""),
                       DOCKSHIP_FAILED_NODE=self.failed_node or "",
                       DOCKSHIP_REPORT=self.report or "")
        return out


@contextlib.contextmanager
def report_file(path: str | None, document: Mapping[str, Any]) -> Iterator[str]:
    """The JSON report a closing hook reads through DOCKSHIP_REPORT: written to `path`
    (--report, rewritten with the final document when the command ends), or to a private
    temporary file removed once the hook is done (also when `path` cannot be written)."""
    text = json.dumps(document, indent=2) + "\n"
    if path:
        try:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError:
            pass          # the hook still gets its report, from a temporary file below
        else:
            yield path
            return
    fd, temp = tempfile.mkstemp(prefix="dockship-report-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        yield temp
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def hook_environ(ctx: HookContext, secrets: Secrets | None = None) -> dict[str, str]:
    """What a hook's process sees: this process's environment cleaned of `secrets` (by
    default `redact.known()`: the fixed secret variables and remembered values), and the
    deployment's `DOCKSHIP_*` facts."""
    secrets = (secrets or Secrets()).with_environ(os.environ) | known()
    return {**secrets.clean_environ(os.environ), **ctx.variables()}


def run_hook(hooks: Mapping[str, tuple[str, ...]], name: str, ctx: HookContext, *,
             timeout: float = HOOK_TIMEOUT, secrets: Secrets | None = None) -> None:
    """Run hook `name` if configured; raise HookFailed with its last output lines otherwise.

    `secrets` adds names and values the hook must not see to the fixed ones."""
    argv = hooks.get(name)
    if not argv:
        return
    env = hook_environ(ctx, secrets)
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
        # The hook's own words end up in the report, history and --json: no secret in them.
        tail = redact(known().scrub(" | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])))
        raise HookFailed(name, argv, f"exited {proc.returncode}" + (f": {tail}" if tail else ""))
