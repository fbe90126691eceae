"""`dockship config check` / `config show`, through the real CLI entry point."""

from __future__ import annotations

import json
import tomllib

from dockship import cli

CONFIG = """
[index]
url = "https://ci:s3cr%2Ft@index.example/simple/"
[registry]
url = "registry.example:5000"
[services.hello]
port = 8080
[environments.stage]
nodes = [{ name = "node1", docker = "ssh://root@10.0.0.1" }]
[environments.prod]
nodes = [{ name = "node9", docker = "ssh://root@10.0.0.9" }]
"""


def write(tmp_path, text=CONFIG):
    path = tmp_path / "dockship.toml"
    path.write_text(text)
    return str(path)


def test_check_says_valid_on_stdout(tmp_path, capsys):
    assert cli.main(["config", "check", "--config", write(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "valid; 1 service(s) (hello), environment(s): prod, stage" in out


def test_check_lists_every_problem_with_exit_2(tmp_path, capsys):
    bad = CONFIG.replace("port = 8080", "port = 99999\nretain = 0")
    assert cli.main(["--config", write(tmp_path, bad), "config", "check", "--json"]) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert "services.hello.port" in error and "services.hello.retain" in error


def test_check_of_an_unknown_environment_is_exit_2_with_a_suggestion(tmp_path, capsys):
    assert cli.main(["config", "check", "--env", "stag", "--config", write(tmp_path)]) == 2
    assert "did you mean 'stage'" in capsys.readouterr().err


def test_show_fills_in_defaults_and_masks_credentials(tmp_path, capsys):
    assert cli.main(["config", "show", "--env", "stage", "--config", write(tmp_path)]) == 0
    out = capsys.readouterr().out
    data = tomllib.loads(out)
    assert data["services"]["hello"]["health"] == {
        "path": "/health", "status": 200, "timeout": 30.0, "min_healthy": 3.0, "interval": 0.5,
        "rollback_min_healthy": 0.0, "kind": "http", "scheme": "http", "verify": False}
    assert list(data["environments"]) == ["stage"]
    assert "s3cr" not in out and "index.example/simple/" in data["index_url"]


def test_show_json_is_the_same_data(tmp_path, capsys):
    assert cli.main(["config", "show", "--json", "--config", write(tmp_path)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["services"]["hello"]["port"] == 8080 and set(data["environments"]) == {"stage", "prod"}
