"""Package versions ↔ image tags (design §4): pure functions, no I/O.

The tag of a version is its normalized PEP 440 form with ``+`` → ``-`` and
``!`` → ``_``. Normalized versions contain neither ``-`` nor ``_``, so the
mapping reverses exactly. Ordering always uses `packaging.version.Version`.

A tag is a *version tag* only if it is exactly the tag of some version
(`tag_for(version_for(tag)) == tag`): ``v1.0``, ``01.0`` or ``1.0RC1`` are
not, so one version never has two tags and hand-pushed look-alikes are never
mistaken for releases.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from packaging.version import InvalidVersion, Version

from dockship.errors import UsageError

__all__ = ["DOCKER_TAG_RE", "is_final", "newest", "newest_tag", "parse_version",
           "tag_for", "version_for"]

#: What Docker accepts as a tag (distribution's reference grammar).
DOCKER_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")

_EXAMPLES = "e.g. 1.4.0, 2.0rc1, 1.4.0.post1, 1!2.0, 1.4.0+abc.1"


def parse_version(text: str | Version) -> Version:
    """Parse a version a user typed; a non-PEP 440 one is a `UsageError`."""
    if isinstance(text, Version):
        return text
    try:
        return Version(str(text).strip())
    except InvalidVersion:
        raise UsageError(f"{str(text)!r} is not a PEP 440 version ({_EXAMPLES})") from None


def tag_for(version: str | Version) -> str:
    """The image tag of a version: ``1!2.0+abc.1`` → ``1_2.0-abc.1``.

    A string that is not a PEP 440 version, or a version too long for a
    Docker tag (128 characters), is a `UsageError`.
    """
    v = parse_version(version)
    tag = str(v).replace("+", "-").replace("!", "_")
    if not DOCKER_TAG_RE.fullmatch(tag):
        raise UsageError(f"version {v} gives the tag {tag[:40]}…, longer than the 128 characters"
                         " Docker allows in a tag")
    return tag


def version_for(tag: str) -> Version:
    """The version a tag stands for; `ValueError` if the tag is not a version tag.

    Only canonical tags (those `tag_for` produces) are version tags.
    """
    if not DOCKER_TAG_RE.fullmatch(tag):
        raise ValueError(f"{tag!r} is not a Docker tag")
    text = tag.replace("-", "+").replace("_", "!")
    try:
        v = Version(text)
    except InvalidVersion:
        raise ValueError(f"{tag!r} is not a version tag") from None
    if str(v) != text:
        canonical = str(v).replace("+", "-").replace("!", "_")
        raise ValueError(f"{tag!r} is not a version tag (the tag of {v} is {canonical!r})")
    return v


def is_final(version: Version) -> bool:
    """A final release: not a pre-release nor a dev release (post and local ones are final)."""
    return not version.is_prerelease


def newest(versions: Iterable[str | Version], *, pre: bool = False) -> Version | None:
    """The highest version, among final releases only unless `pre`; None if there is none.

    Strings are parsed as PEP 440 versions (an invalid one raises `ValueError`).
    """
    best: Version | None = None
    for item in versions:
        v = item if isinstance(item, Version) else Version(item)
        if not pre and not is_final(v):
            continue
        if best is None or v > best:
            best = v
    return best


def newest_tag(tags: Iterable[str]) -> str | None:
    """The tag of the highest final release among `tags`; others (``latest``, ``v1``) are ignored."""
    best: tuple[Version, str] | None = None
    for tag in tags:
        try:
            v = version_for(tag)
        except ValueError:
            continue
        if is_final(v) and (best is None or v > best[0]):
            best = (v, tag)
    return best[1] if best else None
