"""Batch planning: canary first and alone, then counts or percentages of the fleet."""

import pytest
from hypothesis import given, strategies as st

from dockship.config import Node
from dockship.plan import NodeStep, StepAction, batch_sizes, make_batches


@pytest.mark.parametrize("total, canary, spec, expected", [
    (3, 1, (1,), [1, 1, 1]),
    (3, 0, (1,), [1, 1, 1]),
    (10, 1, ("25%",), [1, 2, 2, 2, 2, 1]),
    (10, 1, (1, "50%"), [1, 1, 5, 3]),
    (9, 1, ("34%",), [1, 3, 3, 2]),
    (3, 1, ("34%",), [1, 1, 1]),
    (2, 5, (1,), [2]),
    (4, 0, (10,), [4]),
    (3, 0, ("1%",), [1, 1, 1]),      # never below 1
    (0, 1, (1,), []),
])
def test_batch_sizes(total, canary, spec, expected):
    assert batch_sizes(total, canary, spec) == expected


@given(total=st.integers(0, 60), canary=st.integers(0, 5),
       spec=st.lists(st.one_of(st.integers(1, 20), st.integers(1, 100).map(lambda p: f"{p}%")),
                     min_size=1, max_size=4))
def test_batches_cover_every_node_once_and_are_never_empty(total, canary, spec):
    sizes = batch_sizes(total, canary, spec)
    assert sum(sizes) == total
    assert all(s >= 1 for s in sizes)
    if total and canary:
        assert sizes[0] == min(canary, total)


def _step(name, action=StepAction.DEPLOY):
    return NodeStep(Node(name, f"unix:///{name}"), action, "1.0.0", "sha256:a", "1.1.0", "sha256:b")


def test_make_batches_puts_the_canary_first_and_unchanged_nodes_last():
    steps = [_step("n1", StepAction.UNCHANGED), _step("n2"), _step("n3"), _step("n4")]
    batches = make_batches(steps, canary=1, spec=(2,))
    assert [(b.label, [s.node.name for s in b.steps]) for b in batches] == [
        ("canary", ["n2"]), ("batch 1", ["n3", "n4"]), ("batch 2", ["n1"])]


def test_without_canary_batches_are_numbered_from_one():
    batches = make_batches([_step("n1"), _step("n2")], canary=0, spec=(1,))
    assert [b.label for b in batches] == ["batch 1", "batch 2"]


def _zstep(name, zone):
    return NodeStep(Node(name, f"unix:///{name}", zone=zone), StepAction.DEPLOY, "1.0.0", "sha256:a",
                    "1.1.0", "sha256:b")


def test_zone_by_zone_rolls_the_canary_in_the_first_zone_then_each_zone_in_batches():
    steps = [_zstep("a1", "a"), _zstep("b1", "b"), _zstep("a2", "a"), _zstep("b2", "b"),
             _zstep("a3", "a"), _zstep("c1", "c")]
    batches = make_batches(steps, canary=1, spec=("50%",), by_zone=True)
    assert [(b.label, [s.node.name for s in b.steps]) for b in batches] == [
        ("zone a: canary", ["a1"]),
        ("zone a: batch 1", ["a2"]),   # 50% of the zone's 3 nodes, rounded down
        ("zone a: batch 2", ["a3"]),
        ("zone b: batch 3", ["b1"]),
        ("zone b: batch 4", ["b2"]),
        ("zone c: batch 5", ["c1"])]


def test_zone_order_follows_the_config_then_the_alphabet_and_zoneless_nodes_go_last():
    steps = [_zstep("x", None), _zstep("a1", "a"), _zstep("c1", "c"), _zstep("b1", "b")]
    from dockship.plan import zone_order
    assert zone_order(steps, ("c",)) == ["c", "a", "b", None]
    batches = make_batches(steps, canary=0, spec=(5,), by_zone=True, zones=("c",))
    assert [b.zone for b in batches] == ["c", "a", "b", None]
    assert [b.label for b in batches] == ["zone c: batch 1", "zone a: batch 2", "zone b: batch 3",
                                          "batch 4"]
