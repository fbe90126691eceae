"""The roll's state machine on in-memory nodes: every way a roll can fail, and what it leaves.

The invariant behind every test (design §2): a failure never leaves a node
without a running container of some version unless the report says BROKEN
and names it, and never loses the previous container.
"""

from __future__ import annotations

import pytest
from fakenode import (FakeBalancer, FakeNode, Recorder, environment, fleet, plan_for,
                      service)

from dockship.bake import BakeVerdict, Figures
from dockship.halt import Halt
from dockship.report import NodeResult, Result
from dockship.executor import Deployment


def run(nodes: dict[str, FakeNode], env=None, svc=None, *, tag="1.1.0", halt=None,
        recorder=None, balancer=None, policies=None, **plan_kw):
    env = env or environment()
    svc = svc or service()
    plan = plan_for(nodes, env, svc, tag, **plan_kw)
    recorder = recorder or Recorder()
    dep = Deployment(plan, service=svc, env=env, nodes=nodes, observer=recorder,
                     halt=halt or Halt(), balancer=balancer, policies=policies)
    report = dep.run()
    assert recorder.report is report
    return report


def results(report) -> dict[str, NodeResult]:
    return {n.name: n.result for n in report.nodes}


def assert_no_node_lost_its_service(nodes, report) -> None:
    broken = set(report.broken)
    for node in nodes.values():
        if node.name not in broken:
            assert node.serving is not None, f"{node.name} serves nothing and is not reported"


def test_a_healthy_release_updates_every_node_and_keeps_the_old_containers():
    nodes = fleet(3)
    report = run(nodes)
    assert report.result is Result.SUCCEEDED
    assert results(report) == {f"node{i}": NodeResult.UPDATED for i in (1, 2, 3)}
    for node in nodes.values():
        assert node.serving == "1.1.0"
        assert [b.state for b in node.boxes.values()] == ["exited", "running"]


@pytest.mark.parametrize("how", ["crash", "503", "slow"])
def test_a_sick_canary_is_put_back_and_nothing_else_is_touched(how):
    nodes = fleet(3, behaviour={"1.1.0": how})
    report = run(nodes)
    assert report.result is Result.ROLLED_BACK
    assert results(report) == {"node1": NodeResult.FAILED, "node2": NodeResult.NOT_REACHED,
                               "node3": NodeResult.NOT_REACHED}
    assert report.failed_node == "node1"
    canary = report.nodes[0]
    assert canary.logs == ("1.1.0: last words",)
    assert {n.serving for n in nodes.values()} == {"1.0.0"}
    for name in ("node2", "node3"):   # prepared ahead, never started, then removed
        assert ("start", "1.1.0") not in nodes[name].log
        assert [b.state for b in nodes[name].boxes.values()] == ["running", "removed"]


def test_a_later_batch_failing_puts_the_updated_nodes_back_in_reverse_order():
    nodes = fleet(3)
    nodes["node3"].behaviour["1.1.0"] = "503"
    report = run(nodes)
    assert report.result is Result.ROLLED_BACK
    assert results(report) == {"node1": NodeResult.ROLLED_BACK, "node2": NodeResult.ROLLED_BACK,
                               "node3": NodeResult.FAILED}
    assert {n.serving for n in nodes.values()} == {"1.0.0"}
    assert "503" in report.reason and report.failed_node == "node3"


def test_without_auto_rollback_the_updated_nodes_stay_and_the_roll_failed():
    nodes = fleet(3)
    nodes["node2"].behaviour["1.1.0"] = "crash"
    report = run(nodes, environment(auto_rollback=False))
    assert report.result is Result.FAILED
    assert results(report) == {"node1": NodeResult.UPDATED, "node2": NodeResult.FAILED,
                               "node3": NodeResult.NOT_REACHED}
    assert nodes["node1"].serving == "1.1.0" and nodes["node2"].serving == "1.0.0"
    assert any("left on the new version: node1" in w for w in report.warnings)


def test_a_previous_container_that_will_not_start_again_is_broken_and_named():
    nodes = fleet(2, behaviour={"1.1.0": "crash"})
    nodes["node1"].fail("start", when=lambda node, args: node.boxes[args[0]].tag == "1.0.0")
    report = run(nodes)
    assert report.result is Result.FAILED
    assert report.broken == ("node1",)
    assert "previous container could not be started" in report.nodes[0].reason
    assert nodes["node2"].serving == "1.0.0"


def test_an_engine_lost_mid_swap_is_broken_and_the_others_go_back():
    nodes = fleet(3)
    nodes["node2"].lose_engine("start")
    report = run(nodes)
    assert results(report) == {"node1": NodeResult.ROLLED_BACK, "node2": NodeResult.BROKEN,
                               "node3": NodeResult.NOT_REACHED}
    assert "unreachable" in report.nodes[1].reason
    assert report.result is Result.FAILED
    assert nodes["node1"].serving == "1.0.0" and nodes["node3"].serving == "1.0.0"


def test_a_refusing_pre_node_hook_changes_nothing_on_that_node():
    nodes = fleet(2)
    report = run(nodes, environment(hooks={"pre_node": ["false"]}))
    assert results(report) == {"node1": NodeResult.FAILED, "node2": NodeResult.NOT_REACHED}
    assert "nothing changed on this node" in report.nodes[0].reason
    assert ("stop", "1.0.0") not in nodes["node1"].log
    assert report.result is Result.ROLLED_BACK


def test_a_refusing_post_node_hook_puts_the_node_back():
    nodes = fleet(2)
    report = run(nodes, environment(hooks={"post_node": ["false"]}))
    assert results(report)["node1"] is NodeResult.FAILED
    assert nodes["node1"].serving == "1.0.0"


def test_a_balancer_that_will_not_drain_leaves_the_node_untouched_and_in_traffic():
    nodes = fleet(2)
    lb = FakeBalancer(refuse_drain={"node1"})
    report = run(nodes, balancer=lb)
    assert results(report)["node1"] is NodeResult.FAILED
    assert ("stop", "1.0.0") not in nodes["node1"].log
    assert lb.log == [("drain", "node1"), ("ready", "node1")] and not lb.out


def test_a_balancer_that_will_not_take_the_node_back_puts_the_old_version_back():
    nodes = fleet(2)
    lb = FakeBalancer(refuse_ready={"node1"})
    report = run(nodes, balancer=lb)
    assert results(report)["node1"] is NodeResult.FAILED
    assert nodes["node1"].serving == "1.0.0"
    assert any("stays DOWN" in w for w in report.warnings)


def test_a_balancer_that_fails_its_check_fails_the_roll_before_anything_is_touched():
    nodes = fleet(2)
    report = run(nodes, balancer=FakeBalancer(refuse_check=True))
    assert report.result is Result.FAILED and "nothing was changed" in report.reason
    assert all("start" not in n.verbs() for n in nodes.values())


def test_a_lost_lock_stops_the_roll_and_puts_back_the_node_in_flight():
    nodes = fleet(3, behaviour={})
    halt = Halt()
    recorder = Recorder()
    recorder.when("node2", "health", lambda: halt.trip("the deploy lock was lost on node1"))
    report = run(nodes, halt=halt, recorder=recorder)
    assert report.result is Result.ROLLED_BACK
    assert "the deploy lock was lost" in report.reason
    assert results(report) == {"node1": NodeResult.ROLLED_BACK, "node2": NodeResult.FAILED,
                               "node3": NodeResult.NOT_REACHED}
    assert {n.serving for n in nodes.values()} == {"1.0.0"}


PHASES = ["pulling", "stopping", "starting", "health", "updated"]


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("node", ["node1", "node2"])
def test_a_signal_in_any_phase_leaves_every_node_serving_its_previous_version(node, phase):
    nodes = fleet(3)
    for n in nodes.values():
        n.images.discard("x")   # every node pulls, so "pulling" happens on each
    halt = Halt()
    recorder = Recorder()
    recorder.when(node, phase, lambda: halt.trip("interrupted by SIGINT"))
    report = run(nodes, halt=halt, recorder=recorder)
    assert report.result is Result.ROLLED_BACK, report
    assert "interrupted by SIGINT" in report.reason
    assert {n.serving for n in nodes.values()} == {"1.0.0"}
    assert_no_node_lost_its_service(nodes, report)
    assert not report.warnings, report.warnings   # every unused container removed, once


def bake_roll(nodes, verdict, *, halt=None, seconds: float = 1):
    """A roll whose canary bake measures nothing and returns `verdict()` (called mid-bake)."""
    from dockship.policies import CanaryBake

    env, svc = environment(bake=seconds), service()
    plan = plan_for(nodes, env, svc)
    halt = halt or Halt()
    recorder = Recorder()
    figures = Figures(100, 20, 5.0, 9.0)

    def measure(canary, baseline, settings, cancel=None, **http):
        passed, reason = verdict()
        return BakeVerdict(passed, reason, figures, figures, 1.0)

    bake = CanaryBake(env.rollout.bake, plan, nodes, port=8000, check=svc.health,
                      cancel=halt, observer=recorder, measure=measure)
    return Deployment(plan, service=svc, env=env, nodes=nodes, observer=recorder, halt=halt,
                      policies=[bake]).run()


def test_a_failed_bake_puts_the_canary_back():
    nodes = fleet(3)
    report = bake_roll(nodes, lambda: (False, "canary error rate 20% vs baseline 0%"))
    assert report.result is Result.ROLLED_BACK and "canary bake failed" in report.reason
    assert results(report)["node1"] is NodeResult.ROLLED_BACK
    assert report.bake is not None and report.bake["passed"] is False
    assert {n.serving for n in nodes.values()} == {"1.0.0"}


def test_a_zone_that_sickens_stops_the_roll_before_the_next_zone():
    nodes = fleet(3, zones="aab")
    for name in ("node1", "node2"):
        nodes[name].behaviour["1.1.0"] = "sickens"
    report = run(nodes, environment(by_zone=True, canary=0))
    assert report.result is Result.ROLLED_BACK
    assert "when zone a was verified" in report.reason
    assert results(report)["node3"] is NodeResult.NOT_REACHED
    assert {n.serving for n in nodes.values()} == {"1.0.0"}


def test_a_window_failing_in_the_background_puts_that_node_back_first():
    nodes = fleet(3)
    nodes["node2"].behaviour["1.1.0"] = "sickens"
    report = run(nodes, environment(overlap_min_healthy=True))
    assert report.result is Result.ROLLED_BACK
    assert results(report)["node2"] is NodeResult.FAILED
    assert "did not stay healthy" in report.nodes[1].reason
    assert {n.serving for n in nodes.values()} == {"1.0.0"}


def test_a_node_that_cannot_be_put_back_after_a_later_failure_is_broken():
    nodes = fleet(3)
    nodes["node3"].behaviour["1.1.0"] = "crash"
    nodes["node1"].behaviour["1.0.0"] = "crash"    # the old version no longer comes up
    report = run(nodes)
    assert report.broken == ("node1",)
    assert report.result is Result.FAILED
    assert nodes["node1"].serving == "1.1.0"        # the new version beats nothing at all
    assert nodes["node2"].serving == "1.0.0"


def test_a_node_without_a_previous_version_is_kept_on_the_new_one():
    nodes = fleet(2)
    nodes["node1"] = FakeNode("node1", running=None)
    nodes["node2"].behaviour["1.1.0"] = "crash"
    report = run(nodes)
    assert results(report) == {"node1": NodeResult.KEPT, "node2": NodeResult.FAILED}
    assert report.result is Result.FAILED
    assert nodes["node1"].serving == "1.1.0"


def test_nodes_already_on_the_target_are_left_alone():
    nodes = fleet(2)
    nodes["node2"] = FakeNode("node2", running="1.1.0")
    report = run(nodes)
    assert results(report) == {"node1": NodeResult.UPDATED, "node2": NodeResult.UNCHANGED}
    assert "create" not in nodes["node2"].verbs()


def test_a_lease_taken_over_mid_roll_is_noticed_by_the_keeper_and_stops_the_roll():
    from fakelock import stores

    from dockship.lock import DeployLock, LeaseKeeper

    nodes = fleet(3)
    lock_stores = stores(*nodes)
    lock = DeployLock(lock_stores, env="stage", service="hello", tag="1.1.0", deploy_id="d1",
                      ttl=60).acquire()
    halt = Halt()
    keeper = LeaseKeeper(lock, on_lost=halt.trip)

    def taken_over() -> None:
        lock_stores[0].box = None      # another deployment removed our lock on node1...
        keeper.renew_once()            # ...and the keeper's next round finds it gone

    recorder = Recorder()
    recorder.when("node2", "health", taken_over)
    report = run(nodes, halt=halt, recorder=recorder)
    assert keeper.lost and "lost on node1" in keeper.lost
    assert report.result is Result.ROLLED_BACK and "lost on node1" in report.reason
    assert results(report)["node3"] is NodeResult.NOT_REACHED
    assert {n.serving for n in nodes.values()} == {"1.0.0"}


@pytest.mark.parametrize("phase", ["rolling back", "putting back"])
def test_a_second_signal_while_putting_nodes_back_does_not_stop_the_putting_back(phase):
    nodes = fleet(3)
    nodes["node3" if phase == "rolling back" else "node1"].behaviour["1.1.0"] = "crash"
    halt = Halt()
    recorder = Recorder()
    recorder.when("node1", phase, lambda: halt.trip("interrupted by SIGTERM"))
    report = run(nodes, halt=halt, recorder=recorder)
    assert report.result is Result.ROLLED_BACK
    assert {n.serving for n in nodes.values()} == {"1.0.0"}
    assert_no_node_lost_its_service(nodes, report)


@pytest.mark.parametrize("phase", ["draining", "drained", "ready", "in service"])
def test_a_signal_around_the_balancer_leaves_every_node_in_traffic_on_its_old_version(phase):
    nodes = fleet(2)
    halt = Halt()
    recorder = Recorder()
    recorder.when("node1", phase, lambda: halt.trip("interrupted by SIGINT"))
    lb = FakeBalancer()
    report = run(nodes, halt=halt, recorder=recorder, balancer=lb)
    assert report.result is Result.ROLLED_BACK, report
    assert {n.serving for n in nodes.values()} == {"1.0.0"}
    assert not lb.out, f"left out of the balancer: {lb.out}"


def test_a_signal_during_the_bake_puts_the_canary_back():
    nodes = fleet(3)
    halt = Halt()

    def interrupted():
        halt.trip("interrupted by SIGINT")   # arrives while the bake runs
        return False, "interrupted"

    report = bake_roll(nodes, interrupted, halt=halt, seconds=5)
    assert report.result is Result.ROLLED_BACK
    assert {n.serving for n in nodes.values()} == {"1.0.0"}


def test_a_halt_before_anything_started_changes_nothing():
    nodes = fleet(2)
    halt = Halt()
    halt.trip("interrupted by SIGTERM")
    report = run(nodes, halt=halt)
    assert report.result is Result.FAILED and "nothing was changed" in report.reason
    assert all("create" not in n.verbs() for n in nodes.values())


def test_nodes_prepared_for_a_roll_that_never_ran_are_cleaned_up():
    # The deploy lock was taken on node1 (prepared at once), then found held on node2.
    nodes = fleet(2)
    env, svc = environment(), service()
    dep = Deployment(plan_for(nodes, env, svc), service=svc, env=env, nodes=nodes)
    dep.prepare(["node1"])
    dep.close()
    assert [b.state for b in nodes["node1"].boxes.values()] == ["running", "removed"]
    assert "create" not in nodes["node2"].verbs()
    assert nodes["node1"].serving == "1.0.0"
