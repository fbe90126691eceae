"""Planning as pure functions of what the nodes run: plan_roll, plan_rollback, policy notes.

Plain NodeState records in, a RollPlan out; no engine, no fake node. Batch
cutting itself (make_batches, batch_sizes) is test_plan.py's.
"""

from __future__ import annotations

import pytest
from fakenode import REPO, digest, environment, fleet, plan_for, service

from dockship.config import Bake, Node
from dockship.errors import UsageError
from dockship.nodestate import NodeState, Running
from dockship.plan import StepAction, Target, plan_roll, plan_rollback, policy_notes


def state(name: str, tag: str | None, *, previous: str | None = None, zone: str | None = None,
          images: tuple[str, ...] | None = None, dig: str | None = None) -> NodeState:
    """A node running `tag` (None: nothing), deployed over `previous`."""
    running = None if tag is None else Running(
        f"{name}-c", f"hello-{name}", tag, dig or digest(tag), previous,
        digest(previous) if previous else None)
    present = images if images is not None else tuple(t for t in (tag, previous) if t)
    return NodeState(Node(name, f"ssh://root@{name}", zone), running,
                     frozenset(digest(t) for t in present))


def target(tag: str = "1.1.0") -> Target:
    return Target("hello", tag, digest(tag), REPO)


def roll(states, env=None, tag="1.1.0", **kw):
    return plan_roll(env or environment(), service(), states, target(tag), deploy_id="d1", **kw)


def layout(plan) -> list[tuple[str, list[tuple[str, str]]]]:
    return [(b.label, [(s.node.name, s.action.value) for s in b.steps]) for b in plan.batches]


# -- plan_roll -------------------------------------------------------------------------------

def test_nodes_already_on_the_target_are_unchanged_and_not_counted_for_the_canary():
    plan = roll([state("n1", "1.1.0"), state("n2", "1.0.0"), state("n3", "1.0.0")])
    assert layout(plan) == [("canary", [("n2", "deploy")]), ("batch 1", [("n3", "deploy")]),
                            ("batch 2", [("n1", "unchanged")])]
    n2 = plan.steps[0]
    assert (n2.from_tag, n2.from_digest, n2.to_tag, n2.to_digest, n2.pull) == (
        "1.0.0", digest("1.0.0"), "1.1.0", digest("1.1.0"), True)
    assert plan.target.ref == f"{REPO}@{digest('1.1.0')}"
    assert not plan.rollback


def test_a_fleet_already_on_the_target_has_no_canary_and_nothing_to_deploy():
    plan = roll([state("n1", "1.1.0"), state("n2", "1.1.0")])
    assert [(b.canary, [(s.node.name, s.action.value) for s in b.steps]) for b in plan.batches] \
        == [(False, [("n1", "unchanged"), ("n2", "unchanged")])]


def test_a_fleet_already_on_the_target_is_labelled_batch_1():
    plan = roll([state("n1", "1.1.0"), state("n2", "1.1.0")])
    assert [b.label for b in plan.batches] == ["batch 1"]


def test_unchanged_is_judged_by_digest_not_by_tag():
    # the tag 1.1.0 was pushed again: same name, new image
    plan = roll([state("n1", "1.1.0", dig="sha256:" + "e" * 64), state("n2", "1.1.0")])
    assert layout(plan) == [("canary", [("n1", "deploy")]), ("batch 1", [("n2", "unchanged")])]


def test_a_node_running_nothing_gets_the_target_from_nothing():
    plan = roll([state("n1", None), state("n2", "1.0.0")])
    first = plan.steps[0]
    assert (first.node.name, first.action, first.from_tag, first.from_digest) == (
        "n1", StepAction.DEPLOY, None, None)


def test_a_plan_is_a_value_of_the_states_alone():
    states = [state(f"node{i}", "1.0.0") for i in (1, 2, 3)]
    assert roll(states) == roll(states)      # same data, same plan
    # states read from (fake) nodes plan exactly like the same facts written by hand
    assert plan_for(fleet(3), environment(), service()).to_json()["batches"] == \
        roll(states).to_json()["batches"]


def test_zone_holds_the_other_zones_and_takes_the_canary_inside_the_zone():
    states = [state("a1", "1.0.0", zone="a"), state("b1", "1.0.0", zone="b"),
              state("a2", "1.1.0", zone="a"), state("b2", "1.0.0", zone="b")]
    plan = roll(states, zone="b")
    assert layout(plan) == [("canary", [("b1", "deploy")]), ("batch 1", [("b2", "deploy")]),
                            ("batch 2", [("a1", "held"), ("a2", "unchanged")])]


@pytest.mark.parametrize("zones, named", [("abab", "zones: a, b"),
                                          (None, "zones: none (set zone on the nodes)")])
def test_an_unknown_zone_is_a_usage_error_naming_the_zones(zones, named):
    states = [state(f"n{i}", "1.0.0", zone=zones[i] if zones else None) for i in range(4)]
    with pytest.raises(UsageError, match="zone 'c'") as caught:
        roll(states, zone="c")
    assert named in str(caught.value)
    assert caught.value.exit_code == 2


def test_canary_only_keeps_the_canary_batch_and_holds_the_rest():
    states = [state("n1", "1.0.0"), state("n2", "1.1.0"), state("n3", "1.0.0"),
              state("n4", "1.0.0")]
    plan = roll(states, env=environment(canary=1, batch=(2,)), canary_only=True)
    assert layout(plan) == [("canary", [("n1", "deploy")]),
                            ("batch 1", [("n3", "held"), ("n4", "held"), ("n2", "unchanged")])]
    assert [s.node.name for s in plan.steps if s.action is StepAction.DEPLOY] == ["n1"]


def test_canary_only_with_a_zone_keeps_one_node_of_that_zone():
    states = [state("a1", "1.0.0", zone="a"), state("b1", "1.0.0", zone="b"),
              state("b2", "1.0.0", zone="b")]
    plan = roll(states, zone="b", canary_only=True)
    assert [(s.node.name, s.action.value) for s in plan.steps] == [
        ("b1", "deploy"), ("b2", "held"), ("a1", "held")]


def test_canary_only_needs_a_canary():
    with pytest.raises(UsageError, match=r"--canary-only needs a canary.*stage\.rollout\.canary"):
        roll([state("n1", "1.0.0")], env=environment(canary=0), canary_only=True)


# -- plan_rollback ---------------------------------------------------------------------------

def rollback(states, env=None):
    return plan_rollback(env or environment(), service(), states, REPO, deploy_id="r1")


def test_rollback_sends_each_node_to_its_own_previous_tag_and_pulls_nothing():
    plan = rollback([state("n1", "1.1.0", previous="1.0.0"),
                     state("n2", "1.2.0", previous="1.1.0"),
                     state("n3", "1.1.0", previous="1.0.0")])
    assert [(s.node.name, s.from_tag, s.to_tag, s.to_digest, s.action, s.pull)
            for s in plan.steps] == [
        ("n1", "1.1.0", "1.0.0", digest("1.0.0"), StepAction.DEPLOY, False),
        ("n2", "1.2.0", "1.1.0", digest("1.1.0"), StepAction.DEPLOY, False),
        ("n3", "1.1.0", "1.0.0", digest("1.0.0"), StepAction.DEPLOY, False)]
    assert plan.rollback
    assert (plan.target.tag, plan.target.digest) == ("1.0.0", digest("1.0.0"))  # the most common
    assert not any(b.canary for b in plan.batches)
    assert [b.label for b in plan.batches] == ["batch 1", "batch 2", "batch 3"]


def test_rollback_refuses_a_node_running_nothing():
    with pytest.raises(UsageError, match="node n2 runs no container of 'hello'.*--tag"):
        rollback([state("n1", "1.1.0", previous="1.0.0"), state("n2", None)])


def test_rollback_refuses_a_node_with_no_previous_version():
    with pytest.raises(UsageError,
                       match=r"node n1 has no earlier version .*first deploy, 1\.1\.0.*--tag TAG"):
        rollback([state("n1", "1.1.0")])


def test_rollback_refuses_a_node_whose_previous_image_is_gone_and_suggests_tag():
    states = [state("n1", "1.1.0", previous="1.0.0"),
              state("n2", "1.1.0", previous="1.0.0", images=("1.1.0",))]
    with pytest.raises(UsageError) as caught:
        rollback(states)
    assert str(caught.value) == ("node n2 no longer holds the image of 1.0.0; roll it back with "
                                 "--tag 1.0.0 (that pulls it)")


def test_rollback_of_no_nodes_is_a_usage_error():
    with pytest.raises(UsageError, match="no node of environment 'stage' runs 'hello'"):
        rollback([])


# -- the policies a plan names ---------------------------------------------------------------

HEALTH = "health: GET /health answers 200 within 5s, then holds 1s"


def test_a_plain_roll_names_its_health_gate_and_auto_rollback():
    assert policy_notes(environment(), service()) == (HEALTH, "auto rollback: on")


def test_notes_name_bake_zones_overlap_and_auto_rollback_as_configured():
    env = environment(bake=Bake(seconds=60, max_error_increase=0.05), by_zone=True,
                      overlap_min_healthy=True, auto_rollback=False)
    assert policy_notes(env, service()) == (
        HEALTH,
        "canary bake: 60s against the old version (error rate +0.05 at most)",
        "zones: one after another, each verified healthy before the next",
        "overlap: after the canary, a node's window is held while the next batch goes",
        "auto rollback: off")


def test_no_bake_without_a_canary_and_no_overlap_without_a_window():
    env = environment(canary=0, bake=60, overlap_min_healthy=True)
    assert policy_notes(env, service(min_healthy=0.0)) == (
        "health: GET /health answers 200 within 5s, then holds 0s", "auto rollback: on")


def test_a_rollback_names_its_own_window_and_no_bake():
    env = environment(bake=60, overlap_min_healthy=True)
    svc = service(rollback_min_healthy=0.0)
    assert policy_notes(env, svc, rollback=True) == (
        "health: GET /health answers 200 within 5s, then holds 0s", "auto rollback: on")
    svc = service(rollback_min_healthy=2.0)
    assert policy_notes(env, svc, rollback=True)[1:] == (
        "overlap: after the canary, a node's window is held while the next batch goes",
        "auto rollback: on")


def test_plans_carry_their_notes_under_policies_in_json():
    env = environment(bake=30, by_zone=True)
    plan = roll([state("n1", "1.0.0", zone="a")], env=env)
    assert plan.notes == policy_notes(env, service())
    out = plan.to_json()
    assert out["policies"] == list(plan.notes)
    assert any(p.startswith("canary bake: 30s") for p in out["policies"])
    assert "zones: one after another, each verified healthy before the next" in out["policies"]
    back = rollback([state("n1", "1.1.0", previous="1.0.0")], env=env)
    assert back.to_json()["policies"] == list(policy_notes(env, service(), rollback=True))
    assert not any(p.startswith("canary bake") for p in back.to_json()["policies"])
