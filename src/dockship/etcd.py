"""etcd, through its v3 JSON gateway (`etcd3gw`): the few calls discovery and the lease need.

Why the gateway: the gRPC client (`etcd3`) breaks with protobuf ≥ 4, while
the gateway is plain HTTP that every etcd ≥ 3.4 serves on its client port.
etcd3gw gives the session, the API path of the server's version and its
error classes; the requests themselves are built here, with keys and values
as bytes (etcd3gw would encode a `str` as latin-1).

Every call has the house deadlines (`deadline.TOTAL` in all, `deadline.CONNECT`
to connect), and every failure is one line naming the server, with anything
secret in its URL hidden:

    etcd http://127.0.0.1:2379 did not answer (connection refused)
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import etcd3gw
import etcd3gw.exceptions
import requests

from dockship import deadline
from dockship.config import EtcdSettings
from dockship.errors import DockshipError, Unreachable, printable
from dockship.failures import http_failure
from dockship.redact import redact, redact_url

__all__ = ["Entry", "Etcd", "EtcdRefused", "prefix_end"]

DEFAULT_PORT = 2379
T = TypeVar("T")


class EtcdRefused(DockshipError):
    """etcd answered, with an error (a bad request, no leader, a full disk...)."""


@dataclass(frozen=True)
class Entry:
    """One key as etcd holds it."""

    key: bytes
    value: bytes
    lease: int = 0              # the lease the key is attached to; 0: none
    create_revision: int = 0
    mod_revision: int = 0

    @classmethod
    def of(cls, kv: dict[str, Any]) -> "Entry":
        return cls(key=_unb64(kv.get("key")), value=_unb64(kv.get("value")),
                   lease=int(kv.get("lease") or 0),
                   create_revision=int(kv.get("create_revision") or 0),
                   mod_revision=int(kv.get("mod_revision") or 0))


def _b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode("ascii")


def _unb64(data: Any) -> bytes:
    return base64.b64decode(data) if data else b""


def prefix_end(prefix: bytes) -> bytes:
    """The end of etcd's range of every key starting with `prefix` (its last byte plus one)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\x00"           # etcd: from the key to the end of the keyspace
    return stripped[:-1] + bytes([stripped[-1] + 1])


class Etcd:
    """A connection to one etcd member; a context manager (the HTTP session is closed)."""

    def __init__(self, url: str, *, total: float = deadline.TOTAL, ca: Path | None = None,
                 cert: Path | None = None, key: Path | None = None):
        parts = urlsplit(url)
        self.url = url
        self.what = f"etcd {redact_url(url)}"
        self.total = total
        session = requests.Session()
        if ca is not None:
            session.verify = str(ca)
            # requests lets $REQUESTS_CA_BUNDLE win over a session's own CA; this one is meant
            session.trust_env = False
        if cert is not None and key is not None:
            session.cert = (str(cert), str(key))
        self._client = etcd3gw.Etcd3Client(
            host=parts.hostname or "", port=parts.port or DEFAULT_PORT,
            protocol=parts.scheme or "http", timeout=(min(deadline.CONNECT, total), total),
            session=session)

    @classmethod
    def of(cls, settings: EtcdSettings) -> "Etcd":
        """The etcd of an environment's `etcd = {...}`, with its TLS files."""
        return cls(settings.url, ca=settings.ca, cert=settings.cert, key=settings.key)

    def __enter__(self) -> "Etcd":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.session.close()

    # -- one request ----------------------------------------------------------------

    def _post(self, path: str, body: dict[str, Any], doing: str) -> dict[str, Any]:
        """POST one gateway call within the deadline; the answer as a dict, or one-line errors."""
        def call() -> Any:
            return self._client.post(self._client.get_url(path), json=body)
        return self._guard(call, doing)

    def _guard(self, fn: Callable[[], T], doing: str) -> T:
        try:
            answer = deadline.call(fn, what=self.what, total=self.total)
        except (etcd3gw.exceptions.ConnectionFailedError,
                etcd3gw.exceptions.ConnectionTimeoutError) as exc:
            cause = exc.__context__ or exc
            raise Unreachable(http_failure(self.what, cause)) from None
        except etcd3gw.exceptions.Etcd3Exception as exc:
            raise EtcdRefused(redact(f"{self.what} refused to {doing}: {_detail(exc)}")) from None
        except ValueError:       # the answer was not JSON: something else listens there
            raise DockshipError(f"{self.what} answered with something that is not etcd's JSON "
                                f"while trying to {doing}; check that the URL names an etcd "
                                "client port (2379)") from None
        except requests.RequestException as exc:
            raise Unreachable(http_failure(self.what, exc)) from None
        if not isinstance(answer, dict):
            raise DockshipError(f"{self.what} answered with something that is not etcd's JSON "
                                f"while trying to {doing}")
        return answer            # type: ignore[return-value]

    # -- keys -----------------------------------------------------------------------

    def range(self, key: bytes, end: bytes | None = None) -> list[Entry]:
        """The key (or every key in [key, end)), in key order."""
        body: dict[str, Any] = {"key": _b64(key)}
        if end is not None:
            body["range_end"] = _b64(end)
        answer = self._post("/kv/range", body, "read keys")
        return [Entry.of(kv) for kv in answer.get("kvs") or ()]

    def get(self, key: bytes) -> Entry | None:
        found = self.range(key)
        return found[0] if found else None

    def get_prefix(self, prefix: bytes) -> list[Entry]:
        return self.range(prefix, prefix_end(prefix))

    def put(self, key: bytes, value: bytes, lease: int = 0) -> None:
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
        if lease:
            body["lease"] = str(lease)
        self._post("/kv/put", body, "write a key")

    def delete(self, key: bytes) -> None:
        self._post("/kv/deleterange", {"key": _b64(key)}, "delete a key")

    def delete_prefix(self, prefix: bytes) -> None:
        self._post("/kv/deleterange", {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix))},
                   "delete keys")

    def create(self, key: bytes, value: bytes, lease: int) -> bool:
        """Put `key` only if it does not exist, in one transaction; False if it did."""
        answer = self._post("/kv/txn", {
            "compare": [{"key": _b64(key), "target": "CREATE", "result": "EQUAL",
                         "create_revision": "0"}],
            "success": [{"request_put": {"key": _b64(key), "value": _b64(value),
                                         "lease": str(lease)}}],
        }, "create a key")
        return bool(answer.get("succeeded"))

    def delete_if_lease(self, key: bytes, lease: int) -> bool:
        """Delete `key` only while it is attached to `lease`, in one transaction."""
        answer = self._post("/kv/txn", {
            "compare": [{"key": _b64(key), "target": "LEASE", "result": "EQUAL",
                         "lease": str(lease)}],
            "success": [{"request_delete_range": {"key": _b64(key)}}],
        }, "delete a key")
        return bool(answer.get("succeeded"))

    # -- leases ---------------------------------------------------------------------

    def grant(self, ttl: float) -> int:
        """A new lease of `ttl` seconds (etcd counts whole seconds: rounded up); its id."""
        answer = self._post("/lease/grant", {"TTL": str(max(1, math.ceil(ttl))), "ID": "0"},
                            "grant a lease")
        if answer.get("error"):
            raise EtcdRefused(f"{self.what} refused to grant a lease: "
                              f"{printable(str(answer['error']))[:200]}")
        return int(answer["ID"])

    def keepalive(self, lease: int) -> int:
        """Renew a lease; the seconds it now has, or 0 when it is gone (expired or revoked)."""
        answer = self._post("/lease/keepalive", {"ID": str(lease)}, "renew a lease")
        result = answer.get("result") or {}
        return max(0, int(result.get("TTL") or 0))

    def time_to_live(self, lease: int) -> tuple[int, int]:
        """(seconds left, seconds granted) of a lease by etcd's own clock; (0, 0) when gone."""
        answer = self._post("/kv/lease/timetolive", {"ID": str(lease)}, "read a lease")
        left = int(answer.get("TTL") or -1)
        return (left, int(answer.get("grantedTTL") or 0)) if left > 0 else (0, 0)

    def revoke(self, lease: int) -> bool:
        """End a lease and delete its keys; False if it was gone already."""
        try:
            self._post("/kv/lease/revoke", {"ID": str(lease)}, "revoke a lease")
        except EtcdRefused as exc:
            if "lease not found" in str(exc):
                return False
            raise
        return True

    def status(self) -> dict[str, Any]:
        """The member's status (its version, leader...): a cheap "does it answer"."""
        return self._post("/maintenance/status", {}, "report its status")


def _detail(exc: etcd3gw.exceptions.Etcd3Exception) -> str:
    """The reason etcd gave (its JSON `message` / `error`), escaped and bounded."""
    text = str(exc.detail_text or "")
    try:
        body = json.loads(text)
        text = str(body.get("message") or body.get("error") or text)
    except (ValueError, AttributeError):
        pass
    reason = str(exc.args[0]) if exc.args else ""
    return printable(" ".join((text or reason or type(exc).__name__).split()))[:200]
