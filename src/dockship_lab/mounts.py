"""Mounts under the lab's directories, and removing those directories safely.

dockerd bind-mounts its data root onto itself and mounts overlays and netns
files below its roots; after a kill those mounts stay. A plain `rm -r` of
such a directory would walk into the mounted filesystems and delete their
files, so every removal here unmounts first.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from dockship_lab.process import LabError, run


def mount_points() -> list[str]:
    """Mount points of our mount namespace, unescaped (mountinfo writes a space as \\040)."""
    return [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split(" ")[4])
            for line in Path("/proc/self/mountinfo").read_text().splitlines()]


def mounts_under(directories: Iterable[Path]) -> list[str]:
    """Mount points at or below the directories, deepest first (the unmount order)."""
    marks = [str(d).rstrip("/") for d in directories]
    found = {p for p in mount_points() if any(p == m or p.startswith(m + "/") for m in marks)}
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def unmount_under(directories: list[Path]) -> None:
    """Unmount everything at or below the directories (lazily where a plain umount fails)."""
    for _ in range(3):
        points = mounts_under(directories)
        if not points:
            return
        for point in points:
            if run(["umount", point], check=False).returncode != 0:
                run(["umount", "--lazy", point], check=False)
    left = mounts_under(directories)
    if left:
        raise LabError(f"cannot unmount {left[0]} ({len(left)} mounts left); "
                       f"see `grep {directories[0]} /proc/self/mountinfo`")


def remove_tree(directory: Path) -> None:
    """rm -r directory, after unmounting whatever is mounted at or below it."""
    if not directory.exists():
        return
    unmount_under([directory.resolve()])
    shutil.rmtree(directory, ignore_errors=True)
    if directory.exists():
        raise LabError(f"could not remove {directory} completely; see what holds it with "
                       f"`findmnt -R {directory}` and `fuser -vm {directory}`")
