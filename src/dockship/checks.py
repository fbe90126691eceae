"""Validators for values users and servers hand us: `xxx_problem(value) -> str | None`.

Each returns None for a good value, or one line saying what is wrong and what
form is expected. They never raise, whatever the value (a nan, a 100k-char
string, a list, bytes), and quote the value escaped and shortened, so the
line can go straight to a terminal after a key path: `config.py`,
`inventory.py` (Chef node data) and the CLI (its arguments) share them, and
a value is judged the same wherever it came from (design §8).
"""

from __future__ import annotations

import ipaddress
import math
import re
from urllib.parse import SplitResult, urlsplit

from packaging.version import InvalidVersion, Version

from dockship import tags
from dockship.errors import UsageError, printable

__all__ = ["NAME_RE", "SERVICE_NAME_RE", "ENV_VAR_RE", "shown", "control_problem", "text_problem",
           "name_problem", "service_name_problem", "env_var_problem", "number_problem",
           "port_problem", "host_problem", "url_problem", "docker_endpoint_problem",
           "ssh_user_problem", "health_path_problem", "registry_problem", "image_problem",
           "image_reference_problem", "version_problem", "tag_problem", "package_problem",
           "etcd_url_problem", "etcd_prefix_problem"]

#: Environments, nodes, zones, roles (design §8): safe in a terminal, a Chef query, a label.
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
#: Services are stricter (lowercase): a service name is the default image name, and
#: Docker repository names are lowercase; "Web" and "web" would also be one PEP 503 name.
SERVICE_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
ENV_VAR_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PEP508_NAME_RE = re.compile(r"[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9]")
_SSH_USER_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
_DNS_LABEL_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
# distribution's reference grammar: path components, a tag, a digest
_IMAGE_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_RE = re.compile(rf"{_IMAGE_COMPONENT}(?:/{_IMAGE_COMPONENT})*")
_DIGEST_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}")
_SHOWN_LIMIT = 60


def shown(value: object) -> str:
    """`value` quoted for a one-line message: escaped, at most ~60 characters, never raising."""
    if isinstance(value, str):
        text = value if len(value) <= _SHOWN_LIMIT else value[:_SHOWN_LIMIT] + "…"
        return "'" + printable(text).replace("\n", "\\n") + "'" + (
            f" ({len(value)} characters)" if len(value) > _SHOWN_LIMIT else "")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if abs(value) < 10 ** 30 else "a huge integer"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, (bytes, bytearray)):
        return "bytes"
    return f"a {type(value).__name__}"   # TOML dates and times


def control_problem(text: object) -> str | None:
    """A problem if `text` is not a string or holds a control character (what would reach a
    terminal raw); spaces are fine."""
    if not isinstance(text, str):
        return f"must be a string, got {shown(text)}"
    for ch in text:
        if not ch.isprintable() and ch != " ":
            return f"{shown(text)} holds the control character {ch.encode('unicode_escape').decode()}"
    return None


def text_problem(value: object, *, limit: int = 4096) -> str | None:
    """A non-empty string of printable characters, at most `limit` long."""
    if not isinstance(value, str) or not value.strip():
        return f"must be a non-empty string, got {shown(value)}"
    if len(value) > limit:
        return f"{shown(value)} is longer than {limit} characters"
    return control_problem(value)


def _pattern_problem(value: object, pattern: re.Pattern[str], expected: str) -> str | None:
    if not isinstance(value, str):
        return f"must be a string ({expected}), got {shown(value)}"
    if not pattern.fullmatch(value):
        return f"{shown(value)} is not valid: {expected}"
    return None


def name_problem(value: object) -> str | None:
    """Names of environments, nodes, zones and roles: `[A-Za-z0-9][A-Za-z0-9._-]{0,62}`."""
    return _pattern_problem(value, NAME_RE, "1-63 letters, digits, '.', '_' or '-', "
                            "starting with a letter or digit")


def service_name_problem(value: object) -> str | None:
    """Service names: as `name_problem`, lowercase only (a service name is its default image name)."""
    return _pattern_problem(value, SERVICE_NAME_RE, "1-63 lowercase letters, digits, '.', '_' or "
                            "'-', starting with a letter or digit")


def env_var_problem(value: object) -> str | None:
    """An environment variable name: `[A-Za-z_][A-Za-z0-9_]*` (no '=', not empty)."""
    return _pattern_problem(value, ENV_VAR_RE, "an environment variable name is letters, digits "
                            "and '_', not starting with a digit, e.g. LOG_LEVEL")


def number_problem(value: object, low: float, high: float, *, integer: bool = False) -> str | None:
    """A finite number (an integer if `integer`) in `low..high`; booleans, nan and inf refused."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            integer and not isinstance(value, int)):
        return f"must be {kind} from {low:g} to {high:g}, got {shown(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{shown(value)} is not a finite number; use {kind} from {low:g} to {high:g}"
    if value < low:
        return f"{shown(value)} must be at least {low:g} ({kind} from {low:g} to {high:g})"
    if value > high:
        return f"{shown(value)} must be at most {high:g} ({kind} from {low:g} to {high:g})"
    return None


def port_problem(value: object) -> str | None:
    """A TCP port: an integer 1–65535."""
    return number_problem(value, 1, 65535, integer=True)


def host_problem(value: object) -> str | None:
    """An IP address (v4, or v6 without brackets) or a DNS host name; nothing else.

    No user part (`attacker@10.0.0.1`), port, path, whitespace, control
    character or leading '-' (which ssh would read as an option).
    """
    expected = "an IP address or a host name such as node1.example.com"
    if not isinstance(value, str) or not value:
        return f"must be {expected}, got {shown(value)}"
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    name = value[:-1] if value.endswith(".") else value
    labels = name.split(".")
    if len(name) > 253 or not all(_DNS_LABEL_RE.fullmatch(label) for label in labels):
        return f"{shown(value)} is not {expected}"
    if labels[-1].isdigit():
        return f"{shown(value)} is not a valid IP address; expected {expected}"
    return None


def _masked(url: str) -> str:
    """`url` for a message, with anything that may be credentials (up to the last '@') hidden."""
    scheme, sep, rest = url.partition("://")
    return shown(f"{scheme}://…@{rest.rpartition('@')[2]}" if sep and "@" in rest else url)


def _netloc_problem(parts: SplitResult, url: str, form: str) -> str | None:
    """Host and port of a parsed URL: a valid host (IPv6 only in brackets), a port 1–65535."""
    host = parts.hostname
    if not host:
        return f"{_masked(url)} has no host; expected {form}"
    if (problem := host_problem(host)) or ("[" in parts.netloc and ":" not in host):
        return f"{_masked(url)}: host {problem or 'in brackets must be an IPv6 address'}"
    try:
        port = parts.port
    except ValueError:
        return f"{_masked(url)} has a bad port; ports are 1-65535 ({form})"
    if port == 0:
        return f"{_masked(url)} has port 0; ports are 1-65535 ({form})"
    return None


def _split(url: object, form: str) -> tuple[SplitResult | None, str | None]:
    """`url` parsed, or why it cannot be (not a string, whitespace, control characters)."""
    if not isinstance(url, str) or not url:
        return None, f"must be a URL ({form}), got {shown(url)}"
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return None, f"{_masked(url)} holds whitespace or a control character; expected {form}"
    try:
        return urlsplit(url), None
    except ValueError as exc:    # "Invalid IPv6 URL" and friends
        return None, f"{_masked(url)} is not a valid URL ({shown(str(exc))}); expected {form}"


def url_problem(url: object, schemes: tuple[str, ...] = ("http", "https")) -> str | None:
    """A URL with one of `schemes`, a valid host (IPv6 in brackets) and a port 1–65535."""
    form = f"{' or '.join(s + '://' for s in schemes)}host/path or host:8081/path, IPv6 as http://[::1]:8081/"
    parts, problem = _split(url, form)
    if parts is None:
        return problem
    assert isinstance(url, str)
    if parts.scheme not in schemes:
        return f"{_masked(url)} must start with {' or '.join(s + '://' for s in schemes)}"
    return _netloc_problem(parts, url, form)


def etcd_url_problem(url: object) -> str | None:
    """An etcd member's client URL: http(s)://host[:port] and nothing more (etcd's gateway
    serves its API at fixed paths). No user or password: dockship does not log in to etcd,
    so credentials there would only end up in places they should not."""
    form = "http://host[:port] or https://host[:port], e.g. http://127.0.0.1:2379"
    if problem := url_problem(url, ("http", "https")):
        return problem
    assert isinstance(url, str)
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        return (f"{_masked(url)} holds a user or password; dockship does not log in to etcd, "
                f"use {form} (and let the network or a TLS proxy guard it)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return f"{shown(url)} must be only {form}, without a path"
    return None


def etcd_prefix_problem(value: object) -> str | None:
    """A key prefix in etcd: '/' then printable text without whitespace, e.g. /dockship/nodes/stage."""
    expected = "a key prefix starting with '/', e.g. \"/dockship/nodes/stage\""
    return _slash_text_problem(value, expected, 1024, f"expected {expected}")


def _slash_text_problem(value: object, expected: str, limit: int, fix: str) -> str | None:
    """A string starting with '/', at most `limit` long, without whitespace or control character."""
    if not isinstance(value, str) or not value.startswith("/"):
        return f"must be {expected}, got {shown(value)}"
    if len(value) > limit:
        return f"{shown(value)} is longer than {limit} characters"
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        return f"{shown(value)} holds whitespace or a control character; {fix}"
    return None


def ssh_user_problem(value: object) -> str | None:
    """An SSH login name: letters, digits, '.', '_', '-', not starting with '-' (ssh would read an option)."""
    return _pattern_problem(value, _SSH_USER_RE, "a user name is letters, digits, '.', '_' or '-', "
                            "not starting with '-'")


def docker_endpoint_problem(url: object) -> str | None:
    """A node engine: ssh://user@host[:port], tcp://host:port or unix:///path."""
    forms = "ssh://user@host (or ssh://user@host:2222), tcp://host:2376 or unix:///path"
    parts, problem = _split(url, forms)
    if parts is None:
        return problem
    assert isinstance(url, str)
    if parts.query or parts.fragment:
        return f"{shown(url)} must not have a query or fragment; use {forms}"
    if parts.scheme == "ssh":
        if parts.password is not None:
            return f"{_masked(url)} holds a password; dockship logs in with the SSH key ([ssh] key)"
        if parts.username is not None and (problem := ssh_user_problem(parts.username)):
            return f"{shown(url)}: user {problem}"
        if parts.path not in ("", "/"):
            return f"{shown(url)} must not have a path; expected ssh://user@host or ssh://user@host:2222"
        return _netloc_problem(parts, url, "ssh://user@host or ssh://user@host:2222")
    if parts.scheme == "tcp":
        if parts.username is not None or parts.path not in ("", "/"):
            return f"{shown(url)} must be only tcp://host:2376 (a host and a port)"
        problem = _netloc_problem(parts, url, "tcp://host:2376, a host and a port")
        if problem:
            return problem
        if parts.port is None:
            return f"{shown(url)} needs a port, e.g. tcp://10.0.0.5:2376"
        return None
    if parts.scheme == "unix":
        if parts.netloc or not parts.path.startswith("/"):
            return f"{shown(url)} needs an absolute socket path, e.g. unix:///var/run/docker.sock"
        return None
    return f"{shown(url)} is not a Docker endpoint; use {forms}"


def health_path_problem(value: object) -> str | None:
    """An HTTP path: starts with '/', no whitespace or control character (no header injection)."""
    return _slash_text_problem(value, "a path starting with '/', e.g. \"/health\"", 2048,
                               "percent-encode it (%20)")


def registry_problem(value: object) -> str | None:
    """A registry address: host[:port], no scheme or path; IPv6 in brackets ([fd00::1]:5000)."""
    expected = "host[:port] without scheme or slash, e.g. \"registry.example.com:5000\" or \"[fd00::1]:5000\""
    if not isinstance(value, str) or not value:
        return f"must be {expected}, got {shown(value)}"
    if "/" in value or any(ch.isspace() or not ch.isprintable() for ch in value):
        return f"{shown(value)} must be {expected}"
    if value.startswith("["):
        host, close, rest = value[1:].partition("]")
        if not close or ":" not in host or (rest and not rest.startswith(":")):
            return f"{shown(value)} must be {expected}"
        port = rest[1:] if rest else None
    elif value.count(":") > 1:
        return f"{shown(value)}: an IPv6 address goes in brackets, e.g. \"[fd00::1]:5000\""
    else:
        host, colon, port_text = value.partition(":")
        port = port_text if colon else None
    if problem := host_problem(host):
        return f"{shown(value)}: host {problem}"
    if port is not None and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        return f"{shown(value)} has a bad port; ports are 1-65535 ({expected})"
    return None


def image_problem(value: object) -> str | None:
    """An image name without registry or tag: lowercase path components ('hello', 'team/api')."""
    if isinstance(value, str) and len(value) > 255:
        return f"{shown(value)} is longer than 255 characters"
    return _pattern_problem(value, _IMAGE_RE, "an image name is lowercase letters, digits, '.', "
                            "'_', '-' in components separated by '/', e.g. \"team/hello\"")


def image_reference_problem(value: object) -> str | None:
    """A full image reference: [registry/]name[:tag][@digest], e.g. python:3.12-slim."""
    expected = "an image reference like \"python:3.12-slim\" or \"registry:5000/team/python:3@sha256:…\""
    if not isinstance(value, str) or not value or len(value) > 512:
        return f"must be {expected}, got {shown(value)}"
    rest, at, digest = value.partition("@")
    if at and not _DIGEST_RE.fullmatch(digest):
        return f"{shown(value)} has a bad digest; expected {expected}"
    first, slash, path = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        if registry_problem(first):
            return f"{shown(value)} has a bad registry part; expected {expected}"
        rest = path
    name, colon, tag = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if colon and not tags.DOCKER_TAG_RE.fullmatch(tag):
        return f"{shown(value)} has a bad tag; expected {expected}"
    if not _IMAGE_RE.fullmatch(name):
        return f"{shown(value)} is not {expected}"
    return None


def version_problem(value: object) -> str | None:
    """A PEP 440 version whose tag (design §4) fits Docker's 128 characters."""
    if not isinstance(value, str) or not value:
        return f"must be a PEP 440 version such as 1.4.0, got {shown(value)}"
    try:
        Version(value)
    except InvalidVersion:
        return (f"{shown(value)} is not a PEP 440 version (e.g. 1.4.0, 2.0rc1, 1.4.0.post1, "
                "1!2.0, 1.4.0+abc.1)")
    try:
        tags.tag_for(value)
    except UsageError:
        return f"{shown(value)} gives a tag longer than the 128 characters Docker allows"
    return None


def tag_problem(value: object, *, version_only: bool = False) -> str | None:
    """A Docker tag (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`); with `version_only`, the tag of a
    version (design §4: 1.4.0, 1.4.0-abc.1 for 1.4.0+abc.1, 1_2.0 for 1!2.0)."""
    if not isinstance(value, str) or not tags.DOCKER_TAG_RE.fullmatch(value):
        return (f"{shown(value)} is not an image tag (letters, digits, '_', '.', '-', up to 128, "
                "e.g. 1.4.0 or 1.4.0-abc.1)")
    if version_only:
        try:
            tags.version_for(value)
        except ValueError as exc:
            return printable(str(exc))[:200]
    return None


def package_problem(value: object) -> str | None:
    """A distribution name (PEP 508): letters, digits, '.', '_', '-', starting and ending alphanumeric."""
    if isinstance(value, str) and len(value) > 200:
        return f"{shown(value)} is longer than 200 characters"
    return _pattern_problem(value, _PEP508_NAME_RE, "a package name is letters, digits, '.', '_' "
                            "or '-', starting and ending with a letter or digit, e.g. hello-svc")


_MAILBOX_RE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]{1,64}")


def email_address_problem(value: object) -> str | None:
    """A bare address `local@host` (no display name, no angle brackets): what goes in an SMTP
    envelope, where a comma or newline could smuggle in another recipient."""
    expected = "an address such as deploys@example.com"
    if not isinstance(value, str) or "@" not in value:
        return f"must be {expected}, got {shown(value)}"
    local, _, host = value.rpartition("@")
    if not _MAILBOX_RE.fullmatch(local) or host_problem(host):
        return f"{shown(value)} is not {expected}"
    return None


def smtp_server_problem(value: object) -> str | None:
    """An SMTP server as `host[:port]` (IPv6 in brackets): no scheme, user or path."""
    form = "host:port, e.g. smtp.example.com:587 (IPv6: [fd00::1]:587)"
    if not isinstance(value, str) or not value:
        return f"must be {form}, got {shown(value)}"
    parts, problem = _split(f"smtp://{value}", form)
    if parts is None:
        return problem
    if any(ch in value for ch in "@/?#"):
        return f"{shown(value)} is not {form}"
    return _netloc_problem(parts, value, form)
