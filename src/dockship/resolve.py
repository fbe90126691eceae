"""The exact set of files an image installs, chosen on the build side by pip's resolver.

pip runs on the build host (the index credentials stay there, in pip's
environment, never on its command line), restricted to the base image's
Python version and wheel tags (`target.Target`), binary files only, in
`--dry-run --report` mode: the report names every file with the sha256 the
index gave. Nothing is installed and nothing is built here.

When pip finds no file for a requirement, the index is asked why, so the
message names the package and the cause: missing from the index (exit 2),
no wheel for the image's platform (exit 2), or only an sdist, which the
caller may build into a wheel (`NeedsSdist`) and offer back through
`find_links`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from dockship.errors import DockshipError, Unreachable, UsageError
from dockship.index import HashMismatch, IndexClient, PackageFile
from dockship.target import Target

RESOLVE_TIMEOUT = 300.0     # seconds for the whole resolution (pip's own socket timeout is 15 s)
_NO_MATCH_RE = re.compile(r"No matching distribution found for (\S+)")
# pip's hash failure: "    dep-b>=1 from http://.../dep_b-1.2-py3-none-any.whl#sha256=… (from …):"
# then "Expected sha256 …" and "Got …".
_HASH_RE = re.compile(r"DO NOT MATCH THE HASHES.*?\n\s+(\S+) from (\S+?)(?:#\S*)?\s.*?"
                      r"Expected sha256 ([0-9a-f]+)\s+Got\s+([0-9a-f]+)", re.S)
_NETWORK_HINTS = ("Max retries exceeded", "Connection refused", "Read timed out", "NewConnectionError",
                  "Temporary failure in name resolution", "ConnectTimeoutError")


@dataclass(frozen=True)
class Pin:
    """One file the image installs: its distribution, version and the index file's sha256."""

    name: str            # canonical (PEP 503)
    version: str
    filename: str        # as the index (or, for a built sdist, the index's sdist) names it
    url: str             # where it is downloaded from, without credentials
    sha256: str          # the index file's sha256 (an sdist's, for a wheel built from it)

    def line(self) -> str:
        """Its line in the image's pin file: stable text that the pins' digest is taken over."""
        return f"{self.name}=={self.version} {self.filename} sha256:{self.sha256}"


class NeedsSdist(DockshipError):
    """A requirement that only an sdist on the index can satisfy; the caller builds it."""

    def __init__(self, requirement: Requirement, sdist: PackageFile):
        self.requirement = requirement
        self.sdist = sdist
        super().__init__(f"{requirement} is on the index only as an sdist ({sdist.filename})")


def pins_text(pins: Sequence[Pin]) -> str:
    return "".join(p.line() + "\n" for p in sorted(pins, key=lambda p: p.name))


def parse_report(report: Mapping, *, index_url: str) -> list[Pin]:
    """The pins of pip's installation report (pure). Files without a sha256 from the index
    keep an empty `sha256`: the caller hashes them when it downloads them."""
    pins = []
    for item in report.get("install", []):
        meta = item.get("metadata") or {}
        info = item.get("download_info") or {}
        url = str(info.get("url") or "")
        hashes = (info.get("archive_info") or {}).get("hashes") or {}
        name, version = meta.get("name"), meta.get("version")
        if not (name and version and url):
            raise DockshipError(f"pip's report on index {_shown(index_url)} lacks a name, version"
                                f" or URL for {item!r:.200}")
        filename = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
        pins.append(Pin(name=canonicalize_name(name), version=str(version), filename=filename,
                        url=without_auth(url), sha256=str(hashes.get("sha256", "")).lower()))
    return sorted(pins, key=lambda p: p.name)


def without_auth(url: str) -> str:
    """`url` without user name and password: fit for messages, pins and caches."""
    parts = urlsplit(url)
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


_shown = without_auth


def _pip_env(index_url: str) -> dict[str, str]:
    """pip's environment: the index (credentials included) and nothing from the user's pip setup."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update(PIP_INDEX_URL=index_url, PIP_CONFIG_FILE=os.devnull, PIP_NO_INPUT="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_COLOR="1", PIP_KEYRING_PROVIDER="disabled")
    return env


def scrub(text: str, index_url: str) -> str:
    """`text` with the index's user name and password taken out, whatever pip printed."""
    parts = urlsplit(index_url)
    for secret in (parts.password, parts.username):
        if secret:
            text = text.replace(secret, "***").replace(unquote(secret), "***")
    return text


def resolve(index_url: str, requirement: str | Sequence[str], target: Target, *,
            find_links: Path | None = None, timeout: float = RESOLVE_TIMEOUT) -> list[Pin]:
    """Every file that installing `requirement` (one, or several together) on `target`
    takes, dependencies included."""
    requirements = [requirement] if isinstance(requirement, str) else list(requirement)
    if not requirements:
        return []
    shown_req = ", ".join(requirements)
    with tempfile.TemporaryDirectory(prefix="dockship-resolve-") as tmp:
        report = Path(tmp) / "report.json"
        argv = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
                "--quiet", "--report", str(report), "--only-binary", ":all:", "--timeout", "15",
                *target.pip_args()]
        if find_links is not None:
            argv += ["--find-links", str(find_links)]
        argv += ["--", *requirements]
        try:
            proc = subprocess.run(argv, env=_pip_env(index_url), capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL, cwd=tmp)
        except subprocess.TimeoutExpired:
            raise Unreachable(f"resolving {shown_req} on index {_shown(index_url)} took more than"
                              f" {timeout:.0f}s") from None
        if proc.returncode != 0:
            raise _failure(scrub(proc.stderr + proc.stdout, index_url), index_url, target)
        return parse_report(json.loads(report.read_text()), index_url=index_url)


def _failure(output: str, index_url: str, target: Target) -> DockshipError:
    """What pip's failure means, asked of the index when pip found no file."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    last = next((ln for ln in reversed(lines) if ln.startswith("ERROR:")), lines[-1] if lines else "")
    shown = _shown(index_url)
    bad = _HASH_RE.search(output)
    if bad is not None:
        return HashMismatch(f"dependency {canonicalize_name(re.split(r'[<>=!~;[ ]', bad.group(1))[0])}:"
                            f" {_shown(bad.group(2))} does not have the sha256 index {shown} lists"
                            f" for it ({bad.group(3)}, got {bad.group(4)}); nothing was built or pushed")
    if any(hint in output for hint in _NETWORK_HINTS):
        return Unreachable(f"index {shown} did not answer while resolving: {last[:300]}")
    m = _NO_MATCH_RE.search(output)
    if m is None:
        return UsageError(f"the dependencies cannot be resolved on index {shown}: {last[:400]}")
    try:
        req = Requirement(m.group(1))
    except InvalidRequirement:
        return UsageError(f"the dependencies cannot be resolved on index {shown}: {last[:400]}")
    return explain_missing(IndexClient(index_url), req, target)


def explain_missing(index: IndexClient, req: Requirement, target: Target) -> DockshipError:
    """Why no file of the index satisfies `req` on `target` (the index's client is closed after)."""
    shown = _shown(index.url)
    with index:
        try:
            files = index.project_files(req.name)
        except UsageError:
            return UsageError(f"dependency {req.name} ({req}) is not on index {shown}; publish it"
                              " there (with its own dependencies)")
    matching = [f for f in files if req.specifier.contains(f.version, prereleases=True)]
    if not matching:
        versions = ", ".join(sorted({str(f.version) for f in files})) or "none"
        return UsageError(f"dependency {req.name}: no version on index {shown} satisfies {req}"
                          f" (it has: {versions})")
    wheels = [f for f in matching if f.kind == "wheel"]
    sdists = [f for f in matching if f.kind == "sdist"]
    if any(target.accepts(w.filename) for w in wheels) and not sdists:
        return UsageError(f"dependency {req.name} ({req}) cannot be installed together with the"
                          f" rest (its Requires-Python, or a conflict) on Python {target.version}")
    if sdists:
        newest = max(sdists, key=lambda f: (f.version, f.filename))
        return NeedsSdist(req, newest)
    tags = sorted({w.filename.rsplit("-", 3)[-3:][-1].removesuffix(".whl") for w in wheels})
    return UsageError(f"dependency {req.name} ({req}) has no wheel for the image's platform"
                      f" (Python {target.version}, {target.tags[0]}) and no sdist on index {shown};"
                      f" its wheels are for: {', '.join(tags)}")
