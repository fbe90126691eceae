"""Registry credentials: from dockship's environment variables or the user's Docker config.

Lookup order for a registry `HOST[:PORT]`:

1. `DOCKSHIP_REGISTRY_USER` and `DOCKSHIP_REGISTRY_PASSWORD` (both or neither);
2. the Docker client config (`$DOCKER_CONFIG/config.json`, else
   `~/.docker/config.json`): a credential helper named for the registry in
   `credHelpers`, else the default `credsStore`, else an `auths` entry
   (base64 `auth`, or `username`/`password`), the key matched with or
   without an `http(s)://` scheme and path, as `docker login` writes it;
3. nothing: `None`, the registry is used anonymously.

A credential helper is a program of the user's; dockship runs it itself
(not through docker-py's `Store`, which waits for it forever) and gives it
`HELPER_TIMEOUT` seconds: a helper that hangs (a keychain waiting for a
prompt no one sees) is stopped, with its process group, and named in the error.

The password never appears in a repr, a log line or an error message.
"""

from __future__ import annotations

import binascii
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from docker import auth as docker_auth

from dockship.redact import remember
from dockship.errors import UsageError, printable

ENV_USER = "DOCKSHIP_REGISTRY_USER"
ENV_PASSWORD = "DOCKSHIP_REGISTRY_PASSWORD"
HELPER_TIMEOUT = 30.0    # seconds a docker-credential-* helper has to answer
_NOT_FOUND = "credentials not found in native keychain"   # the helpers' agreed phrase



def login_hint(registry: str) -> str:
    """How to give dockship credentials for `registry`, for the end of an error message."""
    return f"set {ENV_USER} and {ENV_PASSWORD}, or run `docker login {registry}`"


@dataclass(frozen=True)
class Credentials:
    """A user name and password (or token) for one registry."""

    username: str
    password: str
    # Where they came from, for error messages ("DOCKSHIP_REGISTRY_USER/PASSWORD",
    # "/root/.docker/config.json", "credential helper docker-credential-pass").
    source: str = field(default="", compare=False)

    def __repr__(self) -> str:
        source = f", source={self.source!r}" if self.source else ""
        return f"Credentials(username={self.username!r}, password='********'{source})"

    __str__ = __repr__

    def as_auth_config(self) -> dict[str, str]:
        """The `auth_config` dict docker-py's push/pull expect."""
        return {"username": self.username, "password": self.password}

    def describe(self) -> str:
        """`user 'NAME' (from SOURCE)`: safe to show, never the password."""
        where = f" (from {self.source})" if self.source else ""
        return f"user {self.username!r}{where}"


def docker_config_path(environ: Mapping[str, str] = os.environ) -> Path:
    """The Docker client config file the docker CLI would read."""
    config_dir = environ.get("DOCKER_CONFIG")
    if config_dir:
        return Path(config_dir).expanduser() / "config.json"
    home = environ.get("HOME")
    return (Path(home) if home else Path.home()) / ".docker" / "config.json"


def registry_credentials(registry: str, *, environ: Mapping[str, str] = os.environ,
                         docker_config: Path | None = None,
                         helper_timeout: float = HELPER_TIMEOUT) -> Credentials | None:
    """Credentials for `registry` (`HOST[:PORT]`), or None to go anonymous.

    `docker_config` is the path of a Docker `config.json`; by default the one
    the docker CLI uses (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`).
    Raises UsageError when only one of the two environment variables is set,
    the config file is unreadable, or its credential helper fails or gives no
    answer within `helper_timeout` seconds.
    """
    user = environ.get(ENV_USER)
    password = environ.get(ENV_PASSWORD)
    if user or password:
        if not user:
            raise UsageError(f"{ENV_PASSWORD} is set but {ENV_USER} is not: set both, or neither "
                             "to use the Docker config's credentials")
        if not password:
            raise UsageError(f"{ENV_USER} is set but {ENV_PASSWORD} is not: set both, or neither "
                             "to use the Docker config's credentials")
        remember(password)
        return Credentials(user, password, source=f"{ENV_USER}/{ENV_PASSWORD}")

    path = docker_config if docker_config is not None else docker_config_path(environ)
    config = _read_docker_config(path)
    if config is None:
        return None
    host = _hostname(registry)

    found = _from_credential_store(host, config, path, environ, helper_timeout)
    found = found if found is not None else _from_auths(host, config, path)
    if found is not None:     # whatever prints from now on never shows it (redact.py)
        remember(found.password)
    return found


def _read_docker_config(path: Path) -> dict | None:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise UsageError(f"cannot read Docker config {path}: {exc.strerror or exc}") from None
    if not text.strip():
        return None
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"Docker config {path} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise UsageError(f"Docker config {path} is not a JSON object")
    return config


def _hostname(registry: str) -> str:
    """`https://host:5000/v2/` → `host:5000`, the form docker keys its config by."""
    return docker_auth.convert_to_hostname(registry.strip()).rstrip("/")


def _from_credential_store(host: str, config: dict, path: Path, environ: Mapping[str, str],
                           timeout: float) -> Credentials | None:
    helpers = config.get("credHelpers") or {}
    store = config.get("credsStore") or None
    if not isinstance(helpers, dict):
        raise UsageError(f"Docker config {path}: credHelpers must be an object")
    if not helpers and not store:
        return None
    # As docker does: the helper named for this registry in credHelpers (its
    # key written with or without a scheme), else the default credsStore.
    name = helpers.get(host) or next(
        (value for key, value in helpers.items() if _hostname(key) == host), None) or store
    if not name:
        return None
    program = f"docker-credential-{name}"
    answer = _ask_helper(program, host, {**os.environ, **environ}, timeout,
                         failed=f"credential helper {program} (from {path}) failed for {host}")
    if answer is None:
        return None
    try:
        data = json.loads(answer)
        username, secret = data.get("Username") or "", data.get("Secret") or ""
        if not isinstance(username, str) or not isinstance(secret, str):
            raise TypeError(username)
    except (ValueError, AttributeError, TypeError):
        raise UsageError(f"credential helper {program} (from {path}) gave an answer for "
                         f"{host} that is not its JSON credentials format") from None
    if username == docker_auth.TOKEN_USERNAME:
        # An identity (refresh) token: only the engine's own OAuth flow uses it.
        return None
    if not username and not secret:
        return None
    return Credentials(username, secret, source=f"credential helper {program}")


def _ask_helper(program: str, host: str, env: dict[str, str], timeout: float, *,
                failed: str) -> bytes | None:
    """`program get` with `host` on stdin: its answer, None when it has no entry for `host`.

    The helper runs in its own process group so that a hung one is stopped
    whole (a shell script's children too) when `timeout` passes.
    """
    exe = shutil.which(program, path=env.get("PATH"))
    if exe is None:
        raise UsageError(f"{failed}: {program} is not installed or not on PATH; fix it, or "
                         f"{login_hint(host)}")
    try:
        proc = subprocess.Popen([exe, "get"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, start_new_session=True)
    except OSError as exc:
        raise UsageError(f"{failed}: cannot run it ({exc.strerror or exc}); fix it, or "
                         f"{login_hint(host)}") from None
    try:
        out, err = proc.communicate(host.encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.wait()
        raise UsageError(f"{failed}: no answer within {timeout:g} s; fix it, or "
                         f"{login_hint(host)}") from None
    if proc.returncode == 0:
        return out
    said = _one_line((out + err).decode(errors="replace"))
    if _NOT_FOUND in said:
        return None
    raise UsageError(f"{failed}: {printable(said[:300]) or f'exit status {proc.returncode}'}; "
                     f"fix it, or {login_hint(host)}")


def _from_auths(host: str, config: dict, path: Path) -> Credentials | None:
    auths = config.get("auths") or {}
    if not isinstance(auths, dict):
        raise UsageError(f"Docker config {path}: auths must be an object")
    # An exact key first, then any key that names the same host (with a
    # scheme or a path, as older `docker login` versions wrote them).
    keys = [k for k in auths if k == host] + [k for k in auths if k != host and _hostname(k) == host]
    for key in keys:
        entry = auths[key]
        if not isinstance(entry, dict):
            raise UsageError(f"Docker config {path}: auths.{key} must be an object")
        if entry.get("auth"):
            try:
                username, password = docker_auth.decode_auth(entry["auth"])
            except (ValueError, TypeError, binascii.Error):
                raise UsageError(f"Docker config {path}: auths.{key}.auth is not base64 of "
                                 f"'user:password'; run `docker login {host}` again") from None
            return Credentials(username, password, source=str(path))
        if entry.get("username") and entry.get("password"):
            return Credentials(str(entry["username"]), str(entry["password"]), source=str(path))
        # An empty entry ({}): docker login stored the secret in a helper,
        # already asked above; an identitytoken is only for the engine's OAuth.
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())
