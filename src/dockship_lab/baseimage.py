"""The lab's Python base image, made from Debian packages (there is no Docker Hub here).

`mmdebstrap` makes a minimal bookworm root filesystem with python3, venv and
pip into a tarball in the lab cache (kept across `lab down`, so it is made
once per machine); `docker import` turns it into an image on the build
engine, which is pushed to the lab registry as
`ADDR:5000/dockship-lab/python:3-bookworm`. Each step is skipped when its
result is already there.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors
from docker.models.images import Image

from dockship.streams import StreamError, drain
from dockship_lab.engine import require_program
from dockship_lab.paths import LabPaths
from dockship_lab.process import LabError, run
from dockship_lab.registry import OPEN, manifest_digest, registry_address
from dockship_lab.tls import LabTLS

REPOSITORY = "dockship-lab/python"
TAG = "3-bookworm"
SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates")
SOURCE_LABEL = "org.dockship_lab.rootfs-sha256"

Note = Callable[[str], None]


def base_image_ref(paths: LabPaths) -> str:
    return f"{registry_address(paths, OPEN)}/{REPOSITORY}:{TAG}"


def tarball_path(paths: LabPaths) -> Path:
    return paths.cache / f"python-3-{SUITE}.tar"


def ensure_tarball(paths: LabPaths, note: Note = lambda _: None) -> Path:
    """The root filesystem tarball, made by mmdebstrap unless already cached."""
    out = tarball_path(paths)
    if out.exists() and out.stat().st_size > 0:
        return out
    mmdebstrap = require_program("mmdebstrap", "mmdebstrap")
    out.parent.mkdir(parents=True, exist_ok=True)
    # mmdebstrap picks the output format from the extension, so keep `.tar`;
    # a partial file left by a killed run is never mistaken for the result.
    partial = out.with_name(f"{out.stem}.partial.tar")
    partial.unlink(missing_ok=True)
    note(f"mmdebstrap {SUITE} with {', '.join(PACKAGES)} (about 25 s, once per machine)")
    try:
        run([mmdebstrap, "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(partial)])
    except LabError as exc:
        partial.unlink(missing_ok=True)
        raise LabError(f"building the lab base image failed ({exc}); it needs the Debian "
                       "package mirrors reachable") from None
    os.replace(partial, out)
    return out


def _sha256(path: Path) -> str:
    """sha256 of the tarball, remembered beside it (keyed by size and mtime) to keep warm ups fast."""
    st = path.stat()
    stamp = f"{st.st_size} {st.st_mtime_ns}"
    memo = path.with_name(path.name + ".sha256")
    try:
        known_stamp, known = memo.read_text().rsplit(" ", 1)
        if known_stamp == stamp:
            return known.strip()
    except (OSError, ValueError):
        pass
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    memo.write_text(f"{stamp} {h.hexdigest()}\n")
    return h.hexdigest()


def _local_image(client: docker.DockerClient, ref: str) -> Image | None:
    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None


def ensure_imported(paths: LabPaths, client: docker.DockerClient, tarball: Path,
                    note: Note = lambda _: None) -> Image:
    """The image on the build engine, imported from the tarball unless it already came from it."""
    ref = base_image_ref(paths)
    digest = _sha256(tarball)
    image = _local_image(client, ref)
    if image is not None and (image.labels or {}).get(SOURCE_LABEL) == digest:
        return image
    note(f"docker import {tarball.name} as {ref}")
    changes = [
        'CMD ["python3"]',
        "ENV LANG=C.UTF-8",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        f"LABEL {SOURCE_LABEL}={digest}",
    ]
    repo, tag = ref.rsplit(":", 1)
    try:
        answer = client.api.import_image(src=str(tarball), repository=repo, tag=tag, changes=changes)
    except docker.errors.APIError as exc:
        raise LabError(f"docker import of {tarball} failed: {exc.explanation or exc}") from None
    if isinstance(answer, str) and '"error' in answer:
        raise LabError(f"docker import of {tarball} failed: {answer.strip()[:300]}")
    image = _local_image(client, ref)
    if image is None:
        raise LabError(f"docker import of {tarball} reported success but {ref} is not on the build engine")
    return image


def ensure_pushed(paths: LabPaths, client: docker.DockerClient, tls: LabTLS,
                  note: Note = lambda _: None) -> str:
    """Push the image unless the registry already holds exactly it; returns its digest there."""
    ref = base_image_ref(paths)
    held = manifest_digest(paths, REPOSITORY, TAG, tls)
    image = client.images.get(ref)
    repo = ref.rsplit(":", 1)[0]
    if held is not None and f"{repo}@{held}" in (image.attrs.get("RepoDigests") or []):
        return held
    note(f"docker push {ref}")
    try:
        chunks = drain(client.api.push(repo, tag=TAG, stream=True, decode=True), f"push of {ref}")
    except StreamError as exc:
        raise LabError(f"{exc}; is the lab registry at {registry_address(paths, OPEN)} up "
                       "and its CA in /etc/docker/certs.d?") from None
    except docker.errors.APIError as exc:
        raise LabError(f"push of {ref} failed: {exc.explanation or exc}") from None
    for chunk in chunks:
        digest = (chunk.get("aux") or {}).get("Digest")
        if digest:
            return str(digest)
    held = manifest_digest(paths, REPOSITORY, TAG, tls)
    if held is None:
        raise LabError(f"push of {ref} ended without error but the registry does not hold it")
    return held


def ensure_base_image(paths: LabPaths, client: docker.DockerClient, tls: LabTLS,
                      note: Note = lambda _: None) -> str:
    """Tarball → image → registry, each only if missing. Returns the image reference."""
    tarball = ensure_tarball(paths, note)
    ensure_imported(paths, client, tarball, note)
    ensure_pushed(paths, client, tls, note)
    return base_image_ref(paths)


def base_image_in_registry(paths: LabPaths, tls: LabTLS) -> bool:
    try:
        return manifest_digest(paths, REPOSITORY, TAG, tls) is not None
    except LabError:
        return False


def verify_pull(engine: docker.DockerClient, ref: str, where: str) -> None:
    """Pull ref on a node engine: proves routing, TLS trust and the registry end to end."""
    repo, tag = ref.rsplit(":", 1)
    try:
        drain(engine.api.pull(repo, tag=tag, stream=True, decode=True), f"pull of {ref} on {where}")
    except StreamError as exc:
        raise LabError(f"{exc}; the node cannot use the lab registry (check the lab network "
                       "and /etc/docker/certs.d)") from None
    except docker.errors.APIError as exc:
        raise LabError(f"pull of {ref} on {where} failed: {exc.explanation or exc}") from None
