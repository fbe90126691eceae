"""State kept on the node engines themselves: created (never started) containers.

dockship keeps no local state file (every operator and CI agent must see the
same deploy lock and history), and needs no server of its own. The engines
already offer what it takes:

- an image with no content, `dockship/state:1`, imported from an empty tar
  (one empty layer, 0 bytes; nothing to pull, no registry involved);
- containers *created* from it and never started: they cost a directory on
  the engine and run no process;
- creating a container under a name is atomic on an engine: exactly one of
  any number of concurrent creators gets it, the others get 409 Conflict
  (seen on the build engine: 1 of 12 threads won, 11 got 409). The name is
  reserved before the container can be inspected: a loser that inspects
  the name at once gets 404 for a few milliseconds;
- labels are set at creation and immutable afterwards;
- `put_archive` writes files into a created container and `get_archive`
  reads a whole directory back in one call; neither needs a running process.
  `put_archive` can overwrite but never delete a file: a tar member named
  `.wh.NAME` is stored literally, not applied as a whiteout. Whoever needs
  to drop files recreates the container (see history.py).

Caveat for operators: `docker container prune` / `docker system prune`
remove created containers too, which drops the deploy history and any lock.
Every state container carries the label `io.dockship.state` (inherited from
the image), so prune with `--filter label!=io.dockship.state`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import tarfile
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import docker
import docker.errors
import paramiko
import requests

from dockship import labels
from dockship.errors import DockshipError, Unreachable
from dockship.times import parse_time

STATE_IMAGE = "dockship/state:1"
STATE_LABEL = labels.STATE          # on the image, so on every state container
KIND_LABEL = labels.STATE_KIND      # "lock" or "ledger"

# Containers created from an image need a command, even if never started.
_CHANGES = [f"LABEL {STATE_LABEL}=1", 'CMD ["/none"]']

_NAME_OK = re.compile(r"[a-z0-9][a-z0-9_.]*")  # a name part that cannot blur the '-' separators
_NAME_BAD_CHARS = re.compile(r"[^a-zA-Z0-9_.-]")

# What a failed call to an engine can raise, other than an API answer:
# docker-py / requests connection errors, sockets, SSH (sshengine) and
# dockship's own Unreachable from the SSH transport.
ENGINE_ERRORS: tuple[type[BaseException], ...] = (
    docker.errors.DockerException, requests.RequestException, OSError,
    paramiko.SSHException, EOFError, DockshipError)


def state_name(kind: str, env: str, service: str) -> str:
    """The container name of a piece of state, e.g. `dockship-lock-stage-hello`.

    Different (env, service) pairs must never share a name, or they would
    share a lock. `dockship-lock-{env}-{service}` is unambiguous when the
    environment holds no '-' (the first '-' after the prefix then ends it)
    and both parts are plain config names; otherwise the name gets a short
    hash of the pair.
    """
    plain = f"dockship-{kind}-{env}-{service}"
    if _NAME_OK.fullmatch(env) and re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", service):
        return plain
    digest = hashlib.sha256(json.dumps([kind, env, service]).encode()).hexdigest()[:8]
    readable = _NAME_BAD_CHARS.sub("_", plain)[:200]
    return f"{readable}-{digest}"


def ensure_state_image(client: docker.DockerClient) -> str:
    """Make sure `dockship/state:1` exists on this engine; return its image id.

    Idempotent. Two processes importing at once both succeed (the tag ends on
    one of two equivalent empty images; containers refer to images by id).
    """
    try:
        image = client.api.inspect_image(STATE_IMAGE)
        if (image.get("Config") or {}).get("Labels", {}).get(STATE_LABEL) == "1":
            return image["Id"]
    except docker.errors.ImageNotFound:
        pass
    except docker.errors.NotFound:
        pass
    repo, tag = STATE_IMAGE.rsplit(":", 1)
    answer = client.api.import_image_from_data(_empty_tar(), repository=repo, tag=tag,
                                               changes=_CHANGES)
    _check_import_answer(answer)
    return client.api.inspect_image(STATE_IMAGE)["Id"]


def _empty_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w"):
        pass
    return buf.getvalue()


def _check_import_answer(answer: Any) -> None:
    """The import answers 200 with JSON lines; an error may hide in one of them."""
    text = answer.decode() if isinstance(answer, bytes) else str(answer or "")
    for line in text.splitlines():
        try:
            chunk = json.loads(line)
        except ValueError:
            continue
        if isinstance(chunk, dict) and ("error" in chunk or "errorDetail" in chunk):
            detail = chunk.get("errorDetail") or {}
            message = detail.get("message") if isinstance(detail, dict) else None
            raise DockshipError(f"importing {STATE_IMAGE} failed: {message or chunk.get('error')}")


def create_state_container(client: docker.DockerClient, name: str, kind: str,
                           labels: Mapping[str, str]) -> str:
    """Create (never start) a state container; return its id.

    Raises docker.errors.APIError with status 409 when the name is taken:
    that is the atomic test-and-set the lock is built on.
    """
    all_labels = {KIND_LABEL: kind, **labels}
    try:
        created = client.api.create_container(STATE_IMAGE, name=name, labels=all_labels,
                                              network_disabled=True)
    except docker.errors.ImageNotFound:
        ensure_state_image(client)
        created = client.api.create_container(STATE_IMAGE, name=name, labels=all_labels,
                                              network_disabled=True)
    return created["Id"]


def inspect(client: docker.DockerClient, name_or_id: str) -> dict[str, Any] | None:
    """The container's inspect dict, or None if there is no such container."""
    try:
        return client.api.inspect_container(name_or_id)
    except docker.errors.NotFound:
        return None


def labels_of(container: Mapping[str, Any]) -> dict[str, str]:
    return dict((container.get("Config") or {}).get("Labels") or {})


def remove(client: docker.DockerClient, container_id: str) -> bool:
    """Remove a state container by id; False if it was already gone."""
    try:
        client.api.remove_container(container_id, force=True)
        return True
    except docker.errors.NotFound:
        return False
    except docker.errors.APIError as exc:
        # Two removers at once: the loser hears "removal already in progress".
        if exc.status_code == 409 and "in progress" in str(exc.explanation or ""):
            return False
        raise


def tar_of(files: Mapping[str, bytes], *, parents: bool = True) -> bytes:
    """A tar holding `files` (paths relative to /) and, with `parents`, every directory above.

    Without `parents` the engine makes missing directories itself and leaves
    existing ones alone, so their mtime records the write on the engine's clock.
    """
    dirs: set[str] = set()
    for path in files if parents else ():
        parts = path.strip("/").split("/")[:-1]
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in sorted(dirs):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for path, data in files.items():
            info = tarfile.TarInfo(path.strip("/"))
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def put_files(client: docker.DockerClient, container_id: str, files: Mapping[str, bytes], *,
              parents: bool = True) -> None:
    """Write files (absolute paths) into a created container, making directories as needed."""
    if not client.api.put_archive(container_id, "/", tar_of(files, parents=parents)):
        raise DockshipError(f"engine refused to write into state container {container_id[:12]}")


def path_mtime(client: docker.DockerClient, container_id: str, path: str) -> datetime | None:
    """When `path` in the container last changed, by the engine's clock; None if it is absent.

    A directory's mtime moves whenever a file is written into it (put_archive
    runs on the engine), so it records *when the engine saw a write*, whatever
    the writer's clock says. Raises NotFound if the container itself is gone.
    """
    try:
        resp = client.api.head(client.api._url("/containers/{0}/archive", container_id),
                               params={"path": path}, timeout=client.api.timeout)
    except requests.RequestException as exc:
        raise docker.errors.APIError(str(exc)) from exc
    if resp.status_code == 404:
        client.api.inspect_container(container_id)   # raises NotFound if the container is gone
        return None
    client.api._raise_for_status(resp)
    stat = json.loads(base64.b64decode(resp.headers["X-Docker-Container-Path-Stat"]))
    return parse_time(stat["mtime"])


def get_files(client: docker.DockerClient, container_id: str, directory: str,
              max_file: int = 1 << 20) -> dict[str, bytes] | None:
    """Read the regular files directly in `directory` as {base name: content}; None if absent.

    One `get_archive` call. Nothing is extracted to disk; files larger than
    `max_file` bytes are skipped (state files are small; anything else is not ours).
    """
    try:
        stream, _stat = client.api.get_archive(container_id, directory)
    except docker.errors.NotFound:
        return None
    raw = b"".join(stream)
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
        for member in tar:
            parts = member.name.strip("/").split("/")
            if len(parts) != 2 or not member.isfile() or member.size > max_file:
                continue  # the directory itself, subdirectories, links, oversized files
            handle = tar.extractfile(member)
            if handle is not None:
                files[parts[1]] = handle.read()
    return files
