"""The lab config's input values, for tests that write a lab config with no lab running."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from dockship_lab import labconfig


def config_values(tmp: Path, **changes: Any) -> labconfig.LabConfigValues:
    """A three-node lab's values, its key files present (dummies) under tmp; `changes` replace fields."""
    for name in ("id_ed25519", "known_hosts", "dockship.pem"):
        (tmp / name).write_text("x")
    nodes = tuple(labconfig.ConfigNode(name=f"node{i}", address=f"10.77.0.{10 + i}",
                                       docker=f"ssh://root@10.77.0.{10 + i}", zone="abc"[i - 1])
                  for i in (1, 2, 3))
    values = labconfig.LabConfigValues(
        index_url="http://127.0.0.1:8081/simple/", index_upload_url="http://127.0.0.1:8081/",
        registry="10.77.0.1:5000", registry_auth="10.77.0.1:5001",
        registry_password_file=tmp / "pw", ca_bundle=tmp / "ca.crt",
        base_image="10.77.0.1:5000/dockship-lab/python:3-bookworm", nodes=nodes,
        ssh_user="root", ssh_key=tmp / "id_ed25519", ssh_known_hosts=tmp / "known_hosts",
        chef_url="http://127.0.0.1:4545", chef_client="dockship", chef_key=tmp / "dockship.pem",
        chef_environment="lab")
    return replace(values, **changes)
