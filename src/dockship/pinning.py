"""Pinning a release: its own wheel, then its dependencies, resolved once per index state.

The package's own wheel comes straight from the index (the file that suits the
base image), and its `Requires-Dist` lines are read from the wheel itself. The
dependencies are resolved by pip (`wheelhouse.pin_all`) only when needed: a
resolution of the same requirements for the same interpreter is kept in the
user's cache with the sha256 of every pinned project's index page, and reused
while each of those pages is byte for byte what it was. pip's resolution
depends on those pages and on files named by their sha256, so a new release
of any pinned dependency (a changed page) makes pip resolve again. This is
what makes a new release of a service, or a no-op rebuild, cost a few page
reads instead of a pip run that downloads every wheel for its metadata.

A package the index has only as an sdist, and a set that needed sdists built,
take the full pip path every time (their wheels come from the builder).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from email.parser import Parser
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from dockship.errors import UsageError
from dockship.index import IndexClient, PackageFile, Release, page_digests
from dockship.resolve import Pin, without_auth
from dockship.target import Target
from dockship.wheelhouse import PinnedSet, Wheel, cache_dir, fetch, pin_all

_FORMAT = 1


def own_wheel(release: Release, target: Target) -> PackageFile | None:
    """The release's wheel that the target prefers (its tags are in preference order)."""
    rank = {tag: i for i, tag in enumerate(target.tags)}

    def best(f: PackageFile) -> int:
        parts = f.filename[:-4].split("-")
        return min((rank.get(f"{p}-{a}-{pl}", len(rank)) for p in parts[-3].split(".")
                    for a in parts[-2].split(".") for pl in parts[-1].split(".")), default=len(rank))

    wheels = [f for f in release.files if f.kind == "wheel" and target.accepts(f.filename)]
    return min(wheels, key=lambda f: (best(f), f.filename)) if wheels else None


def wheel_requirements(path: Path) -> tuple[list[str], str | None]:
    """A wheel's Requires-Dist lines and Requires-Python, read from its METADATA."""
    with zipfile.ZipFile(path) as z:
        names = [n for n in z.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
        if len(names) != 1:
            raise UsageError(f"{path.name} is not a valid wheel (it has {len(names)} METADATA files)")
        meta = Parser().parsestr(z.read(names[0]).decode("utf-8", errors="replace"))
    return sorted(meta.get_all("Requires-Dist") or []), meta.get("Requires-Python")


def pin_release(index_url: str, release: Release, requirement: str, target: Target, *,
                build_wheel: Callable[[Pin, Path], Wheel] | None = None) -> PinnedSet:
    """The pinned set of `release` (`requirement` pins it exactly) for `target`."""
    own = own_wheel(release, target)
    if own is None or not own.sha256:
        return pin_all(index_url, requirement, target, build_wheel=build_wheel)
    pin = Pin(name=release.name, version=str(release.version), filename=own.filename,
              url=without_auth(own.url), sha256=own.sha256)
    requires, requires_python = wheel_requirements(fetch(index_url, pin))
    _check_python(release, requires_python, target)
    deps = _dependencies(index_url, requires, target, build_wheel)
    return PinnedSet(pins=tuple(sorted((*deps.pins, pin), key=lambda p: p.name)), built=deps.built)


def _check_python(release: Release, requires_python: str | None, target: Target) -> None:
    if not requires_python:
        return
    try:
        ok = SpecifierSet(requires_python).contains(Version(target.version), prereleases=True)
    except InvalidSpecifier:
        return
    if not ok:
        raise UsageError(f"{release.name} {release.version} requires Python {requires_python};"
                         f" the base image (build.base_image) runs Python {target.version}")


def _dependencies(index_url: str, requires: Sequence[str], target: Target,
                  build_wheel: Callable[[Pin, Path], Wheel] | None) -> PinnedSet:
    if not requires:
        return PinnedSet(())
    key = hashlib.sha256(json.dumps([_FORMAT, list(requires), target.version, list(target.tags)])
                         .encode()).hexdigest()
    cached = cache_dir("resolved") / f"{key}.json"
    with IndexClient(index_url) as index:
        reused = _reuse(cached, index)
        if reused is not None:
            return reused
        pinned = pin_all(index_url, list(requires), target, build_wheel=build_wheel)
        if not pinned.built:
            pages = page_digests(index, [p.name for p in pinned.pins])
            _store(cached, pinned, pages)
    return pinned


def _reuse(cached: Path, index: IndexClient) -> PinnedSet | None:
    try:
        data = json.loads(cached.read_text())
        pins = tuple(Pin(**p) for p in data["pins"])
        pages = dict(data["pages"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not pins or page_digests(index, pages) != pages:
        return None
    return PinnedSet(pins=pins)


def _store(cached: Path, pinned: PinnedSet, pages: dict[str, str]) -> None:
    data = {"pins": [dataclasses.asdict(p) for p in pinned.pins], "pages": pages}
    try:
        fd, tmp = tempfile.mkstemp(dir=cached.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, cached)
    except OSError:
        pass
