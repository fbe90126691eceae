"""Docker engines: opening them with a clear error, and reading their streams safely.

Build, push and pull answer HTTP 200 and report failure *inside* the JSON
stream (`error` / `errorDetail` chunks); push does not even raise. Every
stream dockship reads goes through `checked`, so a failed push can never be
mistaken for a successful one.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import docker
import docker.errors
import requests

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


def build_engine(timeout: int = 600) -> docker.DockerClient:
    """The engine images are built on: DOCKER_HOST, or the local default socket."""
    where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except (docker.errors.DockerException, requests.RequestException) as exc:
        raise Unreachable(f"{http_failure(f'build engine {where}', exc)}; "
                          "start dockerd (or `dockship lab up`) or set DOCKER_HOST") from None
    return client


def checked(chunks: Iterable[Chunk], what: str, on_chunk: Callable[[Chunk], None] | None = None
            ) -> Iterator[Chunk]:
    """Yield the chunks of an engine stream, raising StreamError at the first error chunk."""
    tail: list[str] = []
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


def drain(chunks: Iterable[Chunk], what: str, on_chunk: Callable[[Chunk], None] | None = None
          ) -> list[Chunk]:
    """Read a whole stream through `checked` and keep it (the aux chunks carry results)."""
    return list(checked(chunks, what, on_chunk))
