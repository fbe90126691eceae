"""Notifications delivered to real servers on 127.0.0.1: an aiosmtpd SMTP server (plain and
STARTTLS with a self-signed certificate) and an `http.server` webhook receiver."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dockship import notify
from dockship.config import EmailSettings, NotifySettings, parse
from dockship.report import NodeOutcome, NodeResult, Result, RollReport
from notifykit import Hook, Inbox, free_port, self_signed
from notifykit import smtp_server as smtp_server_at

PASSWORD = "smtp-s3cret-pw"


def _report(result=Result.ROLLED_BACK) -> RollReport:
    failed = result is not Result.SUCCEEDED
    nodes = (NodeOutcome("node1", "a", "1.3.0", "1.4.0",
                         NodeResult.ROLLED_BACK if failed else NodeResult.UPDATED, 2.0),
             NodeOutcome("node2", "b", "1.3.0", "1.4.0",
                         NodeResult.FAILED if failed else NodeResult.UPDATED, 31.0,
                         reason="health check failed: GET /health answered 500" if failed else None,
                         logs=("Traceback (most recent call last):", "KeyError: 'DB'")
                         if failed else ()))
    return RollReport("roll", "stage", "hello", "1.4.0", "sha256:" + "ab" * 32, result, "d-42",
                      nodes, "2026-12-02T05:00:00Z", 33.0,
                      reason="node2: health check failed: GET /health answered 500" if failed else None,
                      failed_node="node2" if failed else None)


@pytest.fixture
def smtp_server():
    inbox = Inbox()
    controller = smtp_server_at(inbox)
    yield controller.port, inbox
    controller.stop()


@pytest.fixture
def tls_smtp_server(tmp_path):
    cert, key = self_signed(tmp_path)
    inbox = Inbox()
    controller = smtp_server_at(inbox, tls=(cert, key), password=PASSWORD)
    yield controller.port, inbox, cert, inbox.logins
    controller.stop()


@pytest.fixture
def hook():
    made: list[Hook] = []

    def make(statuses=()):
        made.append(Hook(statuses))
        return made[-1]
    yield make
    for h in made:
        h.close()


def _config(notify_table: dict):
    data = {"index": {"url": "http://127.0.0.1:8081/simple/"},
            "registry": {"url": "127.0.0.1:5000"},
            "services": {"hello": {"package": "hello-svc", "port": 8000, "role": "web"}},
            "notify": notify_table,
            "environments": {"stage": {"nodes": [
                {"name": "node1", "docker": "unix:///run/n1.sock", "roles": ["web"]}]}}}
    return parse(data, base_dir=Path("/"))


def test_a_rolled_back_roll_posts_its_report_and_mails_one_message(smtp_server, hook):
    port, inbox = smtp_server
    h = hook()
    config = _config({"webhook": h.url, "email": {"smtp": f"127.0.0.1:{port}",
                      "from": "dockship@example.com", "to": ["ops@example.com"],
                      "starttls": False}})
    report = _report()
    said: list[str] = []
    notes = notify.deliver(config, "stage", [report], say=said.append)
    assert [(d.kind, d.ok) for d in notes] == [("webhook", True), ("email", True)] and not said
    assert len(h.bodies) == 1 and h.bodies[0][0] == "application/json"
    assert json.loads(h.bodies[0][1]) == {"schema": 1, **report.to_json()}   # what --json prints
    (sender, rcpts, msg), = inbox.mails
    assert sender == "dockship@example.com" and rcpts == ["ops@example.com"]
    assert msg["Subject"] == ("[dockship] stage: hello 1.3.0 → 1.4.0 rolled back "
                              "(node2: health check failed: GET /health answered 500)")
    text = msg.get_content()
    assert "node2            1.3.0 → 1.4.0  failed" in text and "KeyError: 'DB'" in text


def test_on_filters_results(smtp_server, hook):
    h = hook()
    config = _config({"webhook": h.url, "on": ["failed", "rolled_back"]})
    assert notify.deliver(config, "stage", [_report(Result.SUCCEEDED)]) == []
    assert h.bodies == []


def test_starttls_and_login_with_the_password_from_the_environment(tls_smtp_server, monkeypatch):
    port, inbox, cert, logins = tls_smtp_server
    monkeypatch.setenv("DOCKSHIP_SMTP_PASSWORD", PASSWORD)
    email = EmailSettings("127.0.0.1", port, "dockship@example.com", ("ops@example.com",),
                          starttls=True, user="dockship", ca=cert, timeout=10)
    settings = NotifySettings(email=email)
    notes = notify._channels(settings, _report(Result.SUCCEEDED))
    assert [d.ok for d in notes] == [True], notes
    assert logins == [("dockship", PASSWORD)]
    assert inbox.mails[0][2]["Subject"] == "[dockship] stage: hello 1.3.0 → 1.4.0 succeeded"


def test_an_untrusted_certificate_is_a_reported_failure(tls_smtp_server):
    port, inbox, cert, logins = tls_smtp_server
    email = EmailSettings("127.0.0.1", port, "dockship@example.com", ("ops@example.com",),
                          timeout=10)
    (note,) = notify._channels(NotifySettings(email=email), _report())
    assert not note.ok and "certificate" in note.error.lower() and inbox.mails == []


def test_a_wrong_password_is_reported_and_never_shown(tls_smtp_server, monkeypatch):
    port, inbox, cert, logins = tls_smtp_server
    monkeypatch.setenv("DOCKSHIP_SMTP_PASSWORD", "wrong-password-1")
    email = EmailSettings("127.0.0.1", port, "dockship@example.com", ("ops@example.com",),
                          user="dockship", ca=cert, timeout=10)
    (note,) = notify._channels(NotifySettings(email=email), _report())
    assert not note.ok and "535" in note.error
    assert "wrong-password-1" not in json.dumps(note.to_json())


def test_dead_webhook_and_smtp_server_are_reported_not_raised():
    dead = free_port()
    config = _config({"webhook": f"http://127.0.0.1:{dead}/hook?token=abc123secret",
                      "email": {"smtp": f"127.0.0.1:{dead}", "from": "d@example.com",
                                "to": ["o@example.com"], "starttls": False, "timeout": 5}})
    said: list[str] = []
    notes = notify.deliver(config, "stage", [_report()], say=said.append)
    assert [(d.kind, d.ok) for d in notes] == [("webhook", False), ("email", False)]
    assert notes[0].target == f"http://127.0.0.1:{dead}/hook"
    assert len(said) == 2 and all("\n" not in line for line in said)
    assert "abc123secret" not in " ".join(said) + json.dumps([d.to_json() for d in notes])


def test_the_webhook_is_retried_after_a_503(hook):
    h = hook([503])
    notify.post_webhook(h.url, {"a": 1}, backoff=0.05)
    assert len(h.bodies) == 2


def test_a_4xx_is_not_retried(hook):
    h = hook([404, 200])
    with pytest.raises(notify.WebhookFailed, match="404"):
        notify.post_webhook(h.url, {"a": 1}, backoff=0.05)
    assert len(h.bodies) == 1


def test_retries_stop_after_the_tries(hook):
    h = hook([502, 502, 502, 200])
    with pytest.raises(notify.WebhookFailed, match="502.*after 3 tries"):
        notify.post_webhook(h.url, {"a": 1}, backoff=0.05)
    assert len(h.bodies) == 3


def test_json_gets_notifications_only_when_some_were_sent():
    d = notify.Delivery("webhook", "https://x.example/h", "hello", False, "refused")
    assert notify.with_notifications({"a": 1}, []) == {"a": 1}
    assert notify.with_notifications({"a": 1}, [d])["notifications"] == [
        {"kind": "webhook", "target": "https://x.example/h", "service": "hello", "ok": False,
         "error": "refused"}]
