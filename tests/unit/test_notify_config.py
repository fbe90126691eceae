"""[notify] and [environments.E.notify]: read, checked, merged key by key (design §12)."""

import copy
from pathlib import Path

import pytest

from dockship.config import NOTIFY_RESULTS, parse
from dockship.errors import ConfigError

BASE = {
    "index": {"url": "http://127.0.0.1:8081/simple/"},
    "registry": {"url": "127.0.0.1:5000"},
    "services": {"hello": {"package": "hello-svc", "port": 8000, "role": "web"}},
    "environments": {
        "stage": {"nodes": [{"name": "node1", "docker": "unix:///run/n1.sock", "roles": ["web"]}]},
        "prod": {"nodes": [{"name": "node2", "docker": "unix:///run/n2.sock", "roles": ["web"]}]},
    },
}
EMAIL = {"smtp": "mail.example.com:587", "from": "dockship@example.com",
         "to": ["ops@example.com", "dev@example.com"], "user": "dockship"}


def _parse(top=None, stage=None):
    data = copy.deepcopy(BASE)
    if top is not None:
        data["notify"] = top
    if stage is not None:
        data["environments"]["stage"]["notify"] = stage
    return parse(data, base_dir=Path("/"))


def _problems(top=None, stage=None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        _parse(top, stage)
    return info.value.problems


def test_no_notify_table_means_no_channel():
    n = _parse().environments["stage"].notify
    assert not n.any and n.on == NOTIFY_RESULTS


def test_top_level_settings_reach_every_environment():
    cfg = _parse({"webhook": "https://hooks.example.com/deploys", "email": EMAIL,
                  "on": ["failed", "rolled_back"]})
    for env in ("stage", "prod"):
        n = cfg.environments[env].notify
        assert n.webhook == "https://hooks.example.com/deploys" and n.on == ("failed", "rolled_back")
        assert n.email.host == "mail.example.com" and n.email.port == 587
        assert n.email.to == ("ops@example.com", "dev@example.com") and n.email.starttls
        assert n.email.user == "dockship"


def test_the_environment_wins_key_by_key_and_false_turns_a_channel_off():
    cfg = _parse({"webhook": "https://hooks.example.com/all", "email": EMAIL},
                 {"on": ["failed"], "email": False})
    stage, prod = cfg.environments["stage"].notify, cfg.environments["prod"].notify
    assert stage.webhook == "https://hooks.example.com/all" and stage.email is None
    assert stage.on == ("failed",)
    assert prod.email is not None and prod.on == NOTIFY_RESULTS


def test_default_ports_follow_starttls_and_ipv6_relays_parse():
    plain = _parse({"email": {"smtp": "[fd00::1]", "from": "a@b.example", "to": ["c@d.example"],
                              "starttls": False}})
    e = plain.environments["stage"].notify.email
    assert (e.host, e.port, e.starttls) == ("fd00::1", 25, False)
    assert _parse({"email": {**EMAIL, "smtp": "mail.example.com"}}).environments[
        "stage"].notify.email.port == 587


def test_a_result_outside_on_is_refused_with_did_you_mean():
    problems = _problems({"on": ["succeeded", "rolledback"]})
    assert problems == ["notify.on[1]: 'rolledback' is not one of: succeeded, rolled_back, failed "
                        "(did you mean 'rolled_back'?)"]


@pytest.mark.parametrize("email, key", [
    ({**EMAIL, "smtp": "smtp://mail.example.com:25"}, "smtp"),
    ({**EMAIL, "smtp": "mail.example.com:0"}, "smtp"),
    ({**EMAIL, "from": "Dockship <d@example.com>"}, "from"),
    ({**EMAIL, "to": ["ops@example.com\nBcc: x@evil.example"]}, "to[0]"),
    ({**EMAIL, "to": []}, "to"),
    ({**EMAIL, "password": "hunter22"}, "password"),
    ({**EMAIL, "starttls": False}, "user"),
    ({**EMAIL, "tls": True}, "tls"),
])
def test_bad_email_settings_name_their_key(email, key):
    problems = _problems(stage={"email": email})
    assert any(p.startswith(f"environments.stage.notify.email.{key}:") for p in problems), problems


def test_a_password_in_the_file_is_refused_without_showing_it():
    problems = _problems({"email": {**EMAIL, "password": "hunter22"}})
    assert "DOCKSHIP_SMTP_PASSWORD" in problems[0] and "hunter22" not in " ".join(problems)


def test_the_webhook_is_a_checked_url():
    assert _problems({"webhook": "ftp://x.example/"})[0].startswith("notify.webhook:")
    assert _problems({"webhook": "https://[::1:8080/"})[0].startswith("notify.webhook:")
    assert _problems({"web_hook": "https://x.example/"})[0].startswith(
        "notify.web_hook: unknown key (did you mean 'webhook'?)")


def test_config_show_masks_the_webhook_token():
    from dockship.configview import settings
    cfg = _parse({"webhook": "https://hooks.example.com/services/T0K3N1234567890abcdefXYZ?key=s3cr3t"})
    shown = settings(cfg, "stage")["environments"]["stage"]["notify"]
    assert shown["webhook"] == "https://hooks.example.com/services/***"
    assert shown["on"] == list(NOTIFY_RESULTS)
