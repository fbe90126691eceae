"""`dockship config check` and `config show`: the configuration as dockship understood it.

`check` is the offline validation every command starts with, on its own, for
a pre-commit hook or a CI step: exit 0, or 2 with every problem listed.
`show` prints the settings after defaults were filled in, so "what will it
actually use?" has an answer without reading code. Credentials in URLs are
masked; secret values are never part of the loaded configuration (only
their names are), so they cannot be shown.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dockship.config import Config
from dockship.redact import redact_url


def settings(config: Config, env: str | None = None) -> dict[str, Any]:
    """Plain data of the resolved configuration (one environment's, with `env`)."""
    data = _plain(config)
    data.pop("path", None)
    data["index_url"] = redact_url(config.index_url)
    for env_data in data["environments"].values():    # a webhook URL often is its own token
        if "webhook" in env_data.get("notify", {}):
            env_data["notify"]["webhook"] = redact_url(env_data["notify"]["webhook"])
    if env is not None:
        config.environment(env)          # an unknown name is exit 2, with "did you mean"
        data["environments"] = {env: data["environments"][env]}
    return data


def summary(config: Config, env: str | None = None) -> str:
    envs = [env] if env is not None else sorted(config.environments)
    return (f"{config.path}: valid; {len(config.services)} service(s) "
            f"({', '.join(sorted(config.services)) or 'none'}), environment(s): "
            f"{', '.join(envs) or 'none'}")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if getattr(value, f.name) is not None}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return value
