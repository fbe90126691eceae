"""`dockship exec`: run a command in a service's running container, on each of its nodes.

The command is an argv list handed to the engine's exec API: no shell
unless the user writes one (`-- sh -c '...'`). It runs on the chosen nodes
in parallel, and each node's output and exit code are kept apart, so one
failing node is seen as such (Fabric's GroupResult habit). Output is what
the container wrote: the caller escapes it before printing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dockship.config import Config
from dockship.container import current_of
from dockship.failures import reason
from dockship.fleet import NodeEngine
from dockship.selection import fleet_of, select


@dataclass(frozen=True)
class ExecResult:
    node: str
    service: str
    exit_code: int | None            # None: it could not run there (see error)
    stdout: str = ""
    stderr: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.node, "service": self.service, "exit_code": self.exit_code,
                "stdout": self.stdout, "stderr": self.stderr,
                **({"error": self.error} if self.error else {})}


def _run(engine: NodeEngine, service: str, command: tuple[str, ...]) -> ExecResult:
    found = current_of(engine.client, service)
    if found is None:
        return ExecResult(engine.name, service, None, error=f"no running container of {service}")
    api = engine.client.api
    exec_id = api.exec_create(found.id, list(command), stdout=True, stderr=True)["Id"]
    out, err = api.exec_start(exec_id, demux=True)
    code = api.exec_inspect(exec_id).get("ExitCode")
    return ExecResult(engine.name, service, code, (out or b"").decode(errors="replace"),
                      (err or b"").decode(errors="replace"))


def run(config: Config, env: str, service: str | None, node: str | None,
        command: tuple[str, ...]) -> list[ExecResult]:
    """The command's result on every chosen node, in node order; never raises for one node."""
    results: list[ExecResult] = []
    for chosen in select(config, env, service, node):
        name = chosen.service.name
        with fleet_of(config, chosen) as fleet:
            for engine, result, exc in fleet.each(lambda e: _run(e, name, command)):
                results.append(result if result is not None else
                               ExecResult(engine.name, name, None, error=reason(exc)))
    return results
