"""The roll as people watch it: a live per-node table on a terminal, plain lines elsewhere.

An observer of the roll (observer.RollObserver); events arrive from worker threads, so
all state is guarded by one lock. On a non-terminal (CI logs) every phase
change is one line, which reads well in a log and costs nothing.

Node names, tags, reasons and log lines come from servers and containers:
every one is shown through `cell` (`redact.safe` in a rich `Text`), so it is
never read as markup nor obeyed by the terminal.
"""

from __future__ import annotations

import threading
import time

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from dockship.observer import Phase
from dockship.plan import RollPlan
from dockship.redact import safe
from dockship.report import NodeResult, Result, RollReport

_STYLE = {Phase.UPDATED: "green", Phase.UNCHANGED: "dim", Phase.FAILED: "red",
          Phase.BROKEN: "bold red", Phase.ROLLED_BACK: "yellow", Phase.ROLLING_BACK: "yellow",
          Phase.PUTTING_BACK: "yellow", Phase.HEALTH: "cyan", Phase.KEPT: "yellow",
          Phase.DRAINING: "magenta", Phase.DRAINED: "magenta", Phase.READY: "cyan",
          Phase.IN_SERVICE: "green", Phase.BAKING: "cyan", Phase.HELD: "dim"}
_RESULT_STYLE = {NodeResult.UPDATED: "green", NodeResult.UNCHANGED: "dim", NodeResult.FAILED: "red",
                 NodeResult.ROLLED_BACK: "yellow", NodeResult.NOT_REACHED: "dim",
                 NodeResult.KEPT: "yellow", NodeResult.BROKEN: "bold red", NodeResult.HELD: "dim"}


def cell(value: object, style: str = "") -> Text:
    """`value` as rich shows data: escaped (`redact.safe`), never parsed as markup."""
    return Text(safe(value), style=style)


class LiveTable:
    """`console` shows the roll as it goes (stderr); `results` gets the summary at the end
    (stdout, design §2); `lines` prints a line per phase change even on a terminal (-v)."""

    def __init__(self, console: Console | None = None, *, results: Console | None = None,
                 lines: bool = False):
        self.console = console or Console(stderr=True, highlight=False)
        self.results = results or self.console
        self.lines = lines
        self._lock = threading.Lock()
        self._rows: dict[str, dict[str, object]] = {}
        self._plan: RollPlan | None = None
        self._live: Live | None = None

    # -- observer events ----------------------------------------------------------------

    def planned(self, plan: RollPlan) -> None:
        with self._lock:
            self._plan = plan
            early, self._rows = self._rows, {}   # pulls may report before the plan is shown
            for batch in plan.batches:
                for s in batch.steps:
                    row = {"zone": s.node.zone or "", "batch": batch.label,
                           "from": s.from_tag or "—", "to": s.to_tag,
                           "phase": Phase.WAITING if s.action.value == "deploy" else Phase(s.action.value),
                           "detail": "", "t0": None, "t": None}
                    seen = early.get(s.node.name)
                    if seen:
                        row.update(phase=seen["phase"], detail=seen["detail"], t0=seen["t0"])
                    self._rows[s.node.name] = row
        kind = "rollback" if plan.rollback else "roll"
        self.console.print(Text.assemble(
            (kind, "bold"), " ", cell(f"{plan.service} → {plan.target.tag} in {plan.env} "),
            cell(f"({plan.target.digest[:19]}…, deploy {plan.deploy_id})", "dim")))
        if self.console.is_terminal and not self.lines and not self.console.quiet:
            self._live = Live(self._table(), console=self.console, refresh_per_second=8,
                              transient=False)
            self._live.start()

    def node(self, name: str, phase: Phase, detail: str = "") -> None:
        with self._lock:
            row = self._rows.setdefault(name, {"zone": "", "batch": "", "from": "", "to": "",
                                               "phase": "", "detail": "", "t0": None, "t": None})
            changed = row["phase"] != phase
            if row["t0"] is None and phase not in (Phase.WAITING, Phase.UNCHANGED):
                row["t0"] = time.monotonic()
            row["phase"], row["detail"] = phase, detail
            if phase.final and row["t0"]:
                row["t"] = time.monotonic() - float(row["t0"])  # type: ignore[arg-type]
            if self._live is not None:
                self._live.update(self._table())
            elif changed and phase is not Phase.PULLING:
                self.console.print(cell(f"  {name:12} {phase:13} {detail}"))

    def note(self, text: str) -> None:
        self.console.print(Text.assemble(("!", "yellow"), " ", cell(text)))

    def finished(self, report: RollReport) -> None:
        if self._live is not None:
            self._live.update(self._table())
            self._live.stop()
            self._live = None
        self.print_report(report)

    # -- rendering ------------------------------------------------------------------------

    def _table(self) -> Table:
        table = Table(box=None, pad_edge=False, header_style="bold")
        for col in ("node", "zone", "batch", "from", "to", "phase", "time", "detail"):
            table.add_column(col, no_wrap=col != "detail", overflow="fold")
        now = time.monotonic()
        for name, r in self._rows.items():
            secs = r["t"] if r["t"] is not None else (now - float(r["t0"]) if r["t0"] else None)  # type: ignore[arg-type]
            phase = str(r["phase"])
            table.add_row(cell(name), cell(r["zone"]), cell(r["batch"]), cell(r["from"]),
                          cell(r["to"]), cell(phase, _STYLE.get(phase, "white")),
                          f"{secs:.1f}s" if secs is not None else "", cell(str(r["detail"])[:80]))
        return table

    def print_report(self, report: RollReport) -> None:
        out = self.results
        table = Table(box=None, pad_edge=False, header_style="bold")
        for col in ("node", "zone", "from", "to", "result", "time"):
            table.add_column(col, no_wrap=True)
        for n in report.nodes:
            table.add_row(cell(n.name), cell(n.zone or ""), cell(n.from_tag or "—"),
                          cell(n.to_tag or ""), cell(n.result.value, _RESULT_STYLE[n.result]),
                          f"{n.seconds:.1f}s")
        out.print(table)
        colour = {Result.SUCCEEDED: "green", Result.ROLLED_BACK: "yellow", Result.FAILED: "red"}[report.result]
        mark = "✓" if report.ok else "✗"
        out.print(Text.assemble((mark, colour), " ", cell(report.summary())))
        if report.reason:
            out.print(cell(f"  reason: {report.reason}"))
        for n in report.nodes:
            if n.logs:
                out.print(cell(f"  last log lines of {n.name}:"))
                for line in n.logs:
                    out.print(cell(f"    | {line}"))
        for n in report.nodes:
            if n.changed:     # settings drift: the keys that changed, never their values
                out.print(cell(f"  {n.name}: settings changed: {', '.join(n.changed)}"))
        for w in report.warnings:
            out.print(cell(f"  warning: {w}"))
