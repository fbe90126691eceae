"""Hooks run as argv lists with the deployment's facts in DOCKSHIP_* variables."""

import sys

import pytest

from dockship.hooks import HookContext, HookFailed, run_hook

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
