"""A small client of the Docker Registry HTTP API v2, over requests.

It answers what dockship needs to know about a registry without pulling
anything: does a tag exist and which digest does it name, which tags does a
repository hold, which labels (build inputs, design §4) does an image carry,
and is the registry there and do our credentials work.

Transport, as docker itself does it:

* https by default, verified with `ca_bundle` if given, else the CA at
  `/etc/docker/certs.d/HOST[:PORT]/ca.crt` when there is one (the docker
  convention the lab uses; a `client.cert`/`client.key` pair there is sent
  too), else the system CAs;
* plain http only for a loopback registry (127.0.0.0/8, ::1, localhost),
  which docker treats as insecure, and only when https fails in a way that
  means "no TLS here" (never after a certificate was refused);
* on a 401: `Basic` gets the credentials; `Bearer realm=…,service=…,scope=…`
  gets a token from the realm (with the credentials when there are any),
  cached per scope until it expires.

Every failure is a DockshipError with one line: Unreachable when the registry
does not answer (or answers 5xx), UsageError when the fix is the user's
(credentials, certificates, names), ImageNotFound for a missing image.
Neither the password nor a token ever appears in a message.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import re
import time
from pathlib import Path
from typing import NoReturn
from urllib.parse import urljoin, urlsplit

import requests

from dockship import __version__, deadline
from dockship.credentials import Credentials, login_hint
from dockship.errors import DockshipError, Unreachable, UsageError, printable
from dockship.failures import http_failure
from dockship.redact import redact_url

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_V1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_MANIFEST_V1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
MANIFEST_ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST, DOCKER_MANIFEST_LIST, DOCKER_MANIFEST_V2])
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)

DOCKER_CERTS_DIR = Path("/etc/docker/certs.d")

_REGISTRY_RE = re.compile(
    r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::(?P<port>\d{1,5}))?$")
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REPO_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
_CHALLENGE_PARAM_RE = re.compile(r'([A-Za-z_][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
_TOKEN_MARGIN = 10.0  # seconds: refresh a token this long before it expires


class ImageNotFound(UsageError):
    """The registry holds no such repository, tag or digest."""


class RegistryClient:
    """Ask a Docker registry (`HOST[:PORT]`, no scheme) about its repositories."""

    def __init__(self, registry: str, *, credentials: Credentials | None = None,
                 ca_bundle: str | None = None, timeout: float = deadline.TOTAL,
                 certs_dir: Path = DOCKER_CERTS_DIR):
        match = _REGISTRY_RE.match(registry or "")
        if not match or (match["port"] and not 0 < int(match["port"]) < 65536):
            raise UsageError(f"registry {registry!r} is not HOST[:PORT] (no scheme, no path), "
                             "e.g. 10.77.0.1:5000")
        self.registry = registry
        self.credentials = credentials
        self.timeout = timeout
        self._loopback = _is_loopback(match["host"])
        self._scheme: str | None = None
        self._auth_kind: str | None = None          # "basic" or "bearer" once challenged
        self._tokens: dict[str, tuple[str, float]] = {}  # scope -> (token, expires at)

        certs = Path(certs_dir) / registry
        if ca_bundle and not Path(ca_bundle).is_file():
            raise UsageError(f"CA bundle {ca_bundle} for registry {registry} is not a file")
        self._ca_source = str(ca_bundle) if ca_bundle else (
            str(certs / "ca.crt") if (certs / "ca.crt").is_file() else None)
        self._certs_dir = certs
        # Passed with every request: requests lets REQUESTS_CA_BUNDLE /
        # CURL_CA_BUNDLE override a Session's own `verify`.
        self._tls: dict = {"verify": self._ca_source or True, "cert": _client_cert(certs)}
        self._session = requests.Session()
        self._session.headers["User-Agent"] = f"dockship/{__version__}"

    def __repr__(self) -> str:
        return f"RegistryClient({self.registry!r}, credentials={self.credentials!r})"

    # -- public API -------------------------------------------------------

    def ping(self) -> None:
        """Check that the registry answers the v2 API and accepts our credentials."""
        resp = self._request("GET", "/v2/", scope="")
        if resp.status_code == 200:
            return
        if resp.status_code == 404:
            raise UsageError(f"registry {self.registry} does not serve the registry API v2 "
                             f"(GET /v2/ answered 404)")
        self._fail(resp, "GET /v2/")

    def manifest_digest(self, repo: str, tag: str) -> str | None:
        """The digest `repo:tag` names (`sha256:…`), or None when there is no such tag."""
        _check_repo(repo)
        _check_ref(tag)
        path = f"/v2/{repo}/manifests/{tag}"
        resp = self._request("HEAD", path, scope=_pull_scope(repo),
                             headers={"Accept": MANIFEST_ACCEPT})
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            self._fail(resp, f"HEAD {path}")
        digest = resp.headers.get("Docker-Content-Digest")
        if digest:
            return digest
        # Some registries leave the header off HEAD answers: hash the manifest.
        resp = self._request("GET", path, scope=_pull_scope(repo),
                             headers={"Accept": MANIFEST_ACCEPT})
        if resp.status_code == 404:
            return None
        if resp.status_code != 200:
            self._fail(resp, f"GET {path}")
        return resp.headers.get("Docker-Content-Digest") or \
            "sha256:" + hashlib.sha256(resp.content).hexdigest()

    def tags(self, repo: str, *, page_size: int = 100) -> list[str]:
        """Every tag of `repo`, sorted and without repeats; [] when the repository is unknown.

        Pages with `n` and `last`, following the `Link: <…>; rel="next"`
        header; a registry that ignores `n` (distribution 2.8) answers in one page.
        """
        _check_repo(repo)
        if page_size < 1:
            raise UsageError(f"page_size must be at least 1, not {page_size}")
        path = f"/v2/{repo}/tags/list"
        params: dict[str, str | int] | None = {"n": page_size}
        found: set[str] = set()
        seen_pages: set[str] = set()
        while path is not None:
            resp = self._request("GET", path, scope=_pull_scope(repo), params=params)
            if resp.status_code == 404:
                if not found:
                    return []
                break
            if resp.status_code != 200:
                self._fail(resp, f"GET {path}")
            body = self._json(resp, f"GET {path}")
            page = body.get("tags") if isinstance(body, dict) else None
            if page is not None and not isinstance(page, list):
                raise DockshipError(f"registry {self.registry} answered GET {path} "
                                    "with a tag list that is not a list")
            found.update(str(tag) for tag in page or [])
            path, params = self._next_page(resp), None
            if path is not None:
                if path in seen_pages or not page:
                    break  # a registry paging in circles: what we have is all there is
                seen_pages.add(path)
        return sorted(found)

    def image_labels(self, repo: str, ref: str) -> dict[str, str]:
        """The labels of image `repo:ref` (a tag or a digest); {} when it has none.

        For a multi-platform index the linux/amd64 image is read (else the
        first image of the index). Raises ImageNotFound when there is no such image.
        """
        _check_repo(repo)
        _check_ref(ref)
        manifest, media_type = self._manifest(repo, ref)
        if media_type in INDEX_TYPES or "manifests" in manifest:
            entries = manifest.get("manifests") or []
            chosen = _pick_platform(entries)
            if chosen is None:
                raise DockshipError(f"image {self._name(repo, ref)} is an empty "
                                    "multi-platform index")
            manifest, media_type = self._manifest(repo, chosen["digest"])
        if media_type in (DOCKER_MANIFEST_V1, DOCKER_MANIFEST_V1_SIGNED) or "history" in manifest:
            return _labels_v1(manifest)
        config = manifest.get("config")
        if not isinstance(config, dict) or not isinstance(config.get("digest"), str):
            raise DockshipError(f"image {self._name(repo, ref)}: manifest of type "
                                f"{media_type or 'unknown'} has no config")
        blob = self._blob(repo, config["digest"])
        try:
            image_config = json.loads(blob)
        except ValueError:
            raise DockshipError(f"image {self._name(repo, ref)}: its config blob is not JSON") from None
        config_part = image_config.get("config") if isinstance(image_config, dict) else None
        labels = config_part.get("Labels") if isinstance(config_part, dict) else None
        if labels is not None and not isinstance(labels, dict):
            raise DockshipError(f"image {self._name(repo, ref)}: its config's Labels is not an "
                                "object; the registry holds a damaged or foreign image")
        return {str(k): str(v) for k, v in (labels or {}).items()}

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def scheme(self) -> str | None:
        """`https` or `http` once the first request found out; None before."""
        return self._scheme

    # -- reading manifests and blobs -------------------------------------

    def _manifest(self, repo: str, ref: str) -> tuple[dict, str]:
        path = f"/v2/{repo}/manifests/{ref}"
        resp = self._request("GET", path, scope=_pull_scope(repo),
                             headers={"Accept": MANIFEST_ACCEPT})
        if resp.status_code == 404:
            raise ImageNotFound(f"image {self._name(repo, ref)} not found in the registry")
        if resp.status_code != 200:
            self._fail(resp, f"GET {path}")
        if ref.startswith("sha256:") and hashlib.sha256(resp.content).hexdigest() != ref[7:]:
            raise DockshipError(f"registry {self.registry} served a manifest for "
                                f"{repo}@{ref} that does not match that digest")
        body = self._json(resp, f"GET {path}")
        if not isinstance(body, dict):
            raise DockshipError(f"registry {self.registry} answered GET {path} with a "
                                "manifest that is not a JSON object")
        media_type = resp.headers.get("Content-Type", "").split(";")[0].strip()
        if media_type not in (*INDEX_TYPES, OCI_MANIFEST, DOCKER_MANIFEST_V2,
                              DOCKER_MANIFEST_V1, DOCKER_MANIFEST_V1_SIGNED):
            media_type = str(body.get("mediaType") or media_type)
        return body, media_type

    def _blob(self, repo: str, digest: str) -> bytes:
        _check_ref(digest)
        path = f"/v2/{repo}/blobs/{digest}"
        resp = self._request("GET", path, scope=_pull_scope(repo))
        if resp.status_code == 404:
            raise ImageNotFound(f"blob {digest} of {self.registry}/{repo} not found in the registry")
        if resp.status_code != 200:
            self._fail(resp, f"GET {path}")
        algorithm, _, expected = digest.partition(":")
        if algorithm in hashlib.algorithms_available and \
                hashlib.new(algorithm, resp.content).hexdigest() != expected:
            raise DockshipError(f"registry {self.registry} served blob {digest} of {repo} "
                                "with content that does not match its digest")
        return resp.content

    def _next_page(self, resp: deadline.Answer) -> str | None:
        link = resp.links.get("next", {}).get("url")
        if not link:
            return None
        url = urlsplit(urljoin(resp.url, link))
        # Only ever follow to this registry: our credentials go with the request.
        return url.path + (f"?{url.query}" if url.query else "")

    # -- HTTP, scheme and authentication ----------------------------------

    def _request(self, method: str, path: str, *, scope: str,
                 headers: dict[str, str] | None = None,
                 params: dict | None = None) -> deadline.Answer:
        """Send, answering one authentication challenge; 401s left over become UsageErrors."""
        resp = self._send(method, path, headers={**(headers or {}), **self._auth_header(scope)},
                          params=params)
        if resp.status_code != 401:
            return self._check_forbidden(resp, method, path)
        challenge = resp.headers.get("WWW-Authenticate", "")
        kind, fields = _parse_challenge(challenge)
        kind = kind or "basic"  # a 401 without a challenge: credentials are all we can offer
        if kind == "basic":
            if self.credentials is None:
                raise self._needs_credentials()
            if self._auth_kind == "basic":  # we sent them, and they were refused
                raise self._rejected()
            self._auth_kind = "basic"
        elif kind == "bearer":
            if not fields.get("realm"):
                raise DockshipError(f"registry {self.registry} asked for a bearer token "
                                    "without saying where to get one (no realm)")
            self._auth_kind = "bearer"
            self._fetch_token(fields, scope)
        else:
            raise UsageError(f"registry {self.registry} asks for {kind or 'an unknown'} "
                             "authentication, which dockship does not speak (only Basic and Bearer)")
        resp = self._send(method, path, headers={**(headers or {}), **self._auth_header(scope)},
                          params=params)
        if resp.status_code == 401:
            if self.credentials is None:
                raise self._needs_credentials()
            if kind == "basic":
                raise self._rejected()
            raise UsageError(f"registry {self.registry} refused {method} {path} to "
                             f"{self.credentials.describe()}: no access to "
                             f"{fields.get('scope') or scope or 'the registry'}")
        return self._check_forbidden(resp, method, path)

    def _check_forbidden(self, resp: deadline.Answer, method: str, path: str) -> deadline.Answer:
        if resp.status_code == 403:
            who = self.credentials.describe() if self.credentials else "anonymous users"
            raise UsageError(f"registry {self.registry} forbids {method} {path} to {who}"
                             f"{self._error_detail(resp)}")
        return resp

    def _auth_header(self, scope: str) -> dict[str, str]:
        if self._auth_kind == "basic" and self.credentials is not None:
            return {"Authorization": "Basic " + _basic(self.credentials)}
        if self._auth_kind == "bearer":
            cached = self._tokens.get(scope)
            if cached and cached[1] > time.monotonic():
                return {"Authorization": f"Bearer {cached[0]}"}
        return {}

    def _fetch_token(self, challenge: dict[str, str], scope: str) -> None:
        """Get a token for the challenge's scope from its realm and cache it."""
        realm = challenge["realm"]
        wanted = challenge.get("scope", scope)
        params: list[tuple[str, str]] = []
        if challenge.get("service"):
            params.append(("service", challenge["service"]))
        params += [("scope", s) for s in wanted.split()]
        where = printable(urlsplit(realm).netloc or realm)
        headers = {}
        if self.credentials is not None:
            self._check_realm(realm)
            headers["Authorization"] = "Basic " + _basic(self.credentials)
            params.append(("account", self.credentials.username))
        # The registry's own CA (and client certificate) is for the registry's
        # host; a token service elsewhere is checked against the system CAs.
        tls = self._tls if urlsplit(realm).netloc == self.registry else {"verify": True, "cert": None}
        what = f"token service {where} of registry {self.registry}"
        try:
            resp = deadline.request(self._session, "GET", realm, what=what, total=self.timeout,
                                    params=params, headers=headers, **tls)
        except requests.exceptions.RequestException as exc:
            raise self._unreachable_error(exc, what=what) from None
        if resp.status_code == 401:
            raise self._needs_credentials() if self.credentials is None else self._rejected()
        if resp.status_code == 403:
            who = self.credentials.describe() if self.credentials else "anonymous users"
            raise UsageError(f"token service {where} of registry {self.registry} refused "
                             f"{wanted or 'access'} to {who}")
        if resp.status_code != 200:
            self._fail(resp, f"GET token from {where}")
        try:
            body = resp.json()
            token = body.get("token") or body.get("access_token")
            lifetime = float(body.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            token = None
        if not token or not isinstance(token, str):
            raise DockshipError(f"token service {where} of registry {self.registry} "
                                "answered without a token")
        entry = (token, time.monotonic() + max(lifetime - _TOKEN_MARGIN, 1.0))
        self._tokens[wanted] = entry
        self._tokens[scope] = entry

    def _check_realm(self, realm: str) -> None:  # only called with credentials
        """Design §8: credentials go to a token realm only over https or at the registry's own
        origin (same scheme, host and port); a registry cannot send them elsewhere in clear.

        Refused with exit 1, not 2: the registry (or whoever answers for it) is at
        fault, and no key in dockship.toml would make it safe.
        """
        assert self.credentials is not None
        parts = urlsplit(realm)
        scheme = parts.scheme.lower()
        if scheme == "https":
            return
        try:
            origin = (scheme, (parts.hostname or "").lower(),
                      parts.port or {"http": 80}.get(scheme))
        except ValueError:
            origin = None
        own = urlsplit(f"{self._scheme or 'https'}://{self.registry}")
        if origin == (own.scheme, (own.hostname or "").lower(),
                      own.port or {"http": 80, "https": 443}[own.scheme]):
            return
        why = ("plain http on another origin than the registry's" if scheme == "http"
               else "not an https URL")
        raise DockshipError(f"registry {self.registry} names token service "
                            f"{printable(redact_url(realm))}, {why}; dockship does not "
                            f"send it the credentials of {self.credentials.describe()}: the "
                            "token service must use https or the registry's own address")

    def _send(self, method: str, path: str, *, headers: dict[str, str],
              params: dict | None) -> deadline.Answer:
        if self._scheme is not None:
            return self._raw(self._scheme, method, path, headers, params)
        try:
            resp = self._raw("https", method, path, headers, params, probing=True)
        except _PlainHTTP:
            resp = self._raw("http", method, path, headers, params)
            self._scheme = "http"
            return resp
        self._scheme = "https"
        return resp

    def _raw(self, scheme: str, method: str, path: str, headers: dict[str, str],
             params: dict | None, *, probing: bool = False) -> deadline.Answer:
        url = f"{scheme}://{self.registry}{path}"
        try:
            return deadline.request(self._session, method, url, what=f"registry {self.registry}",
                                    total=self.timeout, headers=headers, params=params,
                                    allow_redirects=True, **self._tls)
        except requests.exceptions.SSLError as exc:
            if _is_certificate_error(exc):
                raise self._untrusted(exc) from None
            if probing and self._loopback:
                raise _PlainHTTP() from None
            raise self._unreachable_error(exc) from None
        except requests.exceptions.Timeout as exc:
            raise self._unreachable_error(exc) from None
        except requests.exceptions.ConnectionError as exc:
            if probing and self._loopback:
                raise _PlainHTTP() from None
            raise self._unreachable_error(exc) from None
        except requests.exceptions.RequestException as exc:
            raise self._unreachable_error(exc) from None

    # -- errors -----------------------------------------------------------

    def _needs_credentials(self) -> UsageError:
        return UsageError(f"registry {self.registry} needs credentials: "
                          f"{login_hint(self.registry)}")

    def _rejected(self) -> UsageError:
        assert self.credentials is not None
        return UsageError(f"registry {self.registry} rejected the credentials of "
                          f"{self.credentials.describe()}: {login_hint(self.registry)}")

    def _untrusted(self, exc: Exception) -> UsageError:
        detail = _ssl_detail(exc)
        if self._ca_source:
            hint = f"the CA in {self._ca_source} does not vouch for it"
        else:
            hint = (f"put the registry's CA certificate in {self._certs_dir / 'ca.crt'} "
                    "(where docker looks too)")
        return UsageError(f"registry {self.registry}: TLS certificate not trusted ({detail}); {hint}")

    def _unreachable_error(self, exc: Exception, *, what: str | None = None) -> Unreachable:
        return Unreachable(http_failure(what or f"registry {self.registry}", exc))

    def _fail(self, resp: deadline.Answer, what: str) -> NoReturn:
        status = f"{resp.status_code} {resp.reason or ''}".strip()
        message = f"registry {self.registry}: {what} answered {status}{self._error_detail(resp)}"
        if resp.status_code >= 500:
            raise Unreachable(f"registry {self.registry} unreachable: {what} answered {status}"
                              f"{self._error_detail(resp)}")
        if 400 <= resp.status_code < 500:
            raise UsageError(message)
        raise DockshipError(message)

    @staticmethod
    def _error_detail(resp: deadline.Answer) -> str:
        """`: CODE message; …` from the registry's JSON error body, when it has one."""
        try:
            errors = resp.json().get("errors") or []
            parts = [" ".join(str(e.get(k, "")) for k in ("code", "message")).strip()
                     for e in errors if isinstance(e, dict)]
        except (ValueError, AttributeError):
            return ""
        text = "; ".join(p for p in parts if p)
        return f": {printable(_one_line(text)[:300])}" if text else ""

    def _json(self, resp: deadline.Answer, what: str):
        try:
            return resp.json()
        except ValueError:
            raise DockshipError(f"registry {self.registry} answered {what} with something "
                                "that is not JSON") from None

    def _name(self, repo: str, ref: str) -> str:
        sep = "@" if ":" in ref else ":"
        return f"{self.registry}/{repo}{sep}{ref}"


class _PlainHTTP(Exception):
    """https failed on a loopback registry in a way that means: plain http here."""


# -- helpers ---------------------------------------------------------------

def _is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _client_cert(certs: Path) -> tuple[str, str] | None:
    """The first `NAME.cert` with a `NAME.key` beside it, as docker reads certs.d."""
    try:
        for cert in sorted(certs.glob("*.cert")):
            key = cert.with_suffix(".key")
            if key.is_file():
                return str(cert), str(key)
    except OSError:
        pass
    return None


def _check_repo(repo: str) -> None:
    if not isinstance(repo, str) or len(repo) > 255 or not _REPO_RE.match(repo):
        raise UsageError(f"{repo!r} is not a valid repository name (lowercase letters, digits "
                         "and separators . _ - /, e.g. team/hello)")


def _check_ref(ref: str) -> None:
    if not isinstance(ref, str) or not (_TAG_RE.match(ref) or _DIGEST_RE.match(ref)):
        raise UsageError(f"{ref!r} is neither a valid tag nor a digest")


def _pull_scope(repo: str) -> str:
    return f"repository:{repo}:pull"


def _basic(credentials: Credentials) -> str:
    raw = f"{credentials.username}:{credentials.password}".encode()
    return base64.b64encode(raw).decode("ascii")


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="…",service="…"` → ("bearer", {"realm": …, "service": …})."""
    header = header.strip()
    if not header:
        return "", {}
    kind, _, rest = header.partition(" ")
    fields = {}
    for m in _CHALLENGE_PARAM_RE.finditer(rest):
        value = m.group(2) if m.group(2) is not None else m.group(3)
        fields[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
    return kind.lower(), fields


def _pick_platform(entries: list) -> dict | None:
    images = [e for e in entries if isinstance(e, dict) and isinstance(e.get("digest"), str)]
    # buildx attestations sit in the index as "unknown/unknown" images: never them.
    real = [e for e in images
            if (e.get("annotations") or {}).get("vnd.docker.reference.type") != "attestation-manifest"]
    for entry in real:
        platform = entry.get("platform") or {}
        if platform.get("os") == "linux" and platform.get("architecture") == "amd64":
            return entry
    return (real or images or [None])[0]


def _labels_v1(manifest: dict) -> dict[str, str]:
    try:
        first = json.loads(manifest["history"][0]["v1Compatibility"])
        labels = (first.get("config") or {}).get("Labels") or {}
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in labels.items()} if isinstance(labels, dict) else {}


def _is_certificate_error(exc: Exception) -> bool:
    text = str(exc)
    return "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text \
        or "doesn't match" in text or "hostname mismatch" in text.lower()


def _ssl_detail(exc: Exception) -> str:
    text = str(exc)
    m = re.search(r"certificate verify failed: (.*?)\.?\s*\(_ssl\.c", text) or \
        re.search(r"certificate verify failed: ([^(')\"]+)", text)
    if m:
        return m.group(1).strip().rstrip(".")
    m = re.search(r"(hostname '[^']*' doesn't match[^'\"]*|IP address mismatch[^'\"(]*)", text)
    if m:
        return m.group(1).strip()
    return "certificate verify failed"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())
