"""Service secrets: the values of `services.X.secrets`, found before anything is touched.

A secret is an environment variable the config names but never holds. Its
value comes from, in this order:

1. dockship's own environment (`DATABASE_URL=… dockship roll …`, a CI
   secret store): it wins, so a pipeline can override a file it cannot edit;
2. the environment's `secrets_file` (dotenv format, relative to the config
   file), read with python-dotenv's parser: `KEY=value`, `export KEY=value`,
   single or double quotes (escapes and line breaks inside double quotes),
   `#` comments. No `${VAR}` expansion: a value is taken as written, so a
   secret never pulls in another variable of this machine. A file that does
   not exist is fine as long as dockship's environment holds every secret.

A secret set but empty counts as set. Values reach the container's
environment and nothing else: each one is handed to `redact.remember` (so
every output path scrubs it and hooks never see a variable holding it) and
the names to `redact.remember_names` (hooks never get them). A missing
secret is a ConfigError (exit 2) naming the service, the variable and both
places it may come from; a malformed file names the line, never its text.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

from dotenv.parser import parse_stream

from dockship import checks, redact
from dockship.config import Environment, Service
from dockship.errors import ConfigError, printable


def read_dotenv(path: Path, setting: str) -> dict[str, str] | None:
    """The variables of a dotenv file (later lines win), or None if it does not exist.

    `setting` is the key path naming the file, for messages."""
    where = f"{setting}: {printable(str(path))}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise ConfigError(f"{where} is not UTF-8 text; save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read: {exc.strerror}") from None
    values: dict[str, str] = {}
    problems = []
    for binding in parse_stream(io.StringIO(text)):
        line = binding.original.line
        if binding.error:
            problems.append(f"{where}, line {line}: not KEY=VALUE (a quote left open?)")
        elif binding.key is None:
            continue                                    # a blank or comment line
        elif checks.env_var_problem(binding.key):
            problems.append(f"{where}, line {line}: the name is not an environment variable "
                            "name (letters, digits and '_', not starting with a digit)")
        elif binding.value is None:
            problems.append(f"{where}, line {line}: {binding.key} has no '='; write "
                            f"{binding.key}=VALUE")
        else:
            values[binding.key] = binding.value
    if problems:
        raise ConfigError(problems)
    return values


def resolve(env: Environment, services: Sequence[Service],
            environ: Mapping[str, str] | None = None) -> dict[str, Mapping[str, str]]:
    """Each service's secret values in `env`; one ConfigError listing every missing one.

    Every value found is remembered as secret for the rest of the process."""
    environ = os.environ if environ is None else environ
    setting = f"environments.{env.name}.secrets_file"
    from_file: dict[str, str] | None = None
    if env.secrets_file is not None and any(
            name not in environ for svc in services for name in svc.secrets):
        from_file = read_dotenv(env.secrets_file, setting)
    out: dict[str, Mapping[str, str]] = {}
    missing = []
    for svc in services:
        values = {}
        for name in svc.secrets:
            if name in environ:
                values[name] = environ[name]
            elif from_file is not None and name in from_file:
                values[name] = from_file[name]
            else:
                missing.append(f"services.{svc.name}.secrets: {name} is not set; set it in "
                               f"dockship's environment or in {_file_hint(env, from_file)}")
        redact.remember(*values.values())
        redact.remember_names(*svc.secrets)
        out[svc.name] = MappingProxyType(values)
    if missing:
        raise ConfigError(missing)
    return out


def _file_hint(env: Environment, found: dict[str, str] | None) -> str:
    setting = f"environments.{env.name}.secrets_file"
    if env.secrets_file is None:
        return f"a dotenv file named by {setting}"
    state = "" if found is not None else ", which does not exist"
    return f"{setting} ({printable(str(env.secrets_file))}{state})"
