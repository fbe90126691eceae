"""JUnit XML for CI servers, checked against the schema Jenkins' junit plugin reads.

The reports come from real walks of the roll's state machine on in-memory
nodes (fakenode), so every kind of ending is the one a roll really produces.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import xmlschema
from fakenode import environment, fleet
from test_executor import bake_roll, run

from dockship import junit
from dockship.report import NodeOutcome, NodeResult, Result, RollReport

SCHEMA = xmlschema.XMLSchema(Path(__file__).parent.parent / "data" / "junit-10.xsd")


def valid(data: bytes) -> ET.Element:
    SCHEMA.validate(data.decode())
    return ET.fromstring(data)


def cases(root: ET.Element) -> dict[str, ET.Element]:
    return {c.get("name"): c for c in root.iter("testcase")}


def test_a_successful_roll_is_a_suite_of_passed_node_steps():
    report = run(fleet(3))
    root = valid(junit.roll_xml([report]))
    [suite] = root.findall("testsuite")
    assert suite.get("name") == "roll hello to 1.1.0 in stage"
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "0", "0")
    assert set(cases(root)) == {f"node{i}: 1.0.0 -> 1.1.0" for i in (1, 2, 3)}
    assert not [c for c in root.iter("testcase") if len(c)]


def test_a_rolled_back_roll_fails_the_node_with_its_reason_and_last_log_lines():
    report = run(fleet(3, behaviour={"1.1.0": "crash"}))
    assert report.result is Result.ROLLED_BACK
    root = valid(junit.roll_xml([report]))
    failure = cases(root)["node1: 1.0.0 -> 1.1.0"].find("failure")
    assert failure is not None and failure.get("message") == report.nodes[0].reason
    assert report.nodes[0].logs and report.nodes[0].logs[-1] in failure.text
    for name in ("node2", "node3"):
        assert cases(root)[f"{name}: 1.0.0 -> 1.1.0"].find("skipped") is not None
    assert root.find("testsuite").get("skipped") == "2"


def test_a_node_left_broken_is_an_error_of_type_broken():
    nodes = fleet(3)
    nodes["node2"].lose_engine("start")
    report = run(nodes)
    assert report.broken == ("node2",)
    root = valid(junit.roll_xml([report]))
    error = cases(root)["node2: 1.0.0 -> 1.1.0"].find("error")
    assert error is not None and error.get("type") == "broken"
    assert "could not be put back" in error.get("message")
    assert root.get("errors") == "1"


def test_a_failed_bake_is_a_failed_gate_of_its_own():
    report = bake_roll(fleet(3), lambda: (False, "canary error rate 20% vs baseline 0%"))
    root = valid(junit.roll_xml([report]))
    gate = cases(root)["gate: canary bake"].find("failure")
    assert gate is not None and "20%" in gate.get("message")


def test_a_zone_check_is_a_gate_and_its_failure_names_the_zone():
    nodes = fleet(3, zones="aab")
    for name in ("node1", "node2"):
        nodes[name].behaviour["1.1.0"] = "sickens"
    report = run(nodes, environment(by_zone=True, canary=0))
    root = valid(junit.roll_xml([report]))
    failure = cases(root)["gate: zone check a"].find("failure")
    assert failure is not None and "when zone a was verified" in failure.get("message")


def test_several_services_are_several_suites_and_hostile_text_stays_valid_xml():
    node = NodeOutcome("n1", None, "1.0", "1.1", NodeResult.FAILED, 1.5,
                       reason="<b>\x00\x1b[31m & ]]>", logs=("\x07bell", "ünïcode <tag>"))
    bad = RollReport("roll", "prod", "api", "1.1", "sha256:x", Result.ROLLED_BACK, "d2",
                     (node,), "2026-01-01T00:00:00Z", 2.0, reason="n1: <b>", failed_node="n1")
    root = valid(junit.roll_xml([run(fleet(1)), bad]))
    assert [s.get("name") for s in root.findall("testsuite")] == [
        "roll hello to 1.1.0 in stage", "roll api to 1.1 in prod"]
    failure = cases(root)["n1: 1.0 -> 1.1"].find("failure")
    assert "ünïcode <tag>" in failure.text and "\x00" not in failure.get("message")


@pytest.mark.parametrize("pushed", [True, False])
def test_a_build_is_one_suite_with_a_build_and_a_push_step(pushed):
    root = valid(junit.build_xml("hello-svc", "1.2.0", pushed=pushed, seconds=12.3456))
    push = cases(root)["push"]
    assert (push.find("skipped") is not None) is not pushed
    assert root.find("testsuite").get("time") == "12.346"


def test_an_error_before_any_result_is_one_errored_testcase():
    root = valid(junit.error_xml("roll", "locked by ci-job-7", 3))
    error = root.find("testsuite/testcase/error")
    assert error.get("message") == "locked by ci-job-7" and error.get("type") == "exit 3"


def test_the_schema_check_would_catch_a_suite_without_counts():
    with pytest.raises(xmlschema.XMLSchemaValidationError):
        SCHEMA.validate("<testsuites><testsuite name='x'/></testsuites>")
