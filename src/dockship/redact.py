"""Keeping secrets out of everything dockship shows, and server text out of the terminal's control.

dockship holds registry and index credentials, and (design §11, §12) SMTP
passwords and per-service secrets. Any of them can surface in a line meant
for people: a URL in a configuration key, the text of a requests or urllib3
exception, a hook's environment. This module is the one place that decides
what is hidden; everything that shows a URL or prints text asks it.

What is redacted, in any text (`redact`) or one URL (`redact_url`):

- the userinfo of a URL: ``scheme://user:password@host`` → ``scheme://***@host``.
  The userinfo runs to the *last* ``@`` of the URL, so a password holding
  ``/ @ : %`` (raw or percent-encoded) is hidden whole. When a ``?`` or ``#``
  comes before that ``@`` nobody can tell a password holding them from an
  ``@`` inside a query: everything after ``scheme://`` is hidden. An http(s) (or any
  non-ssh) ``user@`` is hidden too, since it may be a token; an ``ssh://user@``
  without a password is a login name and stays. A ``scheme://user:secret``
  cut off before its ``@`` (a password with a space, split by the text
  around it) still has everything after the first ``:`` hidden, unless it is
  a port (digits).
- query strings and fragments of URLs are dropped whole (``?token=…``,
  ``#…``): any parameter may be a token. urllib3's ``… with url: /path?query``
  gets the same treatment.
- path segments that look like tokens: 20 or more characters of
  ``[A-Za-z0-9_~-]`` mixing letters and digits (``/1a2b3c4d5e6f7g8h9i0j/simple/``).
  A token that is short, all letters, or holds a ``.`` cannot be told from a
  package name and is not hidden by shape; the scrubber below hides it when
  its value is known. Digests (``sha256:…``) keep their shape and stay.
- ``token=``, ``access_token=``, ``password=``, ``secret=`` … values anywhere
  in text, and ``Basic``/``Bearer`` credentials.

What `scrub` removes: known secret values (`Secrets`): the values of the
secret environment variables (`DOCKSHIP_REGISTRY_PASSWORD`,
`DOCKSHIP_SMTP_PASSWORD`, and service secrets named later), and values
handed to `remember` (a password read from a URL or a credential helper), in
their raw and percent-encoded forms. Values shorter than
`MIN_SECRET_LENGTH` are not scrubbed: replacing every "ab" in a message would
make it unreadable while guarding almost nothing.

`safe` is what printing code uses: scrubbed, redacted, control characters
escaped.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import quote, unquote

from dockship.errors import printable

__all__ = ["MASK", "MIN_SECRET_LENGTH", "Secrets", "known", "redact", "redact_url", "remember",
           "remember_names", "safe", "url_secrets"]

MASK = "***"
MIN_SECRET_LENGTH = 4

# Variables never passed on (hooks) and whose values are never shown.
SECRET_PREFIXES = ("DOCKSHIP_REGISTRY_",)
SECRET_NAMES = frozenset({"DOCKSHIP_SMTP_PASSWORD", "DOCKER_AUTH_CONFIG"})
# Of those, the ones holding one plain secret value worth scrubbing from text.
_SCRUBBED_NAMES = ("DOCKSHIP_REGISTRY_PASSWORD", "DOCKSHIP_SMTP_PASSWORD")

_SCHEME_END_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*$")
_TOKEN_SEGMENT_RE = re.compile(r"(?=[A-Za-z0-9_~-]*[0-9])(?=[A-Za-z0-9_~-]*[A-Za-z])[A-Za-z0-9_~-]{20,}")
_WITH_URL_RE = re.compile(r"(with url: )(\S+)")
_KEY_VALUE_RE = re.compile(r"(?i)\b((?:access_|auth_|api_|private_)?(?:token|password|passwd|secret|"
                           r"api_?key|signature|sig)=)[^&\s'\"]+")
_AUTH_RE = re.compile(r"(?i)\b(Basic|Bearer)\s+[A-Za-z0-9._~+/=-]{8,}")
_TAIL = ")]},;:.!'\""


def _path(path: str) -> str:
    """A path with its query and fragment dropped and token-like segments masked."""
    path = re.split(r"[?#]", path, maxsplit=1)[0]
    return "/".join(MASK if _TOKEN_SEGMENT_RE.fullmatch(seg) else seg for seg in path.split("/"))


def _authority_and_path(rest: str, scheme: str) -> str:
    """What follows ``scheme://`` with its userinfo masked (see the module's rules)."""
    head, at, after = rest.rpartition("@")
    if at and ("?" in head or "#" in head):
        return MASK      # a password holding ? or #, or an @ in a query: either way, nothing is sure
    if at:
        login = scheme.lower() == "ssh" and not any(ch in head for ch in ":/%")
        return f"{head if login else MASK}@{_host_and_path(after)}"
    return _host_and_path(rest)


def _host_and_path(rest: str) -> str:
    m = re.match(r"(\[[^\]/?#]*\]?|[^/?#]*)(.*)", rest, re.S)
    assert m is not None
    host, path = m.group(1), m.group(2)
    if not host.startswith("["):
        name, colon, port = host.partition(":")
        if port and not port.isdigit():
            host = f"{name}:{MASK}"      # user:password with its @ cut off, never a port
    return host + _path(path)


def redact_url(url: str) -> str:
    """One URL fit to show: credentials, query, fragment and token-like path segments hidden.

    >>> redact_url("https://me:p/ss@[::1]:8443/a1b2c3d4e5f6g7h8i9j0/simple/?token=x")
    'https://***@[::1]:8443/***/simple/'
    >>> redact_url("ssh://root@node1:22")
    'ssh://root@node1:22'
    """
    m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", url)
    if not m:
        return _authority_and_path(url, "")
    return m.group(0) + _authority_and_path(url[m.end():], m.group(1))


def _url_in_text(token: str) -> str:
    """A whitespace-free piece of text holding ``://``: what follows it redacted as a URL
    (whatever its scheme looks like), what leads and trails the URL kept."""
    at = token.index("://")
    m = _SCHEME_END_RE.search(token[:at])
    scheme = m.group(0) if m else ""
    rest = token[at + 3:]
    stripped = rest.rstrip(_TAIL)
    return (token[:at + 3] + _authority_and_path(stripped, scheme)
            + rest[len(stripped):])


def redact(text: str) -> str:
    """`text` with every URL, urllib3 ``with url:`` path, ``token=`` value and auth header redacted."""
    text = re.sub(r"\S+", lambda m: _url_in_text(m.group(0)) if "://" in m.group(0) else m.group(0),
                  text)
    text = _WITH_URL_RE.sub(lambda m: m.group(1) + _path(m.group(2)), text)
    text = _KEY_VALUE_RE.sub(lambda m: m.group(1) + MASK, text)
    return _AUTH_RE.sub(lambda m: f"{m.group(1)} {MASK}", text)


def url_secrets(url: str) -> frozenset[str]:
    """The secrets a configured URL carries (its password, and an http(s) user that may be a token),
    for `remember`: the scrubber then hides them even where the URL's shape is lost."""
    m = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://(.*)", url, re.S)
    if not m or "@" not in m.group(2):
        return frozenset()
    userinfo = m.group(2).rpartition("@")[0]
    user, colon, password = userinfo.partition(":")
    found = {password} if colon else set()
    if m.group(1).lower() != "ssh":
        found.add(user)
    return frozenset(v for v in found if v)


@dataclass(frozen=True)
class Secrets:
    """Names and values that never reach hooks or output.

    `names` adds variables to the fixed secret ones (a service's ``secrets``,
    design §11); `values` are secret values however they are named.
    """

    names: frozenset[str] = frozenset()
    values: frozenset[str] = frozenset()

    def __or__(self, other: Secrets) -> Secrets:
        return Secrets(self.names | other.names, self.values | other.values)

    def is_secret_name(self, name: str) -> bool:
        return name in SECRET_NAMES or name.startswith(SECRET_PREFIXES) or name in self.names

    def with_environ(self, environ: Mapping[str, str]) -> Secrets:
        """These secrets plus the values of the secret variables set in `environ`."""
        named = (*_SCRUBBED_NAMES, *self.names)
        return Secrets(self.names, self.values | {environ[n] for n in named if environ.get(n)})

    def clean_environ(self, environ: Mapping[str, str]) -> dict[str, str]:
        """`environ` without secret variables, nor any variable whose value holds a secret value."""
        values = self._scrubbable()
        return {k: v for k, v in environ.items()
                if not self.is_secret_name(k) and not any(s in v for s in values)}

    def scrub(self, text: str) -> str:
        """`text` with every known secret value (raw, percent-encoded or decoded) replaced by ***."""
        forms = {f for v in self._scrubbable() for f in (v, quote(v, safe=""), quote(v), unquote(v))
                 if len(f) >= MIN_SECRET_LENGTH}
        for form in sorted(forms, key=len, reverse=True):    # longest first: no half-hidden value
            text = text.replace(form, MASK)
        return text

    def _scrubbable(self) -> tuple[str, ...]:
        return tuple(v for v in self.values if len(v) >= MIN_SECRET_LENGTH)


_remembered: set[str] = set()
_remembered_names: set[str] = set()
_remembered_lock = threading.Lock()


def remember(*values: str) -> None:
    """Add secret values (a password from a URL, a credential helper's answer) to what `known`
    scrubs for the rest of the process."""
    with _remembered_lock:
        _remembered.update(v for v in values if v)


def remember_names(*names: str) -> None:
    """Add variable names (a service's ``secrets``) that hooks never get, for the rest of the
    process; their values in this process's environment are scrubbed like remembered ones."""
    with _remembered_lock:
        _remembered_names.update(n for n in names if n)


def known(names: Iterable[str] = ()) -> Secrets:
    """The secrets of this process: remembered values and names, and the secret variables of
    its environment."""
    with _remembered_lock:
        values = frozenset(_remembered)
        named = frozenset(_remembered_names)
    return Secrets(frozenset(names) | named, values).with_environ(os.environ)


def safe(text: object, *, newlines: bool = False) -> str:
    """`text` ready for a terminal: known secrets scrubbed, URLs redacted, control characters
    (ESC, CR, C1 like CSI ``\\x9b``, bidi overrides) escaped; line breaks too unless `newlines`.
    Markup is the caller's business: hand the result to rich as a `Text`, or `escape` it."""
    shown = printable(redact(known().scrub(str(text))))
    return shown if newlines else shown.replace("\n", "\\n")
