"""Settings drift in the plan and the roll: a node on the target digest with other settings is
rolled, and the plan, report and JSON name the keys, never the values (design §11)."""

from __future__ import annotations

import dataclasses
import json

from fakenode import Recorder, environment, fleet, plan_for, service

from dockship.config import Publish
from dockship.executor import Deployment
from dockship.halt import Halt
from dockship.plan import StepAction
from dockship.report import NodeResult, Result
from dockship.runtime import Runtime

SECRET = "s3cret-database-password"


def _rt(level="info", secret=SECRET) -> Runtime:
    return Runtime({"LOG_LEVEL": level}, {"DATABASE_URL": secret}, ("hello-svc",), 8000, Publish())


def _roll(nodes, runtime, tag="1.0.0"):
    env, svc = environment(), service()
    plan = plan_for(nodes, env, svc, tag, settings=runtime)
    dep = Deployment(plan, service=svc, env=env, nodes=nodes, observer=Recorder(), halt=Halt(),
                     runtime=runtime)
    return plan, dep.run()


def test_a_roll_records_settings_and_a_second_roll_with_the_same_ones_changes_nothing():
    nodes = fleet(2, running=None)
    _, report = _roll(nodes, _rt())
    assert report.result is Result.SUCCEEDED
    assert all(n.boxes[list(n.boxes)[-1]].environment["DATABASE_URL"] == SECRET
               for n in nodes.values())
    plan, report = _roll(nodes, _rt())
    assert [s.action for s in plan.steps] == [StepAction.UNCHANGED] * 2
    assert {n.result for n in report.nodes} == {NodeResult.UNCHANGED}


def test_a_changed_env_value_redeploys_the_same_digest_naming_the_key():
    nodes = fleet(3, running=None)
    _roll(nodes, _rt())
    plan, report = _roll(nodes, _rt(level="debug"))
    assert [(s.action, s.why, s.changed) for s in plan.steps] == \
        [(StepAction.DEPLOY, "settings", ("env.LOG_LEVEL",))] * 3
    assert report.result is Result.SUCCEEDED
    assert [(n.result, n.changed) for n in report.nodes] == \
        [(NodeResult.UPDATED, ("env.LOG_LEVEL",))] * 3
    for node in nodes.values():
        assert node.serving == "1.0.0"
        assert [b.environment.get("LOG_LEVEL") for b in node.boxes.values()
                if b.state == "running"] == ["debug"]


def test_a_changed_secret_is_named_and_its_value_is_nowhere_in_plan_report_or_labels():
    nodes = fleet(2, running=None)
    _roll(nodes, _rt())
    new_secret = "an0ther-secret-value"
    plan, report = _roll(nodes, _rt(secret=new_secret))
    assert {s.changed for s in plan.steps} == {("secret.DATABASE_URL",)}
    shown = json.dumps(plan.to_json()) + json.dumps(report.to_json()) + repr(plan) + repr(report)
    shown += "".join(b.settings or "" for n in nodes.values() for b in n.boxes.values())
    assert SECRET not in shown and new_secret not in shown
    assert plan.to_json()["batches"][0]["nodes"][0]["changed"] == ["secret.DATABASE_URL"]
    assert report.to_json()["nodes"][0]["changed"] == ["secret.DATABASE_URL"]


def test_a_container_without_a_settings_label_counts_as_drifted():
    nodes = fleet(2, running="1.0.0")      # started by an older dockship: no label
    plan = plan_for(nodes, environment(), service(), "1.0.0", settings=_rt())
    assert [(s.action, s.changed) for s in plan.steps] == [(StepAction.DEPLOY, ("settings",))] * 2


def test_without_settings_planning_compares_digests_only():
    nodes = fleet(2, running="1.0.0")
    plan = plan_for(nodes, environment(), service(), "1.0.0")
    assert [s.action for s in plan.steps] == [StepAction.UNCHANGED] * 2


def test_a_new_version_also_names_settings_that_changed():
    nodes = fleet(1, running=None)
    _roll(nodes, _rt())
    plan = plan_for(nodes, environment(), service(), "1.1.0", settings=_rt(level="warn"))
    step = plan.steps[0]
    assert (step.why, step.changed) == ("version", ("env.LOG_LEVEL",))
    assert plan.to_json()["batches"][0]["nodes"][0]["why"] == "version"


def test_zone_and_canary_rules_hold_drifted_nodes_like_any_change():
    nodes = fleet(3, running=None, zones="aab")
    _roll(nodes, _rt())
    plan = plan_for(nodes, environment(), service(), "1.0.0", settings=_rt(level="x"), zone="b")
    assert {s.node.name: s.action for s in plan.steps} == {
        "node1": StepAction.HELD, "node2": StepAction.HELD, "node3": StepAction.DEPLOY}


def test_a_report_with_changed_keys_reads_back_from_history_json():
    from dockship.report import NodeOutcome
    out = NodeOutcome("n1", None, "1.0.0", "1.0.0", NodeResult.UPDATED, 1.0,
                      changed=("env.A", "port"))
    assert NodeOutcome.from_json(out.to_json()) == out
    assert "changed" not in dataclasses.replace(out, changed=()).to_json()
