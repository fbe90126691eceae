"""A small Chef Infra Server client: signed requests, search, and the few writes the lab needs.

pychef no longer imports on current Python (design §6), and the protocol we
need is small: sign each request with the client's RSA key (Chef's
"Authentication headers" / RFC 065), GET/POST/PUT/DELETE JSON, and page
through search. Signing is a pure function so that Chef's published test
vectors pin it byte for byte without a server; `ChefClient` is the only part
that does I/O.

Server differences we have to live with (seen against goiardi 0.11.10):
the base URL may or may not carry an `/organizations/NAME` prefix; search
`total` counts only the current page; partial-search results are reordered on
every request, so their pages overlap and miss objects; a `start` past the
end makes goiardi drop the connection. `search` copes with all of these (see
its docstring) and always returns rows sorted by name.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote, urlsplit

import requests
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from dockship import deadline
from dockship.redact import redact_url
from dockship.errors import ConfigError, DockshipError, Unreachable, printable
from dockship.failures import http_failure

SignVersion = Literal["1.0", "1.1", "1.3"]

# Chef Server gates some behaviour on the client version it is told and refuses
# clients it thinks are too old; claim a current one.
CHEF_VERSION = "18.0.0"

_AUTH_LINE = 60          # Ruby's Base64.encode64 line length, which servers expect
_DIGEST_FOR_VERSION = {"1.0": "sha1", "1.1": "sha1", "1.3": "sha256"}


# --------------------------------------------------------------------------
# Signing (pure)
# --------------------------------------------------------------------------

def canonical_path(path: str) -> str:
    """The path as the server re-derives it, so both sides sign the same bytes.

    The server sees only the path (never the query string), collapses
    repeated slashes and ignores a trailing slash, except for "/" itself.
    """
    path = path.split("?", 1)[0].split("#", 1)[0]
    path = re.sub(r"/+", "/", path)
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    return path or "/"


def chef_timestamp(now: datetime | None = None) -> str:
    """UTC, second precision, `Z` suffix: the only form every server parses and signs alike."""
    now = now or datetime.now(timezone.utc)
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64_digest(algorithm: str, data: bytes) -> str:
    return base64.b64encode(hashlib.new(algorithm, data).digest()).decode("ascii")


@dataclass(frozen=True)
class CanonicalRequest:
    """The fields a Chef signature covers; `text()` is exactly what gets signed.

    Kept as a value so a test (or a debugging user) can compare the string we
    sign with the one the server logs, without any key involved.
    """

    method: str
    path: str
    content_hash: str
    timestamp: str
    user_id: str
    version: SignVersion
    server_api_version: str = "1"

    @classmethod
    def build(cls, *, method: str, path: str, body: bytes, user_id: str, timestamp: str,
              version: SignVersion, server_api_version: str = "1") -> "CanonicalRequest":
        if version not in _DIGEST_FOR_VERSION:
            raise ValueError(f"unsupported Chef sign version {version!r}; use one of "
                             f"{', '.join(_DIGEST_FOR_VERSION)}")
        algorithm = _DIGEST_FOR_VERSION[version]
        return cls(method=method.upper(), path=canonical_path(path),
                   content_hash=_b64_digest(algorithm, body), timestamp=timestamp,
                   user_id=user_id, version=version, server_api_version=str(server_api_version))

    @property
    def algorithm(self) -> str:
        return _DIGEST_FOR_VERSION[self.version]

    def text(self) -> str:
        if self.version == "1.3":
            lines = [
                f"Method:{self.method}",
                f"Path:{self.path}",
                f"X-Ops-Content-Hash:{self.content_hash}",
                f"X-Ops-Sign:version={self.version}",
                f"X-Ops-Timestamp:{self.timestamp}",
                f"X-Ops-UserId:{self.user_id}",
                f"X-Ops-Server-API-Version:{self.server_api_version}",
            ]
        else:
            # 1.0 and 1.1 hash the path; only 1.1 hashes the user id too.
            user = self.user_id if self.version == "1.0" else _b64_digest("sha1", self.user_id.encode())
            lines = [
                f"Method:{self.method}",
                f"Hashed Path:{_b64_digest('sha1', self.path.encode())}",
                f"X-Ops-Content-Hash:{self.content_hash}",
                f"X-Ops-Timestamp:{self.timestamp}",
                f"X-Ops-UserId:{user}",
            ]
        return "\n".join(lines)


def _private_encrypt(key: rsa.RSAPrivateKey, message: bytes) -> bytes:
    """RSA "private encrypt" (PKCS#1 v1.5 type-1 padding, no DigestInfo), as protocols 1.0/1.1 use.

    `cryptography` only signs digests wrapped in a DigestInfo, which is not
    what Chef's legacy protocol does (it is OpenSSL's RSA_private_encrypt of
    the canonical string itself), so the padding and the modular
    exponentiation are done here. The key is the caller's own and the input is
    not attacker-chosen, so the lack of constant-time arithmetic is no risk.
    """
    numbers = key.private_numbers()
    n = numbers.public_numbers.n
    k = (n.bit_length() + 7) // 8
    if len(message) > k - 11:
        raise ValueError(f"the canonical request is {len(message)} bytes, more than a "
                         f"{n.bit_length()}-bit key can sign with protocol 1.0/1.1 "
                         f"(at most {k - 11}); use sign version 1.3")
    block = b"\x00\x01" + b"\xff" * (k - 3 - len(message)) + b"\x00" + message
    # CRT form: about four times faster than pow(m, d, n) and gives the same result.
    m = int.from_bytes(block, "big")
    s1 = pow(m, numbers.dmp1, numbers.p)
    s2 = pow(m, numbers.dmq1, numbers.q)
    h = (numbers.iqmp * (s1 - s2)) % numbers.p
    return (s2 + h * numbers.q).to_bytes(k, "big")


def split_authorization(signature: bytes) -> dict[str, str]:
    """Base64 of the signature in 60-character `X-Ops-Authorization-N` headers, N from 1.

    HTTP header values must not be overly long and servers reassemble the
    lines in order, so the split is part of the protocol, not cosmetics.
    """
    encoded = base64.b64encode(signature).decode("ascii")
    chunks = [encoded[i:i + _AUTH_LINE] for i in range(0, len(encoded), _AUTH_LINE)]
    return {f"X-Ops-Authorization-{i}": chunk for i, chunk in enumerate(chunks, start=1)}


def sign_request(*, method: str, path: str, body: bytes, user_id: str,
                 private_key: rsa.RSAPrivateKey, timestamp: str, version: SignVersion,
                 server_api_version: str = "1") -> dict[str, str]:
    """Headers that authenticate one request to a Chef server.

    `path` is the full URL path the server sees (with any
    `/organizations/NAME` prefix); `body` the exact bytes sent (b"" for none);
    `timestamp` as made by `chef_timestamp` (it is signed verbatim, and the
    server rejects it if its clock differs by more than its allowed slew).
    Version 1.3 (SHA-256) is what current servers prefer; 1.0 (SHA-1) is
    what old servers and goiardi understand too.
    """
    canonical = CanonicalRequest.build(method=method, path=path, body=body, user_id=user_id,
                                       timestamp=timestamp, version=version,
                                       server_api_version=server_api_version)
    text = canonical.text().encode("utf-8")
    if version == "1.3":
        signature = private_key.sign(text, padding.PKCS1v15(), hashes.SHA256())
    else:
        signature = _private_encrypt(private_key, text)
    headers = {
        "X-Ops-Sign": f"algorithm={canonical.algorithm};version={version};",
        "X-Ops-Userid": user_id,
        "X-Ops-Timestamp": timestamp,
        "X-Ops-Content-Hash": canonical.content_hash,
        "X-Ops-Server-API-Version": canonical.server_api_version,
        "X-Chef-Version": CHEF_VERSION,
    }
    headers.update(split_authorization(signature))
    return headers


# --------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------

def load_private_key(key: str | bytes | Path, *, setting: str = "chef.key") -> rsa.RSAPrivateKey:
    """The client's RSA private key from a PEM file path or PEM bytes/text.

    Every failure is a `ConfigError` naming `setting` and the file (never
    the key's content), because the fix is always in the configuration.
    """
    where = "the key given"
    if isinstance(key, bytes):
        pem = key
    elif isinstance(key, str) and key.lstrip().startswith("-----BEGIN"):
        pem = key.encode()
    else:
        path = Path(key).expanduser()
        where = str(path)
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(f"{setting}: key file {path} does not exist; set it to the "
                              f"path of the Chef client's private key (.pem)") from None
        except OSError as exc:
            raise ConfigError(f"{setting}: cannot read key file {path}: {exc.strerror or exc}; "
                              f"make it readable by this user") from None
    try:
        loaded = serialization.load_pem_private_key(pem, password=None)
    except TypeError:
        raise ConfigError(f"{setting}: {where} is encrypted with a passphrase; Chef client keys "
                          f"are used unencrypted (openssl rsa -in KEY -out KEY.pem)") from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{setting}: {where} is not a PEM private key; use the client key "
                          f"the Chef server issued (-----BEGIN RSA PRIVATE KEY-----)") from None
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise ConfigError(f"{setting}: {where} is not an RSA key; Chef signs only with RSA "
                          f"client keys")
    return loaded


# --------------------------------------------------------------------------
# Client (I/O)
# --------------------------------------------------------------------------

class ChefRequestError(DockshipError):
    """The Chef server answered with an HTTP error; `status` lets callers handle 404/409."""

    def __init__(self, message: str, *, status: int, server_message: str):
        super().__init__(message)
        self.status = status
        self.server_message = server_message


def _server_message(response: deadline.Answer) -> str:
    """Chef's `{"error": [...]}` as one line, or the start of whatever else came back."""
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if isinstance(payload, dict) and "error" in payload:
        error = payload["error"]
        text = "; ".join(map(str, error)) if isinstance(error, list) else str(error)
    else:
        text = response.text or response.reason or ""
    text = printable(" ".join(text.split()))
    if not text:
        return f"HTTP {response.status_code}"
    return text if len(text) <= 300 else text[:300] + "…"


class ChefClient:
    """One Chef client identity talking to one server (or organization).

    The key is loaded at construction, so a bad `chef.key` is reported
    before any network call; the HTTP session opens on first use and is
    closed by `close()` or leaving the `with` block.
    """

    def __init__(self, url: str, client: str, key: str | bytes | Path, *,
                 sign_version: SignVersion = "1.3", server_api_version: str = "1",
                 verify: bool | str = True, timeout: float = deadline.TOTAL,
                 setting: str = "chef") -> None:
        """`setting` is where these values live in dockship.toml (e.g.
        `environments.stage.chef`); error messages name it so users know what to edit."""
        if sign_version not in _DIGEST_FOR_VERSION:
            raise ConfigError(f"{setting}.sign_version: {sign_version!r} is not a Chef sign "
                              f"version; use one of {', '.join(_DIGEST_FOR_VERSION)}")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"{setting}.url: {url!r} is not an http(s) URL; "
                              f"write e.g. https://chef.example.com/organizations/acme")
        self.url = url.rstrip("/")
        self.shown = redact_url(self.url)      # the URL in every message: no credentials
        self.client = client
        self.sign_version: SignVersion = sign_version
        self.server_api_version = str(server_api_version)
        self.verify = verify
        self.timeout = timeout
        self.setting = setting
        self._key = load_private_key(key, setting=f"{setting}.key")
        self._session: requests.Session | None = None

    def __repr__(self) -> str:
        return f"ChefClient(url={self.shown!r}, client={self.client!r})"

    # -- lifecycle ---------------------------------------------------------

    @property
    def session(self) -> requests.Session:
        if self._session is None:
            self._session = requests.Session()
            self._session.verify = self.verify
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> "ChefClient":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- requests ----------------------------------------------------------

    def url_for(self, path: str) -> str:
        """`path` (e.g. "nodes/web1") under the base URL, keeping any organization prefix."""
        return f"{self.url}/{path.lstrip('/')}"

    def request(self, method: str, path: str, *, json_body: Any = None,
                params: Mapping[str, str | int] | None = None) -> Any:
        """Send one signed request and return its parsed JSON (None for an empty answer)."""
        url = self.url_for(path)
        body = b"" if json_body is None else json.dumps(json_body, separators=(",", ":")).encode()
        try:
            headers = sign_request(method=method, path=urlsplit(url).path, body=body,
                                   user_id=self.client, private_key=self._key,
                                   timestamp=chef_timestamp(), version=self.sign_version,
                                   server_api_version=self.server_api_version)
        except ValueError as exc:
            raise ConfigError(f"{self.setting}.sign_version: cannot sign as client "
                              f"'{self.client}': {exc}") from None
        headers["Accept"] = "application/json"
        if json_body is not None:
            headers["Content-Type"] = "application/json"
        try:
            # No redirects: the signature covers this path, so a redirected
            # request would fail with a misleading 401.
            response = deadline.request(self.session, method, url, what=f"Chef server {self.shown}",
                                        total=self.timeout, params=params, data=body or None,
                                        headers=headers, allow_redirects=False)
        except requests.exceptions.SSLError as exc:
            raise ConfigError(f"{self.setting}.url: {http_failure(f'Chef server {self.shown}', exc)}; "
                              "make its certificate trusted here (the system CAs, or a CA "
                              "bundle in REQUESTS_CA_BUNDLE)") from None
        except (requests.RequestException, deadline.NoAnswer) as exc:
            said = str(exc) if isinstance(exc, deadline.NoAnswer) else \
                http_failure(f"Chef server {self.shown}", exc)
            raise Unreachable(f"{said}; check {self.setting}.url and that the server is up") from None
        return self._parse(method, path, response)

    def _parse(self, method: str, path: str, response: deadline.Answer) -> Any:
        status = response.status_code
        if status == 401 and "clock" in _server_message(response).lower():
            raise DockshipError(f"Chef server at {self.shown} rejected the request's timestamp: "
                                f"{_server_message(response)} (this machine's UTC time is "
                                f"{chef_timestamp()}); fix the clock here or on the server")
        if status == 401:
            raise ConfigError(f"Chef server at {self.shown} rejected client '{self.client}': "
                              f"{_server_message(response)}; check {self.setting}.client and "
                              f"{self.setting}.key")
        if 300 <= status < 400:
            target = printable(response.headers.get("Location", "elsewhere"))
            raise ConfigError(f"{self.setting}.url: Chef server at {self.shown} redirects "
                              f"{method} {path.lstrip('/')} to {target}; set {self.setting}.url "
                              f"to the address it redirects to")
        if status >= 400:
            message = _server_message(response)
            what = f"{method} {path.lstrip('/')}"
            hint = (f"; client '{self.client}' lacks permission" if status == 403 else "")
            raise ChefRequestError(f"Chef server at {self.shown}: {what} failed with HTTP "
                                   f"{status}: {message}{hint}", status=status,
                                   server_message=message)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise DockshipError(f"Chef server at {self.shown}: {method} {path.lstrip('/')} "
                                f"answered HTTP {status} with non-JSON content; is "
                                f"{self.setting}.url a Chef server?") from None

    def get(self, path: str, *, params: Mapping[str, str | int] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, json: Any) -> Any:  # noqa: A002 - mirrors requests' name
        return self.request("POST", path, json_body=json)

    def put(self, path: str, json: Any) -> Any:  # noqa: A002
        return self.request("PUT", path, json_body=json)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    # -- search ------------------------------------------------------------

    def search(self, index: str, query: str = "*:*", *, rows: int = 1000,
               keys: Mapping[str, Sequence[str]] | None = None) -> list[dict[str, Any]]:
        """Every object of `index` matching `query`, sorted by name.

        With `keys` (e.g. `{"address": ["automatic", "ipaddress"]}`) it runs
        a partial search and returns just those values per object (far less
        data for nodes) as plain dicts, sorted by their "name" if requested.

        Pages with `start`/`rows` until a page comes back short, because
        goiardi's `total` counts only the current page. goiardi also orders
        partial-search results afresh on every request, so its pages overlap
        and silently miss objects. A repeated object proves that (if every
        page was disjoint, the pages together hold every object), and so does
        a later page failing (goiardi drops the connection when `start` is
        past the end); either way the search is asked again as one page big
        enough for all, so no node is ever left out of a roll.
        """
        if rows < 1:
            raise ValueError("rows must be at least 1")
        body = None if keys is None else {k: list(v) for k, v in keys.items()}
        found, complete = self._search_paged(index, query, rows, body)
        if not complete:
            found = self._search_one_page(index, query, body, rows=len(found) + rows)
        return [item for _, item in sorted(found.values(), key=lambda pair: pair[0])]

    def _search_page(self, index: str, query: str, body: dict[str, list[str]] | None,
                     *, start: int, rows: int) -> list[Any]:
        path = f"search/{quote(index, safe='')}"
        params = {"q": query, "start": start, "rows": rows}
        try:
            page = self.request("GET" if body is None else "POST", path, json_body=body,
                                params=params)
        except ChefRequestError as exc:
            raise ChefRequestError(f"Chef server at {self.shown} refused the search of "
                                   f"{index!r} for {query!r} (HTTP {exc.status}): "
                                   f"{exc.server_message}", status=exc.status,
                                   server_message=exc.server_message) from None
        page_rows = page.get("rows") if isinstance(page, dict) else None
        if not isinstance(page_rows, list):
            raise DockshipError(f"Chef server at {self.shown}: search of {index!r} answered "
                                f"without a list of rows; is this a Chef server?")
        return page_rows

    def _search_paged(self, index: str, query: str, rows: int,
                      body: dict[str, list[str]] | None) -> tuple[dict[str, Any], bool]:
        """Objects by identity, and whether the pages provably covered them all."""
        found: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
        start = 0
        while True:
            try:
                page_rows = self._search_page(index, query, body, start=start, rows=rows)
            except Unreachable:
                if start == 0:
                    raise
                return found, False
            for row in page_rows:
                identity, item, sort_key = _search_row(row, partial=body is not None)
                if identity in found:
                    return found, False
                found[identity] = (sort_key, item)
            if len(page_rows) < rows:
                return found, True
            start += len(page_rows)

    def _search_one_page(self, index: str, query: str, body: dict[str, list[str]] | None,
                         *, rows: int) -> dict[str, Any]:
        """The whole result in one request, growing the page until it comes back short."""
        for _ in range(4):
            page_rows = self._search_page(index, query, body, start=0, rows=rows)
            found: dict[str, tuple[tuple[Any, ...], dict[str, Any]]] = {}
            for row in page_rows:
                identity, item, sort_key = _search_row(row, partial=body is not None)
                found[identity] = (sort_key, item)
            if len(page_rows) < rows:
                return found
            rows *= 4
        raise DockshipError(f"Chef server at {self.shown}: the search of {index!r} for "
                            f"{query!r} kept returning full pages up to {rows // 4} rows; "
                            f"retry when the server is quieter")


def _search_row(row: Any, *, partial: bool) -> tuple[str, dict[str, Any], tuple[Any, ...]]:
    """(identity for de-duplication, the dict to return, its sort key) of one search row.

    Partial rows are `{"url": ..., "data": {...}}`: the url identifies the
    object even when the requested keys leave out its name.
    """
    if partial and isinstance(row, dict) and "data" in row:
        item = row.get("data") or {}
        url = str(row.get("url") or "")
    else:
        item = row if isinstance(row, dict) else {"value": row}
        url = ""
    name = item.get("name")
    if url:
        identity = f"url:{url}"
    elif name is not None:
        identity = f"name:{item.get('chef_type', '')}:{name}"
    else:
        identity = "json:" + json.dumps(item, sort_keys=True, default=str)
    sort_key = (name is None, "" if name is None else str(name), url)
    return identity, item, sort_key


# --------------------------------------------------------------------------
# Writes used by the lab (and by users seeding a test server)
# --------------------------------------------------------------------------

def create_client(admin: ChefClient, name: str) -> bytes:
    """Create API client `name` and return its new private key (PEM).

    A server only hands out a private key when it creates the client, so an
    existing client of that name is deleted and created again; that keeps
    `lab up` idempotent at the price of invalidating the old key.
    """
    payload = {"name": name, "admin": False, "create_key": True}
    try:
        answer = admin.post("clients", payload)
    except ChefRequestError as exc:
        if exc.status != 409:
            raise
        admin.delete(f"clients/{quote(name, safe='')}")
        answer = admin.post("clients", payload)
    key = (answer or {}).get("private_key") or ((answer or {}).get("chef_key") or {}).get("private_key")
    if not key:
        raise DockshipError(f"Chef server at {admin.url} created client '{name}' but returned "
                            f"no private key")
    return key.encode() if isinstance(key, str) else bytes(key)


def ensure_environment(admin: ChefClient, name: str, *, description: str = "") -> None:
    """Create environment `name` unless it exists (nodes cannot join a missing one)."""
    body = {"name": name, "description": description, "json_class": "Chef::Environment",
            "chef_type": "environment", "cookbook_versions": {},
            "default_attributes": {}, "override_attributes": {}}
    _create_if_missing(admin, "environments", body)


def ensure_role(admin: ChefClient, name: str, *, description: str = "") -> None:
    """Create an empty role `name` unless it exists, so `role[name]` run lists resolve."""
    body = {"name": name, "description": description, "json_class": "Chef::Role",
            "chef_type": "role", "run_list": [], "env_run_lists": {},
            "default_attributes": {}, "override_attributes": {}}
    _create_if_missing(admin, "roles", body)


def _create_if_missing(admin: ChefClient, collection: str, body: dict[str, Any]) -> None:
    try:
        admin.post(collection, body)
    except ChefRequestError as exc:
        if exc.status != 409:
            raise


def upsert_node(admin: ChefClient, name: str, *, environment: str, run_list: Sequence[str],
                automatic: Mapping[str, Any], normal: Mapping[str, Any]) -> None:
    """Create node `name` or replace it whole with these attributes.

    A replace rather than a merge, so stale attributes from an earlier lab
    cannot leak into search results.
    """
    body = {"name": name, "chef_environment": environment, "json_class": "Chef::Node",
            "chef_type": "node", "run_list": list(run_list), "automatic": dict(automatic),
            "normal": dict(normal), "default": {}, "override": {}}
    try:
        admin.post("nodes", body)
    except ChefRequestError as exc:
        if exc.status != 409:
            raise
        admin.put(f"nodes/{quote(name, safe='')}", body)
