"""The Dockerfile template: loading it, and rendering its ``{{ name }}`` placeholders.

The renderer is deliberately tiny: a placeholder is ``{{ name }}`` (spaces
optional) on one line, and nothing else is special. An unknown or unclosed
placeholder is a `UsageError` naming the template, the line and the
placeholder, and listing the known ones. ``{{ '{{' }}`` and ``{{ '}}' }}``
write literal braces (Go templates in a HEALTHCHECK, say).

Values are checked when `TemplateValues` is made: none may break out of its
place in the Dockerfile (no newline; names, versions and the port have their
own grammars), and the ones that land in a shell command are shell-quoted.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

from packaging.version import InvalidVersion, Version

from dockship.errors import ConfigError, UsageError

__all__ = ["DEFAULT_TEMPLATE_SOURCE", "PLACEHOLDERS", "TemplateValues", "load_template",
           "pip_index_args", "render"]

#: Every placeholder a template may use.
PLACEHOLDERS = ("base_image", "package", "version", "requirement", "index_url", "pip_index_args",
                "port", "cmd_json", "image", "user", "dependency_layers", "package_layer")
DEFAULT_TEMPLATE_SOURCE = "dockship's default Dockerfile.template"

# {{ name }}, or a quoted literal brace pair: {{ '{{' }} / {{ "}}" }}.
_PLACEHOLDER_RE = re.compile(r"""\{\{\s*(?:(['"])(\{\{|\}\})\1|(.*?))\s*\}\}""")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PACKAGE_RE = re.compile(r"[A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9]", re.IGNORECASE)   # PEP 508 names
_USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")                                     # useradd's default rule
_NO_SPACE_RE = re.compile(r"\S+")


@dataclass(frozen=True)
class TemplateValues:
    """What a Dockerfile template is rendered with.

    `version` is the exact version string to pin; `requirement` pins it for pip
    (``package==version``, or ``===`` with `exact`: PEP 440's ``==1.0`` also
    matches a local build ``1.0+abc``, which pip would then prefer). `command`
    empty means the package's console script named like the package.
    """

    base_image: str
    package: str
    version: str
    index_url: str
    port: int
    command: tuple[str, ...]
    image: str
    user: str = "app"
    exact: bool = False     # the index also holds a local build of this version
    dependency_groups: int = 0   # layers of dependencies in the wheelhouse (wheelhouse/01, 02, ...)

    def __post_init__(self) -> None:
        object.__setattr__(self, "command", tuple(self.command))
        object.__setattr__(self, "version", str(self.version))
        for key in ("base_image", "image", "index_url"):
            value = getattr(self, key)
            if not isinstance(value, str) or not _NO_SPACE_RE.fullmatch(value):
                raise UsageError(f"template value {key} must be one word without spaces, got {value!r}")
        if not _PACKAGE_RE.fullmatch(self.package):
            raise UsageError(f"template value package: {self.package!r} is not a valid package name")
        try:
            Version(self.version)
        except InvalidVersion:
            raise UsageError(f"template value version: {self.version!r} is not a PEP 440 version") from None
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise UsageError(f"template value port must be a number from 1 to 65535, got {self.port!r}")
        if not _USER_RE.fullmatch(self.user):
            raise UsageError(f"template value user: {self.user!r} is not a valid user name"
                             " (lower-case letters, digits, '_', '-')")
        if any(not isinstance(arg, str) or "\n" in arg or "\r" in arg for arg in self.command):
            raise UsageError(f"template value command: every argument must be a one-line string,"
                             f" got {list(self.command)!r}")
        if isinstance(self.dependency_groups, bool) or not isinstance(self.dependency_groups, int) \
                or not 0 <= self.dependency_groups <= 99:
            raise UsageError("template value dependency_groups must be a number from 0 to 99,"
                             f" got {self.dependency_groups!r}")
        if urlsplit(self.index_url).scheme not in ("http", "https"):
            raise UsageError(f"template value index_url: {self.index_url!r} is not an http(s) URL")

    @property
    def cmd(self) -> tuple[str, ...]:
        """The container's command: `command`, or the console script named like the package."""
        return self.command or (self.package,)

    def as_mapping(self) -> dict[str, str]:
        """The strings that replace each placeholder."""
        return {
            "base_image": self.base_image,
            "package": self.package,
            "version": self.version,
            "requirement": f"{self.package}{'===' if self.exact else '=='}{self.version}",
            "index_url": self.index_url,
            "pip_index_args": pip_index_args(self.index_url),
            "port": str(self.port),
            "cmd_json": json.dumps(list(self.cmd)),
            "image": self.image,
            "user": self.user,
            "dependency_layers": dependency_layers(self.dependency_groups),
            "package_layer": PACKAGE_LAYER,
        }


# The wheelhouse in the build context (wheelhouse.context_tar) is installed with no index and
# every file's hash: one COPY + RUN per dependency group, then the package's own wheel, the
# requirements of the whole set (so pip checks nothing is missing) and the pin file.
_INSTALL = "python3 -m pip install --no-cache-dir --no-index --require-hashes"
PACKAGE_LAYER = ("COPY wheelhouse/service/ /opt/dockship/\n"
                 f"RUN {_INSTALL} --find-links /opt/dockship -r /opt/dockship/requirements.txt")


def dependency_layers(groups: int) -> str:
    """The Dockerfile lines that install dependency groups 1..`groups`, one layer pair each."""
    if not groups:
        return "# (no dependencies)"
    return "\n".join(f"COPY wheelhouse/{i:02d}/ /opt/dockship/wheelhouse/{i:02d}/\n"
                     f"RUN {_INSTALL} --no-deps --find-links /opt/dockship/wheelhouse/{i:02d}"
                     f" -r /opt/dockship/wheelhouse/{i:02d}/requirements.txt"
                     for i in range(1, groups + 1))


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def pip_index_args(index_url: str) -> str:
    """pip's options for `index_url`, shell-quoted: ``--index-url URL``.

    Never ``--trusted-host``: trusting a plain-http index on another host is a
    decision its owner writes into the template, not one dockship makes for them
    (design §8, transport).
    """
    return " ".join(shlex.quote(a) for a in ("--index-url", index_url))


def render(template_text: str, values: TemplateValues, *, source: str) -> str:
    """Replace every ``{{ name }}`` of `template_text`; `source` names the template in errors."""
    mapping = values.as_mapping()
    known = ", ".join(PLACEHOLDERS)
    out: list[str] = []
    for lineno, line in enumerate(template_text.splitlines(keepends=True), start=1):
        pos = 0
        while True:
            start = line.find("{{", pos)
            if start < 0:
                out.append(line[pos:])
                break
            m = _PLACEHOLDER_RE.match(line, start)
            if m is None:
                raise UsageError(f"{source}, line {lineno}: '{{{{' without a closing '}}}}'"
                                 f" (placeholders are {{{{ name }}}} on one line; known: {known})")
            literal, inner = m.group(2), (m.group(3) or "").strip()
            out.append(line[pos:start])
            if literal:
                out.append(literal)
            elif inner in mapping:
                out.append(mapping[inner])
            else:
                what = f"placeholder {{{{ {inner} }}}}" if _NAME_RE.fullmatch(inner) \
                    else f"placeholder {m.group(0)!r}"
                raise UsageError(f"{source}, line {lineno}: unknown {what}; known: {known}")
            pos = m.end()
    return "".join(out)


def load_template(path: Path | None) -> tuple[str, str]:
    """The template's text and a name for it in messages: the file at `path`,
    or dockship's default when `path` is None.

    A missing or unreadable file is a `ConfigError` (a `UsageError`) on the
    key ``build.template``.
    """
    if path is None:
        text = resources.files("dockship").joinpath("Dockerfile.template").read_text(encoding="utf-8")
        return text, DEFAULT_TEMPLATE_SOURCE
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"build.template: {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"build.template: {path} is a directory, not a Dockerfile template") from None
    except UnicodeDecodeError:
        raise ConfigError(f"build.template: {path} is not UTF-8 text") from None
    except OSError as e:
        raise ConfigError(f"build.template: cannot read {path}: {e.strerror or e}") from None
    return text, str(path)
