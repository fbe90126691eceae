"""The roll report: fixed JSON keys (design §2) and a summary that says what happened."""

from dockship.report import NodeOutcome, NodeResult, Result, RollReport


def _report(result=Result.ROLLED_BACK):
    nodes = (NodeOutcome("node1", "a", "1.0.0", "1.1.0", NodeResult.ROLLED_BACK, 4.2),
             NodeOutcome("node2", "b", "1.0.0", "1.1.0", NodeResult.FAILED, 10.0,
                        reason="GET /health answered 503 (expected 200)", logs=("boom",)),
             NodeOutcome("node3", "c", "1.0.0", "1.1.0", NodeResult.NOT_REACHED, 0.0))
    return RollReport("roll", "stage", "hello", "1.1.0", "sha256:ab", result, "d1", nodes,
                      "2026-11-26T12:00:00+00:00", 15.5, "node2: GET /health answered 503", "node2")


def test_roll_json_starts_with_the_fixed_keys():
    data = _report().to_json()
    assert list(data)[:6] == ["env", "service", "tag", "digest", "result", "nodes"]
    assert data["result"] == "rolled_back" and data["failed_node"] == "node2"
    assert [list(n)[:6] for n in data["nodes"]] == [["name", "zone", "from", "to", "result", "seconds"]] * 3
    assert data["nodes"][1]["logs"] == ["boom"] and "reason" not in data["nodes"][2]


def test_summary_counts_node_results():
    text = _report().summary()
    assert text.startswith("roll of hello to 1.1.0 in stage failed and was rolled back")
    assert "1 rolled_back, 1 failed, 1 not_reached" in text
