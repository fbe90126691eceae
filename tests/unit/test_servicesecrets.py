"""Service secrets: the dotenv file, precedence over it, and a missing one refused (design §11)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from fakenode import environment, service

from dockship import redact
from dockship.errors import ConfigError
from dockship.hooks import HookContext, hook_environ
from dockship.servicesecrets import read_dotenv, resolve

SETTING = "environments.stage.secrets_file"


@pytest.fixture(autouse=True)
def _forget(monkeypatch):
    """What a test remembers stays in that test (remember is process-wide by design)."""
    monkeypatch.setattr(redact, "_remembered", set())
    monkeypatch.setattr(redact, "_remembered_names", set())


def _env(tmp_path: Path, text: str | None):
    path = tmp_path / "stage.env"
    if text is not None:
        path.write_text(text)
    return dataclasses.replace(environment(), secrets_file=path)


def _svc(*names: str):
    return dataclasses.replace(service(), secrets=names)


def test_dotenv_reads_quotes_exports_comments_and_no_expansion(tmp_path):
    path = tmp_path / "x.env"
    path.write_text("# a comment\n\nexport A=plain\nB='single # not a comment'\n"
                    'C="two\\nlines"\nD=${A}\nE=  spaced  # trailing comment\nA=again\n')
    assert read_dotenv(path, SETTING) == {"A": "again", "B": "single # not a comment",
                                          "C": "two\nlines", "D": "${A}", "E": "spaced"}


def test_dotenv_of_a_missing_file_is_none(tmp_path):
    assert read_dotenv(tmp_path / "nope.env", SETTING) is None


def test_a_malformed_dotenv_line_is_named_by_number_never_by_its_text(tmp_path):
    path = tmp_path / "x.env"
    path.write_text("GOOD=1\nTOKEN='s3cr3t-value\n")
    with pytest.raises(ConfigError) as info:
        read_dotenv(path, SETTING)
    assert "line 2" in str(info.value) and "s3cr3t" not in str(info.value)
    path.write_text("NOEQUALS\n9BAD=s3cr3t-value\n")
    with pytest.raises(ConfigError) as info:
        read_dotenv(path, SETTING)
    assert info.value.problems[0].endswith("line 1: NOEQUALS has no '='; write NOEQUALS=VALUE")
    assert "line 2: the name is not an environment variable name" in info.value.problems[1]
    assert "s3cr3t" not in str(info.value)


def test_dockship_environment_wins_over_the_file(tmp_path):
    env = _env(tmp_path, "DB=from-file\nAPI_KEY=file-key\n")
    found = resolve(env, [_svc("DB", "API_KEY")], environ={"DB": "from-environment"})
    assert dict(found["hello"]) == {"DB": "from-environment", "API_KEY": "file-key"}


def test_an_empty_value_counts_as_set(tmp_path):
    assert dict(resolve(_env(tmp_path, None), [_svc("DB")], environ={"DB": ""})["hello"]) == {"DB": ""}


def test_a_missing_file_is_fine_when_the_environment_holds_every_secret(tmp_path):
    assert resolve(_env(tmp_path, None), [_svc("DB")], environ={"DB": "x-value"})["hello"]["DB"] \
        == "x-value"


def test_every_missing_secret_is_named_with_both_places_it_may_come_from(tmp_path):
    env = _env(tmp_path, "OTHER=1\n")
    with pytest.raises(ConfigError) as info:
        resolve(env, [_svc("DB", "API_KEY"), dataclasses.replace(_svc("TOKEN"), name="worker")],
                environ={})
    where = f"{SETTING} ({tmp_path / 'stage.env'})"
    assert info.value.problems == [
        f"services.hello.secrets: DB is not set; set it in dockship's environment or in {where}",
        f"services.hello.secrets: API_KEY is not set; set it in dockship's environment or in {where}",
        f"services.worker.secrets: TOKEN is not set; set it in dockship's environment or in {where}"]


def test_without_a_file_the_message_says_where_one_would_be_named(tmp_path):
    with pytest.raises(ConfigError, match="a dotenv file named by environments.stage.secrets_file"):
        resolve(environment(), [_svc("DB")], environ={})
    with pytest.raises(ConfigError, match="which does not exist"):
        resolve(_env(tmp_path, None), [_svc("DB")], environ={})


def test_resolved_values_are_scrubbed_from_output_and_kept_from_hooks(tmp_path, monkeypatch):
    env = _env(tmp_path, "HOOKS_NEVER_SEE=file-only-secret-1\n")
    monkeypatch.setenv("CI_SECRET_DB", "postgres://u:pw-from-ci@db/app")
    monkeypatch.setenv("COPY_OF_IT", "prefix postgres://u:pw-from-ci@db/app")
    resolve(env, [_svc("CI_SECRET_DB", "HOOKS_NEVER_SEE")])
    assert "file-only-secret-1" not in redact.safe("the value was file-only-secret-1")
    hook_env = hook_environ(HookContext("stage", "hello", "d1"))
    assert "CI_SECRET_DB" not in hook_env and "COPY_OF_IT" not in hook_env
    assert not any("pw-from-ci" in v or "file-only-secret-1" in v for v in hook_env.values())
    assert hook_env["DOCKSHIP_ENV"] == "stage"
