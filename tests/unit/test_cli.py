"""The command line's last line of defence: exit codes and one-line errors, never a traceback."""

from __future__ import annotations

import json

import pytest

from dockship import cli
from dockship.errors import LockHeld


def test_a_config_that_is_not_utf8_is_refused_naming_the_file(tmp_path, capsys):
    config = tmp_path / "dockship.toml"
    config.write_bytes(b"\xff\xfe[index]\n")
    assert cli.main(["--config", str(config), "status", "--env", "stage", "--json"]) == 2
    out, err = capsys.readouterr()
    assert f"{config}: not UTF-8 text" in err and "Traceback" not in err
    assert json.loads(out) == {"schema": 1, "error": f"{config}: not UTF-8 text (byte 0xff at offset 0); "
                                        "save it as UTF-8", "exit_code": 2}


def test_an_unforeseen_error_is_one_line_and_exit_1(monkeypatch, capsys):
    def broken(args, halt):
        raise KeyError("labels")

    monkeypatch.setattr(cli, "_status", broken)
    monkeypatch.delenv("DOCKSHIP_DEBUG", raising=False)
    assert cli.main(["status", "--env", "stage", "--json"]) == 1
    out, err = capsys.readouterr()
    assert err.startswith("dockship: internal error: KeyError: 'labels'")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert json.loads(out)["exit_code"] == 1


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_the_traceback(monkeypatch, how):
    def broken(args, halt):
        raise KeyError("labels")

    monkeypatch.setattr(cli, "_status", broken)
    argv = ["status", "--env", "stage"]
    if how == "flag":
        argv.insert(0, "--debug")
    else:
        monkeypatch.setenv("DOCKSHIP_DEBUG", "1")
    with pytest.raises(KeyError):
        cli.main(argv)


def test_a_known_error_keeps_its_exit_code_and_escapes_control_characters(monkeypatch, capsys):
    def held(args, halt):
        raise LockHeld("locked by \x1b]0;pwned\x07mallory")

    monkeypatch.setattr(cli, "_roll", held)
    assert cli.main(["roll", "--env", "stage", "--json"]) == 3
    out, err = capsys.readouterr()
    assert "\x1b" not in err and "\\x1b]0;pwned\\x07mallory" in err
    assert json.loads(out) == {"schema": 1, "error": "locked by \\x1b]0;pwned\\x07mallory", "exit_code": 3}


def test_a_usage_error_from_the_parser_still_prints_the_json_object(capsys):
    assert cli.main(["roll", "--json", "--lock-wait", "soon"]) == 2
    out, err = capsys.readouterr()
    error = json.loads(out)
    assert error["exit_code"] == 2 and "--lock-wait" in error["error"]
    assert err.startswith("dockship: error: ") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(("health", "error", "code"), [
    ("healthy", None, 0), ("unhealthy (503)", None, 1), ("not running", None, 1),
    ("unknown", "node2: engine unreachable", 1)])
def test_status_exits_1_when_a_node_is_not_running_or_not_healthy(
        tmp_path, monkeypatch, capsys, health, error, code):
    from dockship import status as status_mod

    config = tmp_path / "dockship.toml"
    config.write_text('[index]\nurl = "http://127.0.0.1:1/simple/"\n[registry]\nurl = "127.0.0.1:1"\n'
                      '[services.hello]\n[environments.stage]\n'
                      'nodes = [{ name = "node1", docker = "ssh://root@10.0.0.1" }]\n')

    def fake_status(cfg, env, service=None):
        ok = status_mod.NodeStatus("node1", "a", "10.0.0.1", "1.0.0", "sha256:1", "healthy",
                                   None, None, None, ())
        other = status_mod.NodeStatus("node2", "b", "10.0.0.2", "1.0.0", "sha256:1", health,
                                      None, None, None, (), error=error)
        return [status_mod.ServiceStatus("stage", "hello", (ok, other))]

    monkeypatch.setattr(status_mod, "status", fake_status)
    assert cli.main(["status", "--env", "stage", "--config", str(config), "--json"]) == code
    assert json.loads(capsys.readouterr().out)["nodes"][1]["health"] == health


@pytest.mark.parametrize(("argv", "flag"), [
    (["roll", "--env", "stage", "--lock-wait", "nan"], "--lock-wait"),
    (["roll", "--env", "stage", "--lock-wait", "inf"], "--lock-wait"),
    (["roll", "--env", "stage", "--lock-ttl", "-1"], "--lock-ttl"),
    (["roll", "--env", "stage", "--parallel", "0"], "--parallel"),
    (["roll", "--env", "st;age"], "--env"),
    (["roll", "--env", "stage", "--tag", "1.0 ; rm"], "--tag"),
    (["roll", "--env", "stage", "--message", "ci \x1b]0;x\x07"], "--message"),
    (["build", "hello-svc", "1.x"], "VERSION"),
    (["build", "hello svc;id", "1.0"], "PACKAGE"),
    (["logs", "--env", "stage", "--node", "a" * 100], "--node"),
    (["status", "--env", "stage\n"], "--env"),
])
def test_cli_values_are_checked_before_the_config_is_even_read(argv, flag, tmp_path, capsys):
    missing = tmp_path / "nowhere.toml"          # were it read, the error would be "not found"
    assert cli.main(["--config", str(missing), *argv, "--json"]) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert error.startswith(f"{flag}: ") and "not found" not in error


def test_a_version_typed_as_a_version_is_a_valid_tag(tmp_path, capsys):
    missing = tmp_path / "nowhere.toml"
    assert cli.main(["--config", str(missing), "roll", "--env", "stage", "--tag", "1!2.0+abc"]) == 2
    assert "config file" in capsys.readouterr().err       # past the checks: the missing file


def test_status_results_go_to_stdout_so_they_can_be_piped(tmp_path, monkeypatch, capsys):
    from dockship import status as status_mod

    config = tmp_path / "dockship.toml"
    config.write_text('[index]\nurl = "http://127.0.0.1:1/simple/"\n[registry]\nurl = "127.0.0.1:1"\n'
                      '[services.hello]\n[environments.stage]\n'
                      'nodes = [{ name = "node1", docker = "ssh://root@10.0.0.1" }]\n')
    error = "node2: engine unreachable: " + "x" * 300
    nodes = (status_mod.NodeStatus("node1", "a", "10.0.0.1", "1.0.0", "sha256:1", "healthy",
                                   "2026-12-01T21:41:36.803782495Z", None, None, ()),
             status_mod.NodeStatus("node2", "b", "10.0.0.2", None, None, "unknown", None, None,
                                   None, (), error=error))
    monkeypatch.setattr(status_mod, "status",
                        lambda *a, **k: [status_mod.ServiceStatus("stage", "hello", nodes)])
    assert cli.main(["status", "--env", "stage", "--config", str(config)]) == 1
    out, err = capsys.readouterr()
    assert "node2" in out and error in out.replace("\n", "")     # the whole error, below
    assert "2026-12-01T21:41" not in out and " ago" in out        # an age, not a raw stamp


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_is_generated_from_the_parser_itself(shell, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["completion", shell])
    assert done.value.code in (0, None)
    script = capsys.readouterr().out
    for word in ("rollback", "versions", "lock", "--lock-wait", "--since"):
        assert word in script
