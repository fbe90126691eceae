"""`dockship logs`: a service's container output from its nodes, each line named by its node.

The container read is the service's running one on each node (what `status`
shows). Without `-f` the nodes are read in parallel and printed node after
node; with `-f` a thread per node follows its stream and lines are handed
over as they come, until the streams end or the user stops it. Lines are
text the service wrote, so the caller escapes them before they reach a
terminal (errors.printable).
"""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from dockship.config import Config
from dockship.container import current_of
from dockship.errors import UsageError
from dockship.failures import reason
from dockship.fleet import NodeEngine
from dockship.selection import fleet_of, select
from dockship.times import parse_time, utc_now

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


@dataclass(frozen=True)
class LogLine:
    node: str
    service: str
    text: str


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`10m`, `2h`, `90s`, `1d` ago, or an ISO 8601 time; UsageError naming the flag otherwise."""
    m = _DURATION_RE.fullmatch(text.strip())
    if m:
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
        if seconds > 3650 * 86400:
            raise UsageError(f"--since {text!r} reaches back more than ten years")
        return (now or utc_now()) - timedelta(seconds=seconds)
    try:
        return parse_time(text)
    except (ValueError, TypeError):
        raise UsageError(f"--since {text!r} is neither a duration like 10m, 2h, 1d nor an "
                         "ISO 8601 time like 2026-12-02T10:00:00Z") from None


def _params(tail: int | None, since: datetime | None) -> dict:
    params: dict = {"stdout": True, "stderr": True, "tail": "all" if tail is None else tail}
    if since is not None:
        params["since"] = int(since.timestamp())
    return params


def _container_id(engine: NodeEngine, service: str) -> str:
    found = current_of(engine.client, service)
    if found is None:
        raise LookupError(f"no running container of {service}")
    return found.id


def _read(engine: NodeEngine, service: str, tail: int | None, since: datetime | None) -> list[str]:
    raw = engine.client.api.logs(_container_id(engine, service), **_params(tail, since))
    return raw.decode(errors="replace").splitlines()


def _lines(chunks: Iterator[bytes]) -> Iterator[str]:
    """Whole lines out of a byte stream cut anywhere."""
    rest = b""
    for chunk in chunks:
        rest += chunk
        *done, rest = rest.split(b"\n")
        for line in done:
            yield line.decode(errors="replace")
    if rest:
        yield rest.decode(errors="replace")


def logs(config: Config, env: str, service: str | None, node: str | None, *,
         tail: int | None, since: datetime | None, follow: bool,
         emit: Callable[[LogLine], None]) -> list[str]:
    """Hand every line to `emit`; the nodes that could not be read, as "node: why"."""
    unread: list[str] = []
    for chosen in select(config, env, service, node):
        name = chosen.service.name
        with fleet_of(config, chosen) as fleet:
            if not follow:
                for engine, lines, exc in fleet.each(lambda e: _read(e, name, tail, since)):
                    if exc is not None:
                        unread.append(f"{engine.name}: {reason(exc)}")
                    for text in lines or ():
                        emit(LogLine(engine.name, name, text))
            else:
                unread += _follow(list(fleet), name, tail, since, emit)
    return unread


def _follow(engines: list[NodeEngine], service: str, tail: int | None, since: datetime | None,
            emit: Callable[[LogLine], None]) -> list[str]:
    """One thread per node feeding one queue; the caller's thread does all the printing."""
    lines: queue.Queue[LogLine | None] = queue.Queue(maxsize=10_000)
    unread: list[str] = []

    def pump(engine: NodeEngine) -> None:
        try:
            stream = engine.client.api.logs(_container_id(engine, service), stream=True,
                                            follow=True, **_params(tail, since))
            for text in _lines(stream):
                lines.put(LogLine(engine.name, service, text))
        except Exception as exc:  # noqa: BLE001 - reported per node, the others go on
            unread.append(f"{engine.name}: {reason(exc)}")
        finally:
            lines.put(None)

    for engine in engines:
        threading.Thread(target=pump, args=(engine,), daemon=True,
                         name=f"logs-{engine.name}").start()
    open_streams = len(engines)
    while open_streams:
        item = lines.get()
        if item is None:
            open_streams -= 1
        else:
            emit(item)
    return unread
