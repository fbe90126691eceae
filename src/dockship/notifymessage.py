"""The words of a notification: a subject a person can scan in an inbox, a body that says what
rolled where.

Pure text from a `RollReport`, so that it is tested without a mail server;
`notify` sends it. Everything from a report that a server wrote (reasons,
container logs) is escaped and scrubbed of known secrets here, once, because
a mail client renders what a terminal would have escaped.
"""

from __future__ import annotations

from dockship.redact import safe
from dockship.report import NodeOutcome, Result, RollReport

SUBJECT_REASON = 80          # characters of the reason in a subject; the body has it whole
_RESULT_WORDS = {Result.SUCCEEDED: "succeeded", Result.ROLLED_BACK: "rolled back",
                 Result.FAILED: "FAILED"}


def _from_tags(report: RollReport) -> str:
    """The tag (or tags) the nodes ran before, `-` for none."""
    tags = sorted({n.from_tag for n in report.nodes if n.from_tag and n.from_tag != report.tag})
    return "/".join(tags) or "-"


def _short(text: str, limit: int) -> str:
    line = text.splitlines()[0] if text.strip() else text
    return line if len(line) <= limit else line[:limit - 1] + "…"


def subject(report: RollReport) -> str:
    """`[dockship] stage: hello 1.3.0 → 1.4.0 rolled back (node2: health check failed)`."""
    what = "rollback of " if report.kind == "rollback" else ""
    head = (f"[dockship] {report.env}: {what}{report.service} {_from_tags(report)} → {report.tag} "
            f"{_RESULT_WORDS[report.result]}")
    if report.result is not Result.SUCCEEDED and (report.reason or report.failed_node):
        why = report.reason or "no reason recorded"
        if report.failed_node and not why.startswith(f"{report.failed_node}:"):
            why = f"{report.failed_node}: {why}"
        head += f" ({_short(why, SUBJECT_REASON)})"
    return safe(head)


def _node_line(n: NodeOutcome) -> str:
    line = f"  {n.name:<16} {n.from_tag or '-'} → {n.to_tag or '-'}  {n.result.value}"
    if n.zone:
        line += f"  (zone {n.zone})"
    if n.reason:
        line += f": {n.reason}"
    return line


def body(report: RollReport) -> str:
    """What rolled where, from which tag to which, per node; the result, the reason, and the
    failed node's last log lines."""
    lines = [report.summary(), "",
             f"environment: {report.env}", f"service:     {report.service}",
             f"kind:        {report.kind}", f"from:        {_from_tags(report)}",
             f"to:          {report.tag} ({report.digest})",
             f"result:      {report.result.value}", f"deploy id:   {report.deploy_id}",
             f"started:     {report.started_at}"]
    if report.reason:
        lines.append(f"reason:      {report.reason}")
    if report.failed_node:
        lines.append(f"failed node: {report.failed_node}")
    if report.broken:
        lines.append(f"NOT PUT BACK (needs a person): {', '.join(report.broken)}")
    lines += ["", "nodes:", *(_node_line(n) for n in report.nodes)]
    failed = next((n for n in report.nodes if n.name == report.failed_node), None)
    if failed is not None and failed.logs:
        lines += ["", f"last log lines of {failed.name}:", *(f"  | {x}" for x in failed.logs)]
    if report.warnings:
        lines += ["", "warnings:", *(f"  {w}" for w in report.warnings)]
    return "\n".join(safe(x) for x in lines) + "\n"
