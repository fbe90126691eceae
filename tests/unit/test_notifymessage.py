"""The subject and body of a notification mail: pure text from a report."""

from dockship import notifymessage
from dockship.report import NodeOutcome, NodeResult, Result, RollReport


def _report(result, *, kind="roll", reason=None, failed=None, logs=(), from_tags=("1.3.0", "1.3.0")):
    nodes = tuple(NodeOutcome(f"node{i + 1}", None, tag, "1.4.0",
                              NodeResult.FAILED if f"node{i + 1}" == failed else NodeResult.UPDATED,
                              1.0, reason=reason if f"node{i + 1}" == failed else None,
                              logs=logs if f"node{i + 1}" == failed else ())
                  for i, tag in enumerate(from_tags))
    return RollReport(kind, "stage", "hello", "1.4.0", "sha256:" + "cd" * 32, result, "d-1",
                      nodes, "2026-12-02T05:00:00Z", 12.0, reason=reason, failed_node=failed)


def test_subject_of_a_success():
    assert notifymessage.subject(_report(Result.SUCCEEDED)) == \
        "[dockship] stage: hello 1.3.0 → 1.4.0 succeeded"


def test_subject_of_a_rollback_names_the_node_and_a_short_reason():
    s = notifymessage.subject(_report(Result.ROLLED_BACK, reason="health check failed " + "x" * 200,
                                      failed="node2"))
    assert s.startswith("[dockship] stage: hello 1.3.0 → 1.4.0 rolled back (node2: health check")
    assert s.endswith("…)") and len(s) < 160


def test_subject_of_a_rollback_command_and_of_nodes_on_several_tags():
    s = notifymessage.subject(_report(Result.FAILED, kind="rollback", reason="lock lost",
                                      from_tags=("1.2.0", "1.3.0", None)))
    assert s == "[dockship] stage: rollback of hello 1.2.0/1.3.0 → 1.4.0 FAILED (lock lost)"


def test_server_text_is_escaped_and_secrets_scrubbed(monkeypatch):
    monkeypatch.setenv("DOCKSHIP_SMTP_PASSWORD", "pw-in-a-log-9")
    r = _report(Result.ROLLED_BACK, reason="bad\x1b[31m\r\nSubject: injected", failed="node1",
                logs=("conn to db with pw-in-a-log-9 failed", "\x1b]0;title\x07"))
    s = notifymessage.subject(r)
    assert "\n" not in s and "\r" not in s and "\x1b" not in s
    body = notifymessage.body(r)
    assert "\x1b" not in body and "\x07" not in body and "pw-in-a-log-9" not in body
    assert "last log lines of node1:" in body and "conn to db with *** failed" in body


def test_body_says_what_rolled_where():
    body = notifymessage.body(_report(Result.ROLLED_BACK, reason="health check failed",
                                      failed="node2", logs=("boom",)))
    for line in ("environment: stage", "service:     hello", "from:        1.3.0",
                 "result:      rolled_back", "failed node: node2", "reason:      health check failed",
                 "  node1            1.3.0 → 1.4.0  updated",
                 "  node2            1.3.0 → 1.4.0  failed: health check failed", "  | boom"):
        assert line in body.splitlines(), (line, body)
