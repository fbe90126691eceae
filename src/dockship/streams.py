"""Docker engines: opening them with a clear error, and reading their streams safely.

Build, push and pull answer HTTP 200 and report failure *inside* the JSON
stream (`error` / `errorDetail` chunks); push does not even raise. Every
stream dockship reads goes through `checked`, so a failed push can never be
mistaken for a successful one.

An engine that accepts and never answers must not hold dockship for the
client's read timeout: the build engine is opened (version and ping) within
`deadline.ENGINE_CONNECT` seconds, and a stream that sends nothing for its
stall limit fails (`deadline.TRANSFER_STALL` for a push or pull,
`deadline.BUILD_STALL` for a build, whose steps can be quiet for minutes).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import docker
import docker.errors
import requests

from dockship import deadline
from dockship.errors import DockshipError, Unreachable
from dockship.failures import http_failure

Chunk = dict[str, Any]


class StreamError(DockshipError):
    """An engine reported an error inside a build, push or pull stream."""

    def __init__(self, what: str, message: str, log: list[str] | None = None):
        self.what = what
        self.detail = message
        self.log = log or []
        super().__init__(f"{what} failed: {message.strip()}")


def build_engine(timeout: int = 600, *, connect: float = deadline.ENGINE_CONNECT) -> docker.DockerClient:
    """The engine images are built on: DOCKER_HOST, or the local default socket.

    `connect` bounds opening it (docker-py asks for the API version, then we
    ping); `timeout` is docker-py's per-read timeout for the calls after that.
    """
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    hint = "start dockerd (or `dockship lab up`) or set DOCKER_HOST"

    def open_engine() -> docker.DockerClient:
        client = docker.from_env(timeout=timeout)
        client.ping()
        return client

    try:
        return deadline.call(open_engine, what=f"build engine {where}", total=connect)
    except deadline.NoAnswer as exc:
        raise Unreachable(f"{exc}; {hint}") from None
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise Unreachable(f"{http_failure(f'build engine {where}', exc)}; {hint}") from None


def stall_limit(what: str) -> float:
    """How long a stream may stay silent: a push or pull (`what` starts so) moves bytes all
    the time; a build may run a quiet step (pip resolving, a compiler) for minutes."""
    return deadline.TRANSFER_STALL if what.startswith(("push", "pull")) else deadline.BUILD_STALL


def checked(chunks: Iterable[Chunk], what: str, on_chunk: Callable[[Chunk], None] | None = None,
            *, stall: float | None = None) -> Iterator[Chunk]:
    """Yield the chunks of an engine stream, raising StreamError at the first error chunk,
    and `deadline.NoAnswer` when none comes for `stall` seconds (default: `stall_limit`)."""
    tail: list[str] = []
    if not isinstance(chunks, (list, tuple)):          # a live stream, not a recorded one
        chunks = deadline.watch(chunks, what=f"{what}: the engine",
                                stall=stall_limit(what) if stall is None else stall)
    for chunk in chunks:
        if not isinstance(chunk, dict):
            continue
        if "errorDetail" in chunk or "error" in chunk:
            detail = chunk.get("errorDetail") or {}
            message = detail.get("message") if isinstance(detail, dict) else None
            raise StreamError(what, message or str(chunk.get("error") or detail), tail)
        text = chunk.get("stream")
        if text and text.strip():
            tail = (tail + [text.rstrip()])[-20:]
        if on_chunk is not None:
            on_chunk(chunk)
        yield chunk


def drain(chunks: Iterable[Chunk], what: str, on_chunk: Callable[[Chunk], None] | None = None,
          *, stall: float | None = None) -> list[Chunk]:
    """Read a whole stream through `checked` and keep it (the aux chunks carry results)."""
    return list(checked(chunks, what, on_chunk, stall=stall))
