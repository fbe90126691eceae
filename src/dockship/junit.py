"""JUnit XML for CI servers (design §12): a deployment read as a test run.

Jenkins, GitLab and most CI servers show JUnit XML as a list of passed and
failed steps with their output, so a roll becomes one testsuite per service
with a testcase per node step and per gate (canary bake, zone check). The
document follows the schema Jenkins' junit plugin reads (tests/data holds it):
- a node that failed or was rolled back is a `<failure>` with the reason, and
  the container's last log lines as its text;
- a node that could NOT be put back is an `<error type="broken">`: exit code 4;
- a node the roll never reached, or held outside it, is `<skipped>`.
A build has no per-step record to read, so it is one testsuite with one
testcase for the build, and one for the push (skipped with --no-push).
A command that ends before any result exists is one testsuite with one
`<error>` testcase carrying the error, so CI still shows why.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from dockship.report import NodeOutcome, NodeResult, RollReport

_PASSED = {NodeResult.UPDATED, NodeResult.UNCHANGED, NodeResult.KEPT}
_SKIPPED = {NodeResult.NOT_REACHED, NodeResult.HELD}
# XML 1.0 cannot hold most control characters, even escaped: a container's log may.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def text(value: str | None) -> str:
    """Any text made storable in XML 1.0 (forbidden characters become U+FFFD)."""
    return _NOT_XML.sub("\ufffd", value or "")


def _seconds(value: float) -> str:
    return f"{max(0.0, value):.3f}"


def _case(suite: ET.Element, classname: str, name: str, seconds: float) -> ET.Element:
    return ET.SubElement(suite, "testcase", classname=text(classname), name=text(name),
                         time=_seconds(seconds))


def _mark(case: ET.Element, tag: str, kind: str, message: str | None,
          body: str = "") -> None:
    el = ET.SubElement(case, tag, type=kind, message=text(message))
    el.text = text(body or message)


def _node_case(suite: ET.Element, classname: str, node: NodeOutcome) -> None:
    step = f"{node.name}: {node.from_tag or '(none)'} -> {node.to_tag or '(none)'}"
    case = _case(suite, classname, step, node.seconds)
    logs = "\n".join(node.logs)
    body = f"{node.reason or node.result.value}\n\nlast log lines:\n{logs}" if logs else ""
    if node.result is NodeResult.BROKEN:
        _mark(case, "error", "broken", f"could not be put back: {node.reason or 'unknown'}", body)
    elif node.result in (NodeResult.FAILED, NodeResult.ROLLED_BACK):
        _mark(case, "failure", node.result.value, node.reason or node.result.value, body)
    elif node.result in _SKIPPED:
        _mark(case, "skipped", node.result.value, node.result.value.replace("_", " "))
    if node.logs and node.result in _PASSED:
        ET.SubElement(case, "system-out").text = text(logs)


def _suite(parent: ET.Element, name: str, started_at: str | None = None) -> ET.Element:
    suite = ET.SubElement(parent, "testsuite", name=text(name))
    if started_at:
        suite.set("timestamp", started_at)
    return suite


def _close(suite: ET.Element, seconds: float) -> None:
    """Counts and time of a suite, from its testcases (the schema requires them)."""
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
    suite.set("errors", str(sum(1 for c in cases if c.find("error") is not None)))
    suite.set("skipped", str(sum(1 for c in cases if c.find("skipped") is not None)))
    suite.set("time", _seconds(seconds))


def _document(root: ET.Element) -> bytes:
    for attr in ("tests", "failures", "errors"):
        root.set(attr, str(sum(int(s.get(attr, "0")) for s in root.findall("testsuite"))))
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def roll_xml(reports: Sequence[RollReport]) -> bytes:
    """A testsuite per service: a testcase per node step, then one per gate."""
    root = ET.Element("testsuites", name="dockship")
    for r in reports:
        classname = f"dockship.{r.kind}.{r.env}.{r.service}"
        suite = _suite(root, f"{r.kind} {r.service} to {r.tag} in {r.env}", r.started_at)
        props = ET.SubElement(suite, "properties")
        for key, value in (("deploy_id", r.deploy_id), ("digest", r.digest),
                           ("result", r.result.value), ("reason", r.reason or ""),
                           ("failed_node", r.failed_node or "")):
            ET.SubElement(props, "property", name=key, value=text(value))
        for node in r.nodes:
            _node_case(suite, classname, node)
        if r.bake is not None:
            case = _case(suite, classname, "gate: canary bake", float(r.bake.get("seconds", 0)))
            if not r.bake.get("passed", False):
                _mark(case, "failure", "bake", str(r.bake.get("reason", "")))
        for gate in r.gates:
            case = _case(suite, classname, f"gate: {gate.name}", gate.seconds)
            if not gate.passed:
                _mark(case, "failure", "gate", gate.reason)
        for warning in r.warnings:
            ET.SubElement(suite, "system-err").text = text(warning)
        _close(suite, r.seconds)
    root.set("time", _seconds(sum(r.seconds for r in reports)))
    return _document(root)


def build_xml(package: str, version: str | None, *, pushed: bool | None,
              seconds: float, error: str | None = None) -> bytes:
    """A build: one testcase for the build and one for the push, or the error that ended it."""
    root = ET.Element("testsuites", name="dockship")
    suite = _suite(root, f"build {package}" + (f" {version}" if version else ""))
    classname = f"dockship.build.{package}"
    build = _case(suite, classname, "build", seconds)
    if error is not None:
        _mark(build, "error", "error", error)
    else:
        push = _case(suite, classname, "push", 0.0)
        if not pushed:
            _mark(push, "skipped", "not_pushed", "not pushed (--no-push, or already built)")
    _close(suite, seconds)
    return _document(root)


def error_xml(command: str, message: str, exit_code: int) -> bytes:
    """A command that ended before any result: one errored testcase naming why."""
    root = ET.Element("testsuites", name="dockship")
    suite = _suite(root, f"dockship {command}")
    case = _case(suite, f"dockship.{command}", command, 0.0)
    _mark(case, "error", f"exit {exit_code}", message)
    _close(suite, 0.0)
    return _document(root)


def write(path: str | Path, data: bytes) -> None:
    Path(path).write_bytes(data)
