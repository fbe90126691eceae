"""Where the lab keeps its state, and the fixed addresses of its private network.

Everything the lab creates lives under these roots (or is named with the
`dslab` prefix: bridge, veths, namespaces), so `lab down` and a `lab up` after
a crash can find and remove all of it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PREFIX = "dslab"                 # bridge, veth and netns names start with this
BRIDGE = f"{PREFIX}0"


@dataclass(frozen=True)
class LabPaths:
    root: Path    # persistent state of a running lab: keys, configs, data dirs
    run: Path     # sockets and pid files
    cache: Path   # survives `lab down`: the base image tarball
    subnet: str   # first three octets of the lab /24, e.g. "10.77.0"

    @classmethod
    def default(cls) -> "LabPaths":
        return cls(
            root=Path(os.environ.get("DOCKSHIP_LAB_DIR", "/var/lib/dockship-lab")),
            run=Path(os.environ.get("DOCKSHIP_LAB_RUN", "/run/dockship-lab")),
            cache=Path(os.environ.get("DOCKSHIP_LAB_CACHE", "/var/cache/dockship-lab")),
            subnet=os.environ.get("DOCKSHIP_LAB_SUBNET", "10.77.0"),
        )

    @property
    def host_address(self) -> str:
        """The host's address on the lab bridge: registry and Chef listen here."""
        return f"{self.subnet}.1"

    def node_address(self, index: int) -> str:
        """Address of node `index` (1-based): node1 is .11, as in the design's example."""
        return f"{self.subnet}.{10 + index}"


def write_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write atomically, with `mode` from the start (a key is never readable by others)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
