"""Notifications from real rolls on the lab: a roll and a failed roll each deliver one mail
(over STARTTLS, with a login) and one webhook; dead receivers change nothing but the report."""

from __future__ import annotations

import json

import pytest

from conftest import dockship
from dockship import configfile
from notifykit import Hook, Inbox, free_port, self_signed, smtp_server
from rollkit import make_fleet

pytestmark = pytest.mark.lab

PASSWORD = "lab-smtp-pw-7"


@pytest.fixture(scope="module")
def fleet(lab, run_id, tmp_path_factory):
    fleet = make_fleet(lab, run_id, tmp_path_factory.mktemp("notify"), prefix="n", port=18900,
                       versions={"1.0.0": "ok", "1.1.0": "crash"})
    yield fleet
    fleet.cleanup()


@pytest.fixture
def receivers(tmp_path):
    inbox, hook = Inbox(), Hook()
    cert = self_signed(tmp_path)
    smtp = smtp_server(inbox, tls=cert, password=PASSWORD)
    yield inbox, hook, smtp.port, cert[0]
    smtp.stop()
    hook.close()


def _config(fleet, name: str, notify: dict):
    data = fleet.config_data()
    data["notify"] = notify
    return configfile.write(fleet.config.with_name(name), data)


def _roll(fleet, config, tag: str):
    return dockship("--config", str(config), "roll", "--env", "lab", "--service", fleet.service,
                    "--tag", tag, "--json", env={"DOCKSHIP_SMTP_PASSWORD": PASSWORD})


def test_a_roll_and_a_failed_roll_each_deliver_one_mail_and_one_webhook(fleet, receivers):
    inbox, hook, port, ca = receivers
    config = _config(fleet, "notify.toml", {
        "webhook": hook.url,
        "email": {"smtp": f"127.0.0.1:{port}", "from": "dockship@example.com",
                  "to": ["ops@example.com"], "user": "dockship", "ca": str(ca)}})

    dry = dockship("--config", str(config), "roll", "--env", "lab", "--service", fleet.service,
                   "--tag", "1.1.0", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert hook.bodies == [] and inbox.mails == []          # a dry run notifies nobody

    good = _roll(fleet, config, "1.0.0")
    assert good.returncode == 0, good.stderr
    out = json.loads(good.stdout)
    assert [(n["kind"], n["ok"]) for n in out["notifications"]] == [("webhook", True), ("email", True)]
    assert len(hook.bodies) == 1 and len(inbox.mails) == 1
    sent = json.loads(hook.bodies[0][1])
    assert (sent["result"], sent["tag"], sent["service"]) == ("succeeded", "1.0.0", fleet.service)
    assert inbox.mails[0][2]["Subject"] == f"[dockship] lab: {fleet.service} - → 1.0.0 succeeded"
    assert inbox.logins == [("dockship", PASSWORD)]

    bad = _roll(fleet, config, "1.1.0")
    assert bad.returncode == 1, bad.stderr
    out = json.loads(bad.stdout)
    assert out["result"] in ("rolled_back", "failed") and out["failed_node"] == "node1"
    assert len(hook.bodies) == 2 and len(inbox.mails) == 2
    assert json.loads(hook.bodies[1][1])["failed_node"] == "node1"
    mail = inbox.mails[1][2]
    words = "rolled back" if out["result"] == "rolled_back" else "FAILED"
    assert mail["Subject"].startswith(f"[dockship] lab: {fleet.service} 1.0.0 → 1.1.0 {words} (node1: ")
    text = mail.get_content()
    assert "failed node: node1" in text and "node1" in text and "1.0.0 → 1.1.0" in text
    assert PASSWORD not in bad.stdout + bad.stderr + text


def test_dead_receivers_are_reported_and_the_exit_code_stands(fleet):
    dead = free_port()
    config = _config(fleet, "dead.toml", {
        "webhook": f"http://127.0.0.1:{dead}/hook",
        "email": {"smtp": f"127.0.0.1:{dead}", "from": "dockship@example.com",
                  "to": ["ops@example.com"], "starttls": False, "timeout": 5}})
    proc = _roll(fleet, config, "1.0.0")
    assert proc.returncode == 0, proc.stderr
    notes = json.loads(proc.stdout)["notifications"]
    assert [(n["kind"], n["ok"]) for n in notes] == [("webhook", False), ("email", False)]
    assert all(n["error"] for n in notes)
    failed_lines = [x for x in proc.stderr.splitlines() if "notification by" in x]
    assert len(failed_lines) == 2
