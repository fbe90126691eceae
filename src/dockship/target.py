"""The Python an image will run: its version and wheel tags, read from the base image itself.

The build host's Python says nothing about the image's (another version,
another libc), so the base image is asked, once per image id: a short
container with no network prints its interpreter version and the wheel tags
it accepts (pip's vendored `packaging`, or `packaging` itself). The answer is
kept in the user's cache directory, keyed by the image id, which names the
image's content.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

from dockship.errors import DockshipError, UsageError

# Printed by the base image's own python3: one JSON object.
_PROBE = (
    "import json, sys\n"
    "try:\n"
    "    from pip._vendor.packaging import tags\n"
    "except ImportError:\n"
    "    from packaging import tags\n"
    "print(json.dumps({'version': '.'.join(map(str, sys.version_info[:3])),\n"
    "                  'implementation': tags.interpreter_name(),\n"
    "                  'tags': [str(t) for t in tags.sys_tags()]}))\n"
)


@dataclass(frozen=True)
class Target:
    """An interpreter's version and the wheel tags it installs, most preferred first."""

    version: str                   # "3.11.2"
    implementation: str            # "cp"
    tags: tuple[str, ...]          # "cp311-cp311-manylinux_2_36_x86_64", ...

    @property
    def abis(self) -> tuple[str, ...]:
        return _unique(t.split("-")[1] for t in self.tags)

    @property
    def platforms(self) -> tuple[str, ...]:
        return _unique(t.split("-")[2] for t in self.tags if not t.endswith("-any"))

    def accepts(self, wheel_filename: str) -> bool:
        """Whether a wheel of this name installs here (every tag its name expands to counts)."""
        parts = wheel_filename[:-4].split("-")
        if len(parts) < 5:
            return False
        pys, abis, plats = parts[-3].split("."), parts[-2].split("."), parts[-1].split(".")
        accepted = set(self.tags)
        return any(f"{p}-{a}-{pl}" in accepted for p in pys for a in abis for pl in plats)

    def pip_args(self) -> list[str]:
        """pip's options that make it choose wheels for this interpreter, not the host's."""
        args = ["--python-version", self.version, "--implementation", self.implementation]
        for abi in self.abis:
            args += ["--abi", abi]
        for platform in self.platforms:
            args += ["--platform", platform]
        return args


def _unique(items) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def parse_probe(text: str, image: str) -> Target:
    """The probe's output, checked: anything else is the base image's fault (exit 2)."""
    try:
        data = json.loads(text.strip().splitlines()[-1])
        target = Target(version=str(data["version"]), implementation=str(data["implementation"]),
                        tags=tuple(str(t) for t in data["tags"]))
    except (ValueError, KeyError, TypeError, IndexError):
        raise UsageError(f"base image {image} (build.base_image) did not report its Python's"
                         " wheel tags; it needs python3 with pip") from None
    if not target.tags or any(t.count("-") != 2 for t in target.tags):
        raise UsageError(f"base image {image} (build.base_image) reported no usable wheel tags")
    return target


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dockship" / "targets"


def probe_target(client: docker.DockerClient, image: str, image_id: str) -> Target:
    """The target of base image `image` (content id `image_id`), from the cache or a probe."""
    cached = _cache_dir() / (image_id.replace(":", "-") + ".json")
    try:
        return parse_probe(cached.read_text(), image)
    except (OSError, UsageError):
        pass
    try:
        out = client.containers.run(image_id, entrypoint=["python3", "-c", _PROBE], remove=True,
                                    network_disabled=True, stdout=True, stderr=True)
    except docker.errors.ContainerError as exc:
        raise UsageError(f"base image {image} (build.base_image) cannot run python3 -c: "
                         f"{(exc.stderr or b'').decode(errors='replace').strip()[-200:]}") from None
    except docker.errors.DockerException as exc:
        raise DockshipError(f"probing base image {image} failed: {str(exc).splitlines()[0][:200]}"
                            ) from None
    target = parse_probe(out.decode(errors="replace"), image)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(out.decode(errors="replace"))
        tmp.replace(cached)
    except OSError:
        pass
    return target
