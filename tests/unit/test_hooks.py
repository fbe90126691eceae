"""Hooks run as argv lists with the deployment's facts in DOCKSHIP_* variables."""

import json
import os
import sys

import pytest

from dockship import redact
from dockship.hooks import HookContext, HookFailed, run_hook
from dockship.redact import Secrets

CTX = HookContext("stage", "hello", "d1", from_tag="1.0.0", to_tag="1.1.0", node="node1",
                  address="10.0.0.1", zone="a")


def test_a_hook_sees_every_variable(tmp_path):
    out = tmp_path / "env"
    code = f"import os; open({str(out)!r}, 'w').write(repr(sorted((k, v) for k, v in os.environ.items() if k.startswith('DOCKSHIP_'))))"
    run_hook({"pre_node": (sys.executable, "-c", code)}, "pre_node", CTX)
    assert eval(out.read_text()) == sorted({
        "DOCKSHIP_ENV": "stage", "DOCKSHIP_SERVICE": "hello", "DOCKSHIP_DEPLOY_ID": "d1",
        "DOCKSHIP_FROM_TAG": "1.0.0", "DOCKSHIP_TO_TAG": "1.1.0", "DOCKSHIP_NODE": "node1",
        "DOCKSHIP_ADDRESS": "10.0.0.1", "DOCKSHIP_ZONE": "a"}.items())


def test_roll_level_hooks_get_no_node_variables():
    assert "DOCKSHIP_NODE" not in HookContext("stage", "hello", "d1").variables()


def test_a_failing_hook_says_its_exit_code_and_last_words():
    with pytest.raises(HookFailed, match=r"hook pre_node .* exited 3: draining failed"):
        run_hook({"pre_node": (sys.executable, "-c", "import sys; sys.stderr.write('draining failed'); sys.exit(3)")},
                 "pre_node", CTX)


def test_a_missing_program_is_a_clear_failure():
    with pytest.raises(HookFailed, match="could not run: /nonexistent/lb not found"):
        run_hook({"pre_node": ("/nonexistent/lb", "drain")}, "pre_node", CTX)


def test_an_argument_is_never_interpreted_by_a_shell(tmp_path):
    marker = tmp_path / "pwned"
    run_hook({"post_node": ("echo", f"; touch {marker}")}, "post_node", CTX)
    assert not marker.exists()


def test_unconfigured_hooks_do_nothing():
    run_hook({}, "pre_roll", CTX)


def dumped_environ(tmp_path, **run_kwargs) -> dict[str, str]:
    """The environment a real hook process saw, as it wrote it."""
    out = tmp_path / "environ.json"
    code = f"import json, os; open({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))"
    run_hook({"pre_roll": (sys.executable, "-c", code)}, "pre_roll", CTX, **run_kwargs)
    return json.loads(out.read_text())


def test_a_hook_never_sees_credentials_nor_secret_values(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKSHIP_REGISTRY_USER", "deployer")
    monkeypatch.setenv("DOCKSHIP_REGISTRY_PASSWORD", "reg-s3cret")
    monkeypatch.setenv("DOCKSHIP_SMTP_PASSWORD", "smtp-s3cret")
    monkeypatch.setenv("DOCKER_AUTH_CONFIG", '{"auths": {}}')
    monkeypatch.setenv("DATABASE_URL", "postgres://app:db-s3cret@db/app")
    monkeypatch.setenv("ECHOED", "a copy of reg-s3cret")
    monkeypatch.setenv("DOCKSHIP_LOCK_MESSAGE", "ci job 42")
    monkeypatch.setenv("LANG", "C.UTF-8")
    seen = dumped_environ(tmp_path, secrets=Secrets(names=frozenset({"DATABASE_URL"})))
    assert not any("s3cret" in v for v in seen.values())
    assert not {"DOCKSHIP_REGISTRY_USER", "DOCKSHIP_REGISTRY_PASSWORD", "DOCKSHIP_SMTP_PASSWORD",
                "DOCKER_AUTH_CONFIG", "DATABASE_URL", "ECHOED"} & set(seen)
    # What hooks need is still there: the system's variables and the documented DOCKSHIP_* ones.
    assert seen["PATH"] == os.environ["PATH"] and seen["LANG"] == "C.UTF-8"
    assert seen["HOME"] == os.environ["HOME"]
    assert seen["DOCKSHIP_LOCK_MESSAGE"] == "ci job 42" and seen["DOCKSHIP_NODE"] == "node1"


def test_a_remembered_secret_value_is_kept_from_hooks(tmp_path, monkeypatch):
    monkeypatch.setattr(redact, "_remembered", set())
    redact.remember("index-t0ken")
    monkeypatch.setenv("PIP_INDEX_URL", "https://index-t0ken@idx/simple/")
    assert "PIP_INDEX_URL" not in dumped_environ(tmp_path)


def test_a_failing_hook_that_prints_a_secret_does_not_pass_it_on(monkeypatch):
    monkeypatch.setenv("DOCKSHIP_REGISTRY_PASSWORD", "reg-s3cret")
    # The hook's argv holds no secret; what it prints does (read from a file, say).
    code = ("import sys; sys.stderr.write('login with reg-s3' + 'cret to http://u:' + 'pw@lb/ failed'); "
            "sys.exit(1)")
    with pytest.raises(HookFailed) as info:
        run_hook({"pre_node": (sys.executable, "-c", code)}, "pre_node", CTX)
    assert "s3cret" not in str(info.value) and "u:pw" not in str(info.value)
    assert str(info.value).endswith("exited 1: login with *** to http://***@lb/ failed")
