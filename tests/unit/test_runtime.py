"""Runtime settings and their label: per-key salted hashes, never a value (design §11)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from dockship.config import Publish
from dockship.runtime import UNRECORDED, Runtime, parse_label

SECRET = "postgres://app:VerySecret-123@db/app"


def _rt(**kw) -> Runtime:
    base = dict(env={"LOG_LEVEL": "info"}, secrets={"DATABASE_URL": SECRET},
                command=("hello-svc",), port=8000, publish=Publish())
    return Runtime(**{**base, **kw})


def test_the_label_names_keys_and_never_holds_a_value():
    rt = _rt()
    label = rt.label()
    assert SECRET not in label and "VerySecret" not in label and "info" not in label
    data = json.loads(label)
    assert data["v"] == 1 and len(data["salt"]) == 32
    assert sorted(data["keys"]) == ["command", "env.LOG_LEVEL", "port", "publish",
                                    "secret.DATABASE_URL"]
    assert all(len(h) == 16 for h in data["keys"].values())
    assert SECRET not in repr(rt) and "secrets" not in repr(rt)


def test_salts_differ_so_equal_settings_give_different_labels():
    a, b = _rt(), _rt()
    assert a.label() != b.label()
    assert a.changed(b.label()) == () and b.changed(a.label()) == ()


@pytest.mark.parametrize("change, keys", [
    ({"env": {"LOG_LEVEL": "debug"}}, ("env.LOG_LEVEL",)),
    ({"env": {"LOG_LEVEL": "info", "NEW": "1"}}, ("env.NEW",)),
    ({"env": {}}, ("env.LOG_LEVEL",)),
    ({"secrets": {"DATABASE_URL": SECRET + "x"}}, ("secret.DATABASE_URL",)),
    ({"command": ("hello-svc", "--fast")}, ("command",)),
    ({"port": 8001}, ("port", "publish")),
    ({"publish": Publish(9000)}, ("publish",)),
    ({"publish": Publish(8000, "127.0.0.1")}, ("publish",)),
    ({"env": {}, "secrets": {"LOG_LEVEL": "info", "DATABASE_URL": SECRET}},
     ("env.LOG_LEVEL", "secret.LOG_LEVEL")),
])
def test_each_changed_key_is_named(change, keys):
    old = _rt()
    assert _rt(**change).changed(old.label()) == keys


@pytest.mark.parametrize("label", [None, "", "not json", "[]", '{"v":2,"salt":"a","keys":{}}',
                                   '{"v":1,"salt":"","keys":{}}', '{"v":1,"salt":"a","keys":[]}'])
def test_a_missing_or_unreadable_label_counts_as_drifted(label):
    assert parse_label(label) is None
    assert _rt().changed(label) == (UNRECORDED,)


def test_the_environment_holds_literals_and_secrets():
    assert _rt().environment() == {"LOG_LEVEL": "info", "DATABASE_URL": SECRET}


def test_a_secret_hash_is_not_the_plain_salted_hmac_of_the_value():
    """Guessing a secret from a label costs a scrypt per guess, not a fast hash."""
    import hashlib
    import hmac
    rt = _rt()
    salt, keys = parse_label(rt.label())
    fast = hmac.new(salt.encode(), f"secret.DATABASE_URL\0{SECRET}".encode(),
                    hashlib.sha256).hexdigest()[:16]
    assert keys["secret.DATABASE_URL"] != fast
    assert keys["env.LOG_LEVEL"] == hmac.new(salt.encode(), b"env.LOG_LEVEL\0info",
                                             hashlib.sha256).hexdigest()[:16]


def test_runtime_of_a_service_takes_its_settings():
    from fakenode import service
    svc = dataclasses.replace(service(), env={"A": "1"}, command=("x",), publish=Publish(81))
    rt = Runtime.of(svc, {"S": "secret-v"})
    assert (rt.env, rt.secrets, rt.command, rt.port, rt.host_port) == (
        {"A": "1"}, {"S": "secret-v"}, ("x",), 8000, 81)
