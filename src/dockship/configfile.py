"""Writing a `dockship.toml` from plain Python data: the one config writer.

Code that writes configuration (the lab's ready config, the test and bench
fixtures) passes a dict shaped like the file, and `tomli_w` writes it. Why
not TOML put together from f-strings and `json.dumps`, as before: that is
TOML only by luck. JSON's escapes and TOML's differ (a control character
that `json.dumps(..., ensure_ascii=False)` leaves raw is invalid TOML), a
service or environment name with a dot or a space must be quoted in a
table header, and a line appended to the text lands in whichever table
came last. Here what `dockship.config.load` reads back is exactly the data
that was written, which the unit tests check.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import tomli_w


def render(data: Mapping[str, Any], *, comment: str = "") -> str:
    """The TOML text of `data`, after `comment` (each of its lines becomes a `#` line).

    Values may be str, int, float, bool, Path (written as its string), lists
    or tuples, and mappings; a mapping becomes a table. TOML has no null:
    leave a key out rather than give it None.
    """
    head = "".join(f"# {line}".rstrip() + "\n" for line in comment.splitlines())
    body = tomli_w.dumps(_plain(data, ""))
    return head + ("\n" if head and body else "") + body


def write(path: Path, data: Mapping[str, Any], *, comment: str = "") -> Path:
    """Write `data` as TOML to `path` (atomically; an unchanged file is left alone)."""
    text = render(data, comment=comment)
    if path.exists() and path.read_text() == text:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def _plain(value: Any, at: str) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{at}.{k}" if at else str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{at}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Path):
        return str(value)
    if value is None:
        raise TypeError(f"{at}: None has no TOML form; leave the key out")
    return value
