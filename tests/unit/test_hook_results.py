"""post_roll and on_failure learn how the roll ended: a real hook process dumps what it sees."""

from __future__ import annotations

import json
import os
import sys

from fakenode import FakeNode, Recorder, environment, fleet, plan_for, service

from dockship.executor import Deployment
from dockship.hooks import HookContext

DUMP = ("import json, os, sys; env = {k: v for k, v in os.environ.items() "
        "if k.startswith('DOCKSHIP_')}; "
        "env['report'] = json.load(open(env['DOCKSHIP_REPORT'])); "
        "json.dump(env, open(sys.argv[1], 'w'))")


def roll_with_hook(tmp_path, nodes: dict[str, FakeNode], hook: str, report_path=None):
    seen = tmp_path / "seen.json"
    env, svc = environment(hooks={hook: [sys.executable, "-c", DUMP, str(seen)]}), service()
    report = Deployment(plan_for(nodes, env, svc), service=svc, env=env, nodes=nodes,
                        observer=Recorder(), report_path=report_path).run()
    return report, json.loads(seen.read_text())


def test_post_roll_gets_the_result_and_a_report_file_that_is_removed_after(tmp_path):
    report, seen = roll_with_hook(tmp_path, fleet(2), "post_roll")
    assert (seen["DOCKSHIP_RESULT"], seen["DOCKSHIP_REASON"], seen["DOCKSHIP_FAILED_NODE"]) \
        == ("succeeded", "", "")
    assert seen["report"]["schema"] == 1 and seen["report"]["result"] == "succeeded"
    assert [(n["name"], n["result"]) for n in seen["report"]["nodes"]] == [
        (n.name, n.result.value) for n in report.nodes]
    assert not os.path.exists(seen["DOCKSHIP_REPORT"])


def test_on_failure_gets_the_reason_and_failed_node(tmp_path):
    report, seen = roll_with_hook(tmp_path, fleet(3, behaviour={"1.1.0": "crash"}), "on_failure")
    assert seen["DOCKSHIP_RESULT"] == "rolled_back"
    assert seen["DOCKSHIP_FAILED_NODE"] == "node1"
    assert seen["DOCKSHIP_REASON"] == report.reason and "exited" in report.reason
    assert seen["report"]["failed_node"] == "node1"


def test_a_broken_node_shows_as_failed_with_the_report_saying_broken(tmp_path):
    nodes = fleet(3)
    nodes["node2"].lose_engine("start")
    _, seen = roll_with_hook(tmp_path, nodes, "on_failure")
    assert seen["DOCKSHIP_RESULT"] == "failed"
    assert [n["result"] for n in seen["report"]["nodes"]][1] == "broken"


def test_with_report_the_hook_reads_that_file_and_it_stays(tmp_path):
    path = tmp_path / "report.json"
    _, seen = roll_with_hook(tmp_path, fleet(1), "post_roll", report_path=str(path))
    assert seen["DOCKSHIP_REPORT"] == str(path)
    assert json.loads(path.read_text())["deploy_id"] == "d1"


def test_a_reason_keeps_any_text_but_nul():
    ctx = HookContext("stage", "hello", "d1", result="failed",
                      reason="a\0b $(rm -rf /) `x` 'q' \"d\"\nline2", failed_node="n1")
    assert ctx.variables()["DOCKSHIP_REASON"] == "ab $(rm -rf /) `x` 'q' \"d\"\nline2"


def test_pre_roll_gets_no_result_variables():
    assert "DOCKSHIP_RESULT" not in HookContext("stage", "hello", "d1").variables()


def test_an_unwritable_report_path_still_gives_the_hook_a_report(tmp_path):
    _, seen = roll_with_hook(tmp_path, fleet(1), "post_roll",
                             report_path=str(tmp_path / "gone" / "r.json"))
    assert seen["report"]["result"] == "succeeded"
    assert seen["DOCKSHIP_REPORT"] != str(tmp_path / "gone" / "r.json")
