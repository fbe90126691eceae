"""configfile: what it writes is what dockship.config's loader reads back."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from dockship import configfile
from dockship.config import load

# Values that TOML put together by hand got wrong: a dot in a table name, quotes,
# backslashes, a newline, DEL (valid JSON, invalid raw in TOML), non-ASCII.
TRICKY = 'say "hi"\\ back\nslash \x7f done — ünï'


def _data(tmp: Path) -> dict:
    key, known = tmp / "id key", tmp / "known_hosts"
    key.write_text("x")
    known.write_text("x")
    return {
        "index": {"url": "http://127.0.0.1:8081/simple/"},
        "registry": {"url": "127.0.0.1:5000"},
        "build": {"base_image": "python:3.12-slim"},
        "services": {"web.api": {
            "package": "web-api", "image": "web/api", "port": 8000, "role": "web",
            "command": ("web-api", "--flag"), "env": {"GREETING": TRICKY, "PORT": "8000"},
            "stop_timeout": 2.5,
            "health": {"path": "/health", "timeout": 10, "min_healthy": 0.5},
        }},
        "environments": {"stage.eu": {
            "nodes": [{"name": f"node{i}", "docker": f"ssh://root@10.0.0.{i}", "zone": "ab"[i % 2],
                       "roles": ["web"]} for i in (1, 2)],
            "ssh": {"user": "root", "key": key, "known_hosts": known},
            "rollout": {"canary": 1, "batch": [1, "50%"], "auto_rollback": False},
            "hooks": {"pre_node": ["./lb", "drain", TRICKY]},
        }},
    }


def test_what_is_written_loads_back_as_the_same_configuration(tmp_path):
    path = configfile.write(tmp_path / "dockship.toml", _data(tmp_path))
    cfg = load(path)
    svc = cfg.services["web.api"]
    assert (svc.package, svc.image, svc.port, svc.command) == ("web-api", "web/api", 8000,
                                                               ("web-api", "--flag"))
    assert dict(svc.env) == {"GREETING": TRICKY, "PORT": "8000"}
    assert (svc.stop_timeout, svc.health.timeout, svc.health.min_healthy) == (2.5, 10, 0.5)
    env = cfg.environment("stage.eu")
    assert [(n.name, n.docker, n.zone, n.roles) for n in env.nodes] == [
        ("node1", "ssh://root@10.0.0.1", "b", ("web",)),
        ("node2", "ssh://root@10.0.0.2", "a", ("web",))]
    assert (env.ssh.key, env.ssh.known_hosts) == (tmp_path / "id key", tmp_path / "known_hosts")
    assert (env.rollout.batch, env.rollout.auto_rollback) == ((1, "50%"), False)
    assert env.hooks["pre_node"] == ("./lb", "drain", TRICKY)


def test_the_file_is_the_data_with_paths_as_strings_and_tuples_as_lists(tmp_path):
    data = _data(tmp_path)
    text = configfile.render(data)
    parsed = tomllib.loads(text)
    assert parsed["environments"]["stage.eu"]["ssh"]["key"] == str(tmp_path / "id key")
    assert parsed["services"]["web.api"]["command"] == ["web-api", "--flag"]
    assert parsed["services"]["web.api"]["env"]["GREETING"] == TRICKY


def test_the_comment_opens_the_file_as_comment_lines(tmp_path):
    text = configfile.render({"index": {"url": "http://i/simple/"}},
                             comment="written by a test\n\nsecond line")
    assert text.startswith("# written by a test\n#\n# second line\n\n[index]\n")
    assert tomllib.loads(text) == {"index": {"url": "http://i/simple/"}}


def test_an_unchanged_file_is_not_written_again(tmp_path):
    path = configfile.write(tmp_path / "sub" / "dockship.toml", _data(tmp_path))
    before = path.stat()
    configfile.write(path, _data(tmp_path))
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert [p.name for p in path.parent.iterdir()] == ["dockship.toml"]


def test_none_names_its_key_since_toml_has_no_null():
    with pytest.raises(TypeError, match=r"environments\.lab\.nodes\[0\]\.zone: None"):
        configfile.render({"environments": {"lab": {"nodes": [{"name": "n", "zone": None}]}}})
