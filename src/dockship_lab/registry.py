"""The lab's image registries: Debian's `docker-registry` (distribution 2.8).

Two of them, both on the host's lab address with the lab's TLS certificate
(engines and nodes push and pull through the same address):

- `ADDR:5000`, open: the registry the generated config uses;
- `ADDR:5001`, behind htpasswd basic auth (user `dockship`, a random
  password kept in a 0600 file), to exercise authenticated pushes and pulls.

Storage lives under the lab root, with deletes enabled (tag clean-up tests).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

import requests

from dockship_lab.engine import ensure_daemon, lab_pid, log_path, require_program, stop_lab_daemon
from dockship_lab.paths import LabPaths, write_file
from dockship_lab.process import LabError, run
from dockship_lab.tls import LabTLS

AUTH_USER = "dockship"
MANIFEST_TYPES = ", ".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])


@dataclass(frozen=True)
class Registry:
    name: str      # file names: pid, log, config, storage
    port: int
    auth: bool


OPEN = Registry("registry", 5000, auth=False)
AUTHED = Registry("registry-auth", 5001, auth=True)
REGISTRIES = (OPEN, AUTHED)
PORTS = tuple(r.port for r in REGISTRIES)


def registry_address(paths: LabPaths, reg: Registry = OPEN) -> str:
    """host:port, the `registry.url` form of the config."""
    return f"{paths.host_address}:{reg.port}"


def password_file(paths: LabPaths) -> Path:
    return paths.root / "registry-auth.password"


def _dir(paths: LabPaths) -> Path:
    return paths.root / "registry"


def _pidfile(paths: LabPaths, reg: Registry) -> Path:
    return paths.run / f"{reg.name}.pid"


def _config_file(paths: LabPaths, reg: Registry) -> Path:
    return _dir(paths) / f"{reg.name}.yml"


def _htpasswd_file(paths: LabPaths) -> Path:
    return _dir(paths) / "htpasswd"


def _config_text(paths: LabPaths, reg: Registry, tls: LabTLS) -> str:
    q = json.dumps  # a JSON string is a valid YAML double-quoted scalar
    lines = [
        "# Written by `dockship lab up`; rewritten (and the registry restarted) when it changes.",
        f"# server certificate sha256: {tls.fingerprint()}",
        "version: 0.1",
        "log:",
        "  level: info",
        "  fields:",
        f"    service: {q(reg.name)}",
        "storage:",
        "  filesystem:",
        f"    rootdirectory: {q(str(_dir(paths) / 'storage' / str(reg.port)))}",
        "  delete:",
        "    enabled: true",
        "  cache:",
        "    blobdescriptor: inmemory",
        "http:",
        f"  addr: {q(registry_address(paths, reg))}",
        "  headers:",
        "    X-Content-Type-Options: [nosniff]",
        "  tls:",
        f"    certificate: {q(str(tls.cert))}",
        f"    key: {q(str(tls.key))}",
    ]
    if reg.auth:
        lines += [
            "auth:",
            "  htpasswd:",
            '    realm: "dockship-lab"',
            f"    path: {q(str(_htpasswd_file(paths)))}",
        ]
    return "\n".join(lines) + "\n"


def _ensure_credentials(paths: LabPaths) -> bool:
    """A random password (0600 file, never printed) and its bcrypt htpasswd entry; True if written.

    The registry reads its htpasswd file when it starts, so a new entry means a restart.
    """
    pw_file = password_file(paths)
    ht_file = _htpasswd_file(paths)
    password = None
    try:
        password = pw_file.read_text().strip() or None
    except OSError:
        pass
    if password is not None and ht_file.exists():
        return False
    if password is None:
        password = secrets.token_urlsafe(24)
        write_file(pw_file, (password + "\n").encode(), 0o600)
    htpasswd = require_program("htpasswd", "apache2-utils")
    # -i reads the password from stdin: it never appears in a process list.
    entry = run([htpasswd, "-n", "-B", "-i", AUTH_USER], input=password + "\n").stdout.strip()
    write_file(ht_file, (entry + "\n").encode(), 0o600)
    return True


def registry_answers(paths: LabPaths, reg: Registry, tls: LabTLS, timeout: float = 3) -> bool:
    """Does `/v2/` answer over TLS verified by the lab CA (200 open, 401 with auth)?"""
    try:
        resp = requests.get(f"https://{registry_address(paths, reg)}/v2/", verify=str(tls.bundle),
                            timeout=timeout)
    except (requests.RequestException, OSError):
        return False
    return resp.status_code == (401 if reg.auth else 200)


def registry_running(paths: LabPaths, reg: Registry) -> bool:
    return lab_pid(_pidfile(paths, reg), "docker-registry") is not None


def registry_up(paths: LabPaths, reg: Registry, tls: LabTLS) -> bool:
    """Start (or reuse) one registry; True if it was (re)started."""
    exe = require_program("docker-registry", "docker-registry")
    new_credentials = reg.auth and _ensure_credentials(paths)
    config = _config_file(paths, reg)
    text = _config_text(paths, reg, tls)
    changed = not config.exists() or config.read_text() != text or new_credentials
    if changed:
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(text)
    (_dir(paths) / "storage" / str(reg.port)).mkdir(parents=True, exist_ok=True)
    return ensure_daemon(
        what=f"registry at {registry_address(paths, reg)}", program="docker-registry",
        argv=[exe, "serve", str(config)], pidfile=_pidfile(paths, reg),
        logfile=log_path(paths, reg.name), healthy=lambda: registry_answers(paths, reg, tls),
        listen=(paths.host_address, reg.port), timeout=30, restart=changed)


def registries_up(paths: LabPaths, tls: LabTLS) -> list[str]:
    """Both registries; returns the addresses of those (re)started."""
    return [registry_address(paths, r) for r in REGISTRIES if registry_up(paths, r, tls)]


def registries_down(paths: LabPaths) -> None:
    for reg in REGISTRIES:
        stop_lab_daemon(_pidfile(paths, reg), "docker-registry")


def manifest_digest(paths: LabPaths, repository: str, tag: str, tls: LabTLS,
                    reg: Registry = OPEN) -> str | None:
    """Digest of repository:tag in the lab registry, or None if the tag is not there."""
    url = f"https://{registry_address(paths, reg)}/v2/{repository}/manifests/{tag}"
    try:
        resp = requests.head(url, headers={"Accept": MANIFEST_TYPES}, verify=str(tls.bundle), timeout=10)
    except requests.RequestException as exc:
        raise LabError(f"registry {registry_address(paths, reg)} did not answer HEAD {url}: {exc}") from None
    if resp.status_code == 404:
        return None
    if resp.status_code != 200:
        raise LabError(f"registry {registry_address(paths, reg)} answered HEAD {url} with {resp.status_code}")
    return resp.headers.get("Docker-Content-Digest")
