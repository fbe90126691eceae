"""The smallest config that reaches every command's servers: for tests that aim them at
ports that refuse, stall or trickle."""

from __future__ import annotations

from pathlib import Path


def minimal_config(path: Path, *, index_url: str, registry: str, docker: str) -> Path:
    """One service `hello` (port 8000), one environment `stage` with one node `node1`."""
    path.write_text(f"""
[index]
url = "{index_url}"
[registry]
url = "{registry}"
[services.hello]
port = 8000
[environments.stage]
nodes = [{{ name = "node1", docker = "{docker}" }}]
""")
    return path
