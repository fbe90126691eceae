"""The command line under fire (issue 8): every argv ends in an exit code, never a traceback.

An argv is a command with its flags set to values drawn from the config
suite's hostile values (as text, the only form a command line has) and a
few good ones. Each run ends in exactly one of two ways: exit 2 with the
offending flag named (or argparse's own usage line), or every checked value
was valid and the command went on, to fail against servers that refuse at
once (exit 1) or succeed. No "internal error", no traceback, and `--json`
always prints one object.

Every server here is a closed port on 127.0.0.1 and DOCKER_HOST points at
one, so nothing a command does can reach a real engine, registry or index.
`lab` and `init` are left out: they change this machine and the working
directory by design.
"""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from configkit import minimal_config
from test_config_fuzz import HOSTILE_VALUES

from dockship import checks, cli

#: Command lines as (command words, {flag: kind}); a kind says which values to draw.
COMMANDS: list[tuple[list[str], dict[str, str]]] = [
    (["roll"], {"--env": "name", "--service": "name", "--tag": "tag", "--zone": "name",
                "--lock-wait": "number", "--lock-ttl": "number", "--parallel": "number",
                "--message": "text"}),
    (["rollback"], {"--env": "name", "--service": "name", "--tag": "tag",
                    "--lock-wait": "number", "--parallel": "number"}),
    (["status"], {"--env": "name", "--service": "name"}),
    (["history"], {"--env": "name", "--service": "name"}),
    (["logs"], {"--env": "name", "--service": "name", "--node": "name", "--since": "text",
                "--tail": "number"}),
    (["lock", "status"], {"--env": "name", "--service": "name"}),
    (["lock", "release"], {"--env": "name", "--service": "name"}),
    (["config", "check"], {"--env": "name"}),
    (["config", "show"], {"--env": "name"}),
]
GOOD = {"name": ["stage", "hello", "node1", "a"], "tag": ["1.0.0", "1!2.0+abc"],
        "number": ["0", "1", "2.5", "30"], "text": ["ci job 7", "10m"]}
HOSTILE_TEXT = sorted({str(v) for v in HOSTILE_VALUES if not isinstance(v, (list, dict))
                       and "\x00" not in str(v)} | {"nan", "inf", "-inf", "1e999", "-0"})


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clifuzz")
    port = closed_port()
    path = minimal_config(tmp / "dockship.toml", index_url=f"http://127.0.0.1:{port}/simple/",
                          registry=f"127.0.0.1:{port}", docker=f"unix://{tmp}/no-engine.sock")
    return path, port, tmp


@st.composite
def argvs(draw):
    words, flags = draw(st.sampled_from(COMMANDS))
    argv = list(words)
    chosen = draw(st.lists(st.sampled_from(sorted(flags)), unique=True, max_size=4))
    if "--env" not in chosen and draw(st.booleans()):
        chosen.append("--env")
    for flag in chosen:
        kind = flags[flag]
        value = draw(st.sampled_from(GOOD[kind]) | st.sampled_from(HOSTILE_TEXT))
        argv.append(f"{flag}={value}")    # `=`: a value starting with '-' stays a value
    return argv


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=argvs())
def test_every_command_line_ends_in_an_exit_code_and_one_json_object(world, argv, capsys,
                                                                      monkeypatch):
    path, port, tmp = world
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{port}")
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp))
    monkeypatch.delenv("DOCKSHIP_DEBUG", raising=False)
    code = cli.main(["--config", str(path), *argv, "--json"])
    out, err = capsys.readouterr()
    assert "internal error" not in err and "Traceback" not in err, err
    assert code in (0, 1, 2, 3, 4), code
    if code != 0 or not out.strip():
        payload = json.loads(out)
        if "error" in payload:
            assert payload["exit_code"] == code
    if code != 2:     # accepted: then every checked value was valid
        for word in argv:
            flag, _, value = word.partition("=")
            if flag in ("--lock-wait", "--lock-ttl", "--tail", "--parallel"):
                assert math.isfinite(float(value)) and float(value) >= 0, argv
            if flag in ("--env", "--service", "--node", "--zone"):
                assert checks.name_problem(value) is None, argv
