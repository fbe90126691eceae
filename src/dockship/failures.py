"""Describing a failed request or engine call as one line, in the same words everywhere.

dockship talks to an index, a registry and a Chef server over HTTP (requests)
and to node engines through docker-py. When one of them does not answer, the
user reads what did not answer and why, in one line:

    index http://127.0.0.1:8081/simple/ did not answer (connection refused)
    registry 10.0.0.1:5000 did not answer (no answer within 5s)
    node web1: engine unreachable while trying to list containers (connection refused)

The text of a requests or urllib3 exception is a paragraph of object reprs;
`reason` keeps the phrase that matters. No credentials from a URL reach the
line: every line passes through `redact.redact` (what it hides is listed there).
"""

from __future__ import annotations

import re

import docker.errors
import requests

from dockship.errors import DockshipError, Unreachable, last_line
from dockship.redact import redact

__all__ = ["engine_failure", "engine_problem", "http_failure", "reason"]

_TIMEOUT_RE = re.compile(r"(read|connect) timeout=(\d+(?:\.\d+)?)")
_NAME_NOT_RESOLVED = ("NameResolutionError", "Name or service not known", "nodename nor servname",
                      "Temporary failure in name resolution", "No address associated with hostname")
_PHRASES = (
    r"\[SSL: [A-Z_]+\] ([^(')\"]+)",                     # TLS handshake trouble
    r"\[Errno -?\d+\] ([^'\")\]]+)",                     # connection refused, no route to host, …
    r"\b\w+Error\(-?\d+, '([^']+)'\)",                   # FileNotFoundError(2, 'No such file …')
    r"RemoteDisconnected\('([^']+)'",                    # closed without answering
    r"Connection aborted\.?'?,\s*\w+\('([^']+)'",
)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _timeout_phrase(exc: BaseException) -> str:
    m = _TIMEOUT_RE.search(str(exc))
    seconds = f"{float(m.group(2)):g}s" if m else None
    if isinstance(exc, requests.exceptions.ConnectTimeout) or (m and m.group(1) == "connect"):
        return f"no connection within {seconds}" if seconds else "no connection in time"
    return f"no answer within {seconds}" if seconds else "timed out"


def reason(exc: BaseException) -> str:
    """Why a request or engine call failed, as a short phrase: "connection refused",
    "no answer within 5s", "host name not resolved", "TLS failed: …".

    A `DockshipError` already speaks to the user: its last line is kept whole.
    """
    if isinstance(exc, DockshipError):
        return redact(last_line(exc))
    text = str(exc)
    if isinstance(exc, (requests.exceptions.Timeout, TimeoutError)) or "timed out" in text:
        return _timeout_phrase(exc)
    if any(marker in text for marker in _NAME_NOT_RESOLVED):
        return "host name not resolved"
    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, requests.RequestException):
        return exc.strerror.strip().rstrip(".").lower()
    for pattern in _PHRASES:
        m = re.search(pattern, text)
        if m:
            phrase = _one_line(m.group(1)).strip().rstrip(".").lower()
            return f"TLS failed: {phrase}" if pattern.startswith(r"\[SSL") else phrase
    if isinstance(exc, requests.exceptions.SSLError):
        return "TLS failed: certificate or handshake error"
    if isinstance(exc, docker.errors.APIError) and exc.explanation:
        text = str(exc.explanation)
    text = re.sub(r"<[^>]*object at 0x[0-9a-f]+>:?\s*", "", text)
    text = re.sub(r"^.*Caused by ", "", _one_line(text))
    return redact(text)[:200] or type(exc).__name__


def http_failure(what: str, exc: BaseException) -> str:
    """One line for a request to `what` that got no answer, e.g.
    ``http_failure("index http://host/simple/", exc)`` →
    "index http://host/simple/ did not answer (connection refused)".

    `what` names the server the way the user configured it; credentials in a
    URL there or in the exception are masked.
    """
    return redact(f"{what} did not answer ({reason(exc)})")


def engine_problem(exc: BaseException, doing: str) -> str:
    """What went wrong in an engine call while `doing` something ("start the new container"),
    without the node's name: the engine refused (its answer), or did not answer (why)."""
    if isinstance(exc, docker.errors.APIError):
        detail = str(exc.explanation or exc).strip().splitlines()
        refusal = detail[-1][:200] if detail else str(exc.status_code)
        return redact(f"the engine refused to {doing}: {refusal}")
    if isinstance(exc, DockshipError) and not isinstance(exc, Unreachable):
        return redact(last_line(exc, 300))
    return f"engine unreachable while trying to {doing} ({reason(exc)})"


def engine_failure(node: str, exc: BaseException, doing: str) -> DockshipError:
    """The error to raise for a failed engine call on `node` while `doing` something
    ("create the lock"): `Unreachable` when the engine did not answer (or the
    transport to it failed), a plain `DockshipError` when it answered and refused.
    """
    text = f"node {node}: {engine_problem(exc, doing)}"
    answered = isinstance(exc, docker.errors.APIError) or (
        isinstance(exc, DockshipError) and not isinstance(exc, Unreachable))
    return DockshipError(text) if answered else Unreachable(text)
