"""Times as dockship writes and shows them: UTC, ISO 8601 in files, coarse for people.

Locks and history both store times that other machines read back and sort,
so there is one format (microseconds and a Z: sorts as text in time order)
and one parser that refuses a time without a zone.
"""

from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def format_time(t: datetime) -> str:
    """UTC, ISO 8601 with microseconds and a Z."""
    if t.tzinfo is None:
        raise ValueError("naive datetime: dockship times are UTC-aware")
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: object) -> datetime:
    """A stored time back; ValueError for anything that is not an aware ISO 8601 time.

    Engines write nanoseconds (`…:22.302966921Z`), which `fromisoformat` does
    not take: the fraction is cut to microseconds first.
    """
    if not isinstance(value, str):
        raise ValueError(f"not a time: {value!r}")
    text = value.strip()
    if "." in text:
        head, _, tail = text.partition(".")
        digits = len(tail) - len(tail.lstrip("0123456789"))
        text = f"{head}.{tail[:min(digits, 6)]}{tail[digits:]}"
    t = datetime.fromisoformat(text)
    if t.tzinfo is None:
        raise ValueError(f"time {value!r} has no timezone")
    return t.astimezone(timezone.utc)


def human_duration(seconds: float) -> str:
    """45s, 28m, 1h05m, 2d03h: coarse on purpose, for one-line messages."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def ago(value: datetime | str | None, now: datetime | None = None) -> str:
    """"4m ago", "2h05m ago", "3d01h ago" for people; "" for no time, the text itself if unreadable.

    `--json` keeps the ISO 8601 time: a script compares instants, a person reads age.
    """
    if value is None or value == "":
        return ""
    try:
        when = value if isinstance(value, datetime) else parse_time(value)
    except ValueError:
        return str(value)
    seconds = ((now or utc_now()) - when).total_seconds()
    if seconds < -1:
        return f"in {human_duration(-seconds)}"      # another machine's clock is ahead
    return "just now" if seconds < 1 else f"{human_duration(seconds)} ago"
