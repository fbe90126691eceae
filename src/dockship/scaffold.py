"""`dockship init`: a commented `dockship.toml` and the `Dockerfile.template` to start from.

The config written is the documented example shipped with dockship (the same
file as `examples/dockship.toml`: every key, with what it does), and the
template is the default one dockship builds with, so a new project starts
from exactly what dockship would use and edits from there. Nothing is ever
overwritten: if either file exists, nothing is written at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from dockship.errors import UsageError

EXAMPLE_CONFIG = "dockship.example.toml"     # packaged copy of examples/dockship.toml
TEMPLATE = "Dockerfile.template"


@dataclass(frozen=True)
class Scaffold:
    config: Path
    template: Path


def packaged(name: str) -> str:
    return resources.files("dockship").joinpath(name).read_text(encoding="utf-8")


def uses_template(example: str) -> str:
    """The example with its `build.template` line switched on: the project's own copy is used."""
    line = '# template = "Dockerfile.template"'
    if line not in example:
        raise AssertionError(f"the packaged {EXAMPLE_CONFIG} lost its line {line!r}")
    return example.replace(line, line[2:], 1)


def init(config: Path) -> Scaffold:
    """Write the example config at `config` and the template beside it; refuse to overwrite."""
    out = Scaffold(config, config.parent / TEMPLATE)
    there = [str(p) for p in (out.config, out.template) if p.exists() or p.is_symlink()]
    if there:
        raise UsageError(f"{' and '.join(there)} already exist{'s' if len(there) == 1 else ''}; "
                         "dockship init never overwrites: move it away or edit it")
    if not config.parent.is_dir():
        raise UsageError(f"{config.parent} is not a directory; create it first")
    texts = {out.config: uses_template(packaged(EXAMPLE_CONFIG)), out.template: packaged(TEMPLATE)}
    written: list[Path] = []
    try:
        for path, text in texts.items():
            with path.open("x", encoding="utf-8") as f:    # "x": a file that appeared meanwhile wins
                f.write(text)
            written.append(path)
    except FileExistsError as exc:
        for path in written:
            path.unlink()
        raise UsageError(f"{exc.filename} appeared while writing; nothing was written") from None
    return out
