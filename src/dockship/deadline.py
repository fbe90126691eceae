"""Deadlines for every request dockship makes, and stall limits for long transfers.

requests' `timeout` bounds each socket read, not a request: a server that
sends one byte every few seconds, in its headers or its body, keeps a request
alive forever, and an engine that accepts and never answers is waited on for
the client's whole read timeout (600 s for the build engine). dockship talks
to servers it does not control, so every call gets a bound that holds
whatever the server does:

* `request` — one HTTP request, from connect to its last body byte, within a
  TOTAL deadline; the answer comes back whole as an `Answer`, its body capped.
* `download` — a large file (an index file): no total, but it fails when it
  makes no progress (fewer than `PROGRESS_BYTES` in `STALL` seconds).
* `call` — any blocking call (an engine's ping) within a total deadline.
* `watch` — an engine stream (build, push, pull) fails when no chunk comes
  for its stall limit.

How: the work runs in a daemon thread and the caller waits at most the time
left, then raises `NoAnswer` at once. Only public APIs of requests are used
(`stream=True`, `iter_content`). The abandoned thread is left alone (closing
a response another thread is reading blocks on the reader's buffer lock): it
stops at its next chunk (it checks a cancel flag), at its per-read timeout,
or when the server gives up, and as a daemon it never keeps the process alive.

Defaults (seconds unless said):

=================  ======  ===============================================
`TOTAL`            30      one request: index page, registry API, Chef,
                           token realm ("well within a minute", design §8)
`CONNECT`          10      TCP connect, inside the total
`MAX_BODY`         32 MiB  an answer read whole (pages, JSON, manifests)
`STALL`            30      a download with no progress
`PROGRESS_BYTES`   64 KiB  what counts as progress for a download
`ENGINE_CONNECT`   15      opening an engine: its version and `/_ping`
`BUILD_STALL`      300     a build stream without a chunk (pip can be quiet)
`TRANSFER_STALL`   60      a push or pull stream without a chunk
=================  ======  ===============================================

Bounds kept next to their callers: a health probe has `health.timeout / 4`
within [0.5, 2] s in all (`probe`), a bake probe 2 s (`bake`), a node
engine's calls 60 s per read (`fleet.API_TIMEOUT`), a credential helper 30 s
(`credentials.HELPER_TIMEOUT`).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import requests

from dockship.errors import DockshipError, Unreachable, printable

__all__ = ["Answer", "BUILD_STALL", "CONNECT", "ENGINE_CONNECT", "MAX_BODY", "NoAnswer",
           "PROGRESS_BYTES", "STALL", "TOTAL", "TRANSFER_STALL", "TooLarge", "call", "download",
           "request", "watch"]

TOTAL = 30.0
CONNECT = 10.0
MAX_BODY = 32 << 20
STALL = 30.0
PROGRESS_BYTES = 64 << 10
ENGINE_CONNECT = 15.0
BUILD_STALL = 300.0
TRANSFER_STALL = 60.0

_CHUNK = 1 << 16
T = TypeVar("T")


class NoAnswer(Unreachable):
    """A server did not complete its answer (or made no progress) in time."""

    def __init__(self, what: str, phrase: str):
        self.what = what
        self.phrase = phrase      # "no complete answer within 30 s": fits a "(…)" in other lines
        super().__init__(f"{what} did not answer ({phrase})")


class TooLarge(DockshipError):
    """A server sent more than we read whole: a misbehaving or hostile server, not a user error."""


@dataclass(frozen=True)
class Answer:
    """An HTTP answer read whole within its deadline; it reads like a `requests.Response`.

    `reason` is escaped already (control characters shown as `\\x1b`): a
    reason phrase is server text and goes into error messages.
    """

    status_code: int
    reason: str
    url: str
    headers: Mapping[str, str] = field(repr=False)
    content: bytes = field(default=b"", repr=False)
    encoding: str | None = field(default=None, repr=False)
    links: Mapping[str, Mapping[str, str]] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        return self.status_code < 400

    @property
    def text(self) -> str:
        try:
            return self.content.decode(self.encoding or "utf-8", errors="replace")
        except LookupError:                      # a charset Python does not know
            return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON; ValueError when it is not."""
        return json.loads(self.content)


class _Progress:
    """Shared between the caller and the worker: when progress was last made, and a cancel flag."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.cancelled = threading.Event()

    def tick(self) -> None:
        self.last = time.monotonic()


def _run(work: Callable[[_Progress], T], *, what: str, total: float | None = None,
         stall: float | None = None) -> T:
    """`work` in a daemon thread; NoAnswer when `total` passes or no progress for `stall`."""
    progress = _Progress()
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def worker() -> None:
        try:
            outcome["value"] = work(progress)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller as is
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=worker, daemon=True, name=f"dockship-deadline {what}"[:80]).start()
    started = time.monotonic()
    while True:
        now = time.monotonic()
        limits = []
        if total is not None:
            limits.append((started + total - now, f"no complete answer within {total:g} s"))
        if stall is not None:
            limits.append((progress.last + stall - now, f"no progress for {stall:g} s"))
        left, phrase = min(limits) if limits else (None, "")
        if left is not None and left <= 0:
            progress.cancelled.set()
            raise NoAnswer(what, phrase)
        if done.wait(left):
            break
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _answer(response: requests.Response, content: bytes = b"") -> Answer:
    return Answer(status_code=response.status_code, reason=printable(response.reason or ""),
                  url=response.url, headers=response.headers, content=content,
                  encoding=response.encoding, links=response.links)


def _too_large(what: str, limit: int) -> TooLarge:
    return TooLarge(f"{what}: answered with more than {limit >> 20 or 1} MiB where a small answer "
                    "was expected; check that the URL names the right server")


def request(session: requests.Session, method: str, url: str, *, what: str,
            total: float = TOTAL, max_body: int | None = MAX_BODY,
            **kwargs: Any) -> Answer:
    """`session.request(method, url, **kwargs)`, the whole answer within `total` seconds.

    `what` names the server for messages ("index http://host/simple/"). The
    body is read whole, at most `max_body` bytes (TooLarge beyond); with
    `max_body=None` it is not read at all (a health probe wants the status).
    requests' own exceptions (refused, TLS, ...) reach the caller unchanged;
    running out of time is `NoAnswer`.
    """
    connect = min(CONNECT, total)

    def fetch(progress: _Progress) -> Answer:
        response = session.request(method, url, stream=True, timeout=(connect, total), **kwargs)
        try:
            if max_body is None:
                return _answer(response)
            length = response.headers.get("Content-Length", "")
            if length.isdigit() and int(length) > max_body:
                raise _too_large(what, max_body)
            body = bytearray()
            for chunk in response.iter_content(_CHUNK):
                if progress.cancelled.is_set():
                    break
                body += chunk
                if len(body) > max_body:
                    raise _too_large(what, max_body)
            return _answer(response, bytes(body))
        finally:
            response.close()

    return _run(fetch, what=what, total=total)


def download(session: requests.Session, url: str, *, what: str, sink: Callable[[bytes], None],
             stall: float = STALL, error_body: int = 1 << 16, **kwargs: Any) -> Answer:
    """GET a large file, handing its body to `sink` chunk by chunk (in the worker thread).

    No total deadline (a big file on a slow link may take long), but
    NoAnswer when fewer than PROGRESS_BYTES arrive in `stall` seconds, so a
    trickle counts as a stall. For an error status (>= 400) the body is not
    given to `sink`; its start (`error_body` bytes) is the Answer's content.
    """
    connect = min(CONNECT, stall)

    def fetch(progress: _Progress) -> Answer:
        response = session.get(url, stream=True, timeout=(connect, stall), **kwargs)
        progress.tick()
        try:
            if response.status_code >= 400:
                head = bytearray()
                for chunk in response.iter_content(_CHUNK):
                    head += chunk
                    if len(head) >= error_body or progress.cancelled.is_set():
                        break
                return _answer(response, bytes(head[:error_body]))
            since_tick = 0
            for chunk in response.iter_content(_CHUNK):
                if progress.cancelled.is_set():
                    break
                sink(chunk)
                since_tick += len(chunk)
                if since_tick >= PROGRESS_BYTES:
                    progress.tick()
                    since_tick = 0
            return _answer(response)
        finally:
            response.close()

    return _run(fetch, what=what, stall=stall)


def call(fn: Callable[[], T], *, what: str, total: float) -> T:
    """`fn()` within `total` seconds (NoAnswer otherwise); for calls that cannot be given a deadline
    themselves, like opening an engine. `fn` keeps running in the background when abandoned,
    so it must be harmless to finish late (a ping, a version query)."""
    return _run(lambda _progress: fn(), what=what, total=total)


_END = object()


def watch(chunks: Iterable[T], *, what: str, stall: float) -> Iterator[T]:
    """The items of `chunks`, NoAnswer when none comes for `stall` seconds.

    The stream is read in a daemon thread; items are handed over in order,
    and the caller's code (progress callbacks) runs in the caller's thread.
    A stream's own exception is raised in the caller when it is reached.
    """
    handover: queue.Queue[Any] = queue.Queue()
    cancelled = threading.Event()

    def reader() -> None:
        try:
            for item in chunks:
                if cancelled.is_set():
                    return
                handover.put((item, None))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller as is
            handover.put((_END, exc))
            return
        handover.put((_END, None))

    threading.Thread(target=reader, daemon=True, name=f"dockship-watch {what}"[:80]).start()
    try:
        while True:
            try:
                item, error = handover.get(timeout=stall)
            except queue.Empty:
                raise NoAnswer(what, f"no progress for {stall:g} s") from None
            if item is _END:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        cancelled.set()
