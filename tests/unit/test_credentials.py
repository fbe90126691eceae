"""Registry credentials from DOCKSHIP_REGISTRY_* and from Docker's config.json.

Everything runs against temporary config files and, for credential helpers,
a real `docker-credential-*` program written to a temporary PATH entry.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import stat
from pathlib import Path

import pytest

from dockship.credentials import Credentials, docker_config_path, registry_credentials
from dockship.errors import UsageError

REG = "10.77.0.1:5000"
SECRET = "s3cr3t-Pa55!"


def b64(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def write_config(directory: Path, config: dict | str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "config.json"
    path.write_text(config if isinstance(config, str) else json.dumps(config))
    return path


def assert_no_secret(text: str, secret: str = SECRET) -> None:
    assert secret not in text
    assert b64("u", secret) not in text
    assert base64.b64encode(secret.encode()).decode() not in text


# -- Credentials ------------------------------------------------------------

def test_repr_and_str_hide_the_password():
    creds = Credentials("deploy", SECRET, source="somewhere")
    for text in (repr(creds), str(creds), f"{creds}", repr([creds]), creds.describe()):
        assert_no_secret(text)
        assert "deploy" in text
    assert "********" in repr(creds)


def test_as_auth_config_is_what_docker_py_wants():
    assert Credentials("deploy", SECRET).as_auth_config() == {"username": "deploy", "password": SECRET}


def test_credentials_are_frozen_and_compare_without_source():
    creds = Credentials("a", "b", source="x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        creds.password = "c"  # type: ignore[misc]
    assert creds == Credentials("a", "b", source="y")
    assert creds != Credentials("a", "other")


# -- environment variables ----------------------------------------------------

def test_environment_variables_win_over_the_docker_config(tmp_path):
    config = write_config(tmp_path, {"auths": {REG: {"auth": b64("fromfile", "x")}}})
    creds = registry_credentials(REG, environ={"DOCKSHIP_REGISTRY_USER": "ci",
                                               "DOCKSHIP_REGISTRY_PASSWORD": SECRET},
                                 docker_config=config)
    assert creds == Credentials("ci", SECRET)
    assert "DOCKSHIP_REGISTRY_USER" in creds.source


@pytest.mark.parametrize("present, missing", [
    ("DOCKSHIP_REGISTRY_USER", "DOCKSHIP_REGISTRY_PASSWORD"),
    ("DOCKSHIP_REGISTRY_PASSWORD", "DOCKSHIP_REGISTRY_USER"),
])
def test_one_variable_alone_is_a_usage_error_naming_the_missing_one(tmp_path, present, missing):
    with pytest.raises(UsageError) as info:
        registry_credentials(REG, environ={present: SECRET}, docker_config=tmp_path / "none.json")
    message = str(info.value)
    assert f"{missing} is not" in message
    assert "\n" not in message
    assert_no_secret(message)


def test_empty_variables_count_as_unset(tmp_path):
    assert registry_credentials(REG, environ={"DOCKSHIP_REGISTRY_USER": "",
                                              "DOCKSHIP_REGISTRY_PASSWORD": ""},
                                docker_config=tmp_path / "none.json") is None


# -- config.json: where it is -----------------------------------------------------

def test_no_config_file_means_anonymous(tmp_path):
    assert registry_credentials(REG, environ={"HOME": str(tmp_path)}) is None


def test_config_found_through_DOCKER_CONFIG(tmp_path):
    write_config(tmp_path / "dc", {"auths": {REG: {"auth": b64("viaenv", SECRET)}}})
    environ = {"DOCKER_CONFIG": str(tmp_path / "dc"), "HOME": str(tmp_path / "home")}
    assert docker_config_path(environ) == tmp_path / "dc" / "config.json"
    assert registry_credentials(REG, environ=environ) == Credentials("viaenv", SECRET)


def test_config_found_in_home(tmp_path):
    write_config(tmp_path / ".docker", {"auths": {REG: {"auth": b64("viahome", SECRET)}}})
    creds = registry_credentials(REG, environ={"HOME": str(tmp_path)})
    assert creds == Credentials("viahome", SECRET)
    assert creds.source == str(tmp_path / ".docker" / "config.json")


# -- config.json: auths --------------------------------------------------------------

@pytest.mark.parametrize("key", [REG, f"https://{REG}", f"http://{REG}", f"https://{REG}/v1/"])
def test_auths_key_matches_with_or_without_scheme(tmp_path, key):
    config = write_config(tmp_path, {"auths": {key: {"auth": b64("deploy", SECRET)}}})
    assert registry_credentials(REG, environ={}, docker_config=config) == Credentials("deploy", SECRET)


def test_registry_given_with_a_scheme_matches_too(tmp_path):
    config = write_config(tmp_path, {"auths": {REG: {"auth": b64("deploy", SECRET)}}})
    assert registry_credentials(f"https://{REG}", environ={}, docker_config=config) == \
        Credentials("deploy", SECRET)


def test_exact_key_wins_over_a_key_with_scheme(tmp_path):
    config = write_config(tmp_path, {"auths": {f"https://{REG}": {"auth": b64("old", "x")},
                                               REG: {"auth": b64("new", SECRET)}}})
    assert registry_credentials(REG, environ={}, docker_config=config).username == "new"


def test_password_with_colons_survives(tmp_path):
    config = write_config(tmp_path, {"auths": {REG: {"auth": b64("deploy", "a:b:c")}}})
    assert registry_credentials(REG, environ={}, docker_config=config).password == "a:b:c"


def test_auths_username_and_password_fields(tmp_path):
    config = write_config(tmp_path, {"auths": {REG: {"username": "deploy", "password": SECRET}}})
    assert registry_credentials(REG, environ={}, docker_config=config) == Credentials("deploy", SECRET)


def test_other_registries_and_empty_entries_give_none(tmp_path):
    config = write_config(tmp_path, {"auths": {"other:5000": {"auth": b64("x", "y")},
                                               REG: {}}})
    assert registry_credentials(REG, environ={}, docker_config=config) is None
    assert registry_credentials("10.77.0.1:5001", environ={}, docker_config=config) is None


def test_identity_token_entries_are_not_credentials(tmp_path):
    config = write_config(tmp_path, {"auths": {REG: {"identitytoken": "tok"}}})
    assert registry_credentials(REG, environ={}, docker_config=config) is None


def test_bad_json_is_a_usage_error_naming_the_file(tmp_path):
    config = write_config(tmp_path, '{"auths": ')
    with pytest.raises(UsageError, match="not valid JSON") as info:
        registry_credentials(REG, environ={}, docker_config=config)
    assert str(config) in str(info.value)


def test_bad_auth_value_is_a_usage_error_without_the_value(tmp_path):
    bad = base64.b64encode(SECRET.encode()).decode()  # no ':' inside
    config = write_config(tmp_path, {"auths": {REG: {"auth": bad}}})
    with pytest.raises(UsageError, match="docker login") as info:
        registry_credentials(REG, environ={}, docker_config=config)
    assert_no_secret(str(info.value))
    assert bad not in str(info.value)


def test_empty_config_file_is_anonymous(tmp_path):
    assert registry_credentials(REG, environ={}, docker_config=write_config(tmp_path, "")) is None


# -- config.json: credential helpers ---------------------------------------------------

HELPER = """#!/bin/sh
# A docker credential helper: `get` reads a server address on stdin.
[ "$1" = get ] || exit 2
read server
echo "$server" >> "{log}"
case "$server" in
  {known}) printf '{{"ServerURL":"%s","Username":"{user}","Secret":"{secret}"}}' "$server" ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
"""


@pytest.fixture
def helper_path(tmp_path, monkeypatch):
    """Put programs docker-credential-{good,token} on PATH; return the log of asked servers."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "helper.log"
    for name, user in (("good", "helperuser"), ("token", "<token>")):
        script = bindir / f"docker-credential-{name}"
        script.write_text(HELPER.format(log=log, known=REG, user=user, secret=SECRET))
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    return log


def test_cred_helper_for_the_registry(tmp_path, helper_path):
    config = write_config(tmp_path, {"credHelpers": {REG: "good"}})
    creds = registry_credentials(REG, environ={}, docker_config=config)
    assert creds == Credentials("helperuser", SECRET)
    assert creds.source == "credential helper docker-credential-good"
    assert helper_path.read_text().split() == [REG]


def test_cred_helper_key_with_scheme(tmp_path, helper_path):
    config = write_config(tmp_path, {"credHelpers": {f"https://{REG}": "good"}})
    assert registry_credentials(REG, environ={}, docker_config=config).username == "helperuser"


def test_creds_store_is_the_default_helper(tmp_path, helper_path):
    config = write_config(tmp_path, {"credsStore": "good"})
    assert registry_credentials(REG, environ={}, docker_config=config).username == "helperuser"


def test_cred_helpers_win_over_creds_store(tmp_path, helper_path):
    config = write_config(tmp_path, {"credsStore": "missing-helper", "credHelpers": {REG: "good"}})
    assert registry_credentials(REG, environ={}, docker_config=config).username == "helperuser"


def test_helper_without_an_entry_falls_back_to_auths(tmp_path, helper_path):
    other = "10.77.0.2:5000"
    config = write_config(tmp_path, {"credsStore": "good",
                                     "auths": {other: {"auth": b64("fileuser", SECRET)}}})
    assert registry_credentials(other, environ={}, docker_config=config) == \
        Credentials("fileuser", SECRET)
    assert registry_credentials("10.77.0.3:5000", environ={}, docker_config=config) is None


def test_identity_token_from_a_helper_is_not_used(tmp_path, helper_path):
    config = write_config(tmp_path, {"credHelpers": {REG: "token"}})
    assert registry_credentials(REG, environ={}, docker_config=config) is None


def test_missing_helper_is_a_usage_error(tmp_path, helper_path):
    config = write_config(tmp_path, {"credsStore": "missing-helper"})
    with pytest.raises(UsageError) as info:
        registry_credentials(REG, environ={}, docker_config=config)
    message = str(info.value)
    assert "docker-credential-missing-helper" in message
    assert "DOCKSHIP_REGISTRY_USER" in message
    assert "\n" not in message


def test_environment_variables_skip_a_broken_helper(tmp_path, helper_path):
    config = write_config(tmp_path, {"credsStore": "missing-helper"})
    creds = registry_credentials(REG, environ={"DOCKSHIP_REGISTRY_USER": "ci",
                                               "DOCKSHIP_REGISTRY_PASSWORD": SECRET},
                                 docker_config=config)
    assert creds.username == "ci"
