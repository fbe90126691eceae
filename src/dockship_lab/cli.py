"""`dockship lab up | down | status`: run the lab and render what it reports.

dockship's own command line parses the arguments and hands them here
(through `dockship_lab.command`), so the product never imports the lab.
Like the rest of dockship's CLI, progress and tables go to stderr and
`--json` prints one object on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape

import dockship_lab as lab
from dockship.errors import UsageError


def command(args: argparse.Namespace, err: Console) -> int:
    """Run `dockship lab ACTION` (args.lab_command); the exit code."""
    actions = {"up": _up, "down": _down, "status": _status}
    return actions[args.lab_command](args, err)


def _up(args: argparse.Namespace, err: Console) -> int:
    if args.nodes < 1:
        raise UsageError("--nodes must be at least 1")
    status = lab.up(nodes=args.nodes, swarm=getattr(args, "swarm", False),
                    progress=lambda step, detail="": err.print(
                        f"[bold]›[/] {escape(step)}" + (f" [dim]{escape(detail)}[/]" if detail else "")))
    _print(err, status.to_json(), args.json)
    return 0


def _down(args: argparse.Namespace, err: Console) -> int:
    lab.down()
    err.print("[green]✓[/] lab removed")
    return 0


def _status(args: argparse.Namespace, err: Console) -> int:
    _print(err, lab.status().to_json(), args.json)
    return 0


def _print(err: Console, data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        from dockship.report import document   # "schema" like every document dockship prints

        sys.stdout.write(json.dumps(document(data), indent=2, sort_keys=False) + "\n")
        sys.stdout.flush()
        return
    err.print(f"index     {data.get('index_url')}")
    err.print(f"registry  {data.get('registry')}")
    err.print(f"base      {data.get('base_image')}")
    err.print(f"chef      {(data.get('chef') or {}).get('url')}")
    if data.get("etcd"):
        err.print(f"etcd      {data['etcd'].get('url')}  (nodes under {data['etcd'].get('prefix')})")
    if data.get("balancer"):
        err.print(f"balancer  {data['balancer'].get('url')}  (HAProxy, runtime API {data['balancer'].get('socket')})")
    for node in data.get("nodes", []):
        err.print(f"node      {node['name']:8} {node['address']:15} zone {node['zone']}  {node['docker']}")
    if bastion := data.get("bastion"):
        jump = bastion["jump_only"]
        err.print(f"bastion   {bastion['address']:24} jump-only: {jump['docker']} "
                  f"({'up' if bastion['up'] else 'down'})")
    if swarm := data.get("swarm"):
        lb = swarm.get("balancer") or {}
        err.print(f"swarm     manager {swarm['manager']}  managers {', '.join(swarm['managers'])}  "
                  f"{swarm['nodes']} node(s) ready" + (f"  balancer {lb['url']}" if lb else ""))
    err.print(f"config    {data.get('config')}")
