"""GitHub Actions (design §12): the step summary, `::error` annotations and step outputs.

Only under `GITHUB_ACTIONS=true`. The summary is Markdown appended to
`$GITHUB_STEP_SUMMARY`; annotations are workflow commands on stdout (stderr
under --json), one per failed or broken node; `tag`, `digest` and `result` (and `failed_node`,
`broken`) are appended to `$GITHUB_OUTPUT`, a multi-line value in the
heredoc-delimiter form. With several services, `tag` and `digest` are one
value when all services share it, else one `service=value` line each.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Mapping, Sequence
from typing import TextIO

from dockship.report import NodeResult, RollReport, overall

# Annotated: where the roll failed, and what it could not put back (a node rolled back
# because another failed is in the summary, not an error of its own).
_FAILED = {NodeResult.FAILED, NodeResult.BROKEN}


def active(environ: Mapping[str, str] | None = None) -> bool:
    return (os.environ if environ is None else environ).get("GITHUB_ACTIONS") == "true"


def escape_data(value: str) -> str:
    """A workflow command's message: %, CR and LF escaped, as the runner decodes them."""
    return value.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(value: str) -> str:
    """A workflow command's property value: as a message, plus ':' and ','."""
    return escape_data(value).replace(":", "%3A").replace(",", "%2C")


def annotation(title: str, message: str) -> str:
    return f"::error title={escape_property(title)}::{escape_data(message)}"


def annotations(reports: Sequence[RollReport]) -> list[str]:
    out = []
    for r in reports:
        for n in r.nodes:
            if n.result in _FAILED:
                what = "broken: could not be put back" if n.result is NodeResult.BROKEN \
                    else "failed, put back"
                lines = [f"{r.kind} of {r.service} {n.from_tag or '(none)'} -> "
                         f"{n.to_tag or '(none)'} on {n.name}: {what}"]
                if n.reason:
                    lines.append(n.reason)
                lines += list(n.logs[-10:])
                out.append(annotation(f"{r.service} on {n.name} in {r.env}: {n.result.value}",
                                      "\n".join(lines)))
        if r.result.value != "succeeded" and not any(n.result in _FAILED for n in r.nodes):
            out.append(annotation(f"{r.service} in {r.env}: {r.result.value}",
                                  r.reason or r.result.value))
    return out


def _cell(value: object) -> str:
    """A Markdown table cell: one line, pipes escaped."""
    return " ".join(str(value).split()).replace("|", "\\|") or " "


def summary(reports: Sequence[RollReport]) -> str:
    """What rolled where, from which tag to which, the result and the reason."""
    parts = []
    for r in reports:
        parts.append(f"### {_cell(r.kind)} of `{_cell(r.service)}` to `{_cell(r.tag)}` in "
                     f"`{_cell(r.env)}`: **{r.result.value}**\n")
        if r.reason:
            parts.append(f"Reason: {_cell(r.reason)}\n")
        if r.broken:
            parts.append(f"**Broken (could not be put back): {_cell(', '.join(r.broken))}**\n")
        parts.append("| node | zone | from | to | result | seconds | reason |\n"
                     "|---|---|---|---|---|---|---|")
        for n in r.nodes:
            parts.append("| " + " | ".join(_cell(v) for v in (
                n.name, n.zone or "", n.from_tag or "—", n.to_tag or "—", n.result.value,
                f"{n.seconds:.1f}", n.reason or "")) + " |")
        parts.append(f"\nDigest `{_cell(r.digest)}`, deploy `{_cell(r.deploy_id)}`.\n")
    return "\n".join(parts) + "\n"


def output_lines(values: Mapping[str, str]) -> str:
    """`name=value` lines for $GITHUB_OUTPUT; a multi-line value in the heredoc form."""
    out = []
    for name, value in values.items():
        if "\n" in value or "\r" in value:
            delimiter = f"ghadelimiter_{secrets.token_hex(8)}"
            out.append(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
        else:
            out.append(f"{name}={value}\n")
    return "".join(out)


def _joined(reports: Sequence[RollReport], attr: str) -> str:
    values = {r.service: getattr(r, attr) for r in reports}
    if len(set(values.values())) <= 1:
        return next(iter(values.values()), "")
    return "\n".join(f"{s}={v}" for s, v in values.items())


def roll_outputs(reports: Sequence[RollReport]) -> dict[str, str]:
    return {"tag": _joined(reports, "tag"), "digest": _joined(reports, "digest"),
            "result": overall(reports).value,
            "failed_node": ",".join(r.failed_node for r in reports if r.failed_node),
            "broken": ",".join(b for r in reports for b in r.broken)}


def _append(environ: Mapping[str, str], key: str, text: str) -> None:
    path = environ.get(key)
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)


def publish_roll(reports: Sequence[RollReport], *, environ: Mapping[str, str] | None = None,
                 stream: TextIO | None = None) -> None:
    """Write all three for a roll or rollback, if running under GitHub Actions."""
    environ = os.environ if environ is None else environ
    if not active(environ):
        return
    stream = stream or sys.stdout
    for line in annotations(reports):
        stream.write(line + "\n")
    stream.flush()
    _append(environ, "GITHUB_STEP_SUMMARY", summary(reports))
    _append(environ, "GITHUB_OUTPUT", output_lines(roll_outputs(reports)))


def publish_build(values: Mapping[str, str], headline: str, *,
                  environ: Mapping[str, str] | None = None, stream: TextIO | None = None,
                  error: str | None = None) -> None:
    """A build's `tag`, `digest`, `result` outputs, its summary line and, failed, its error."""
    environ = os.environ if environ is None else environ
    if not active(environ):
        return
    if error is not None:
        (stream or sys.stdout).write(annotation("dockship build failed", error) + "\n")
    _append(environ, "GITHUB_STEP_SUMMARY", f"### {_cell(headline)}\n\n")
    _append(environ, "GITHUB_OUTPUT", output_lines(values))


def publish_error(command: str, message: str, exit_code: int, *,
                  environ: Mapping[str, str] | None = None,
                  stream: TextIO | None = None) -> None:
    """A command that ended before any result: an annotation, a summary line, result=error."""
    environ = os.environ if environ is None else environ
    if not active(environ):
        return
    (stream or sys.stdout).write(annotation(f"dockship {command} failed (exit {exit_code})",
                                            message) + "\n")
    _append(environ, "GITHUB_STEP_SUMMARY",
            f"### dockship {_cell(command)} failed (exit {exit_code})\n\n{_cell(message)}\n\n")
    _append(environ, "GITHUB_OUTPUT", output_lines({"result": "error"}))
