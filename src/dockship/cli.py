"""The command line: parse, call the library, print, map errors to exit codes.

Nothing here decides anything; the library does. Human output goes to
stderr and `--json` prints exactly one object on stdout, so CI can pipe it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from dockship import __version__
from dockship.errors import DockshipError

err = Console(stderr=True, highlight=False)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dockship", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"dockship {__version__}")
    p.add_argument("--config", metavar="PATH",
                   help="configuration file (default: $DOCKSHIP_CONFIG or ./dockship.toml)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    b = sub.add_parser("build", help="bake a package version from the index into a tagged image and push it")
    b.add_argument("package", help="distribution name on the index")
    b.add_argument("version", nargs="?", help="PEP 440 version (default: newest final release)")
    b.add_argument("--pre", action="store_true", help="consider pre-releases when picking the newest")
    b.add_argument("--no-push", dest="push", action="store_false", help="build only, do not push")
    b.add_argument("--force", action="store_true",
                   help="replace a tag that already holds different content")
    b.add_argument("--pull", action="store_true", help="refresh the base image before building")
    b.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    b.set_defaults(func=_build)

    lab = sub.add_parser("lab", help="the local test bed: engines, registry, index, nodes, Chef server")
    labsub = lab.add_subparsers(dest="lab_command", required=True, metavar="ACTION")
    up = labsub.add_parser("up", help="bring the lab up (idempotent)")
    up.add_argument("--nodes", type=int, default=3, help="number of nodes (default 3)")
    up.add_argument("--json", action="store_true", help="print the lab status as JSON on stdout")
    up.set_defaults(func=_lab_up)
    down = labsub.add_parser("down", help="stop and remove the whole lab")
    down.set_defaults(func=_lab_down)
    st = labsub.add_parser("status", help="what the lab runs, and where")
    st.add_argument("--json", action="store_true", help="print as JSON on stdout")
    st.set_defaults(func=_lab_status)
    return p


def _config(args: argparse.Namespace):
    from dockship.config import config_path, load
    return load(config_path(args.config))


def _emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def _build(args: argparse.Namespace) -> int:
    from dockship.build import BuildOptions, build
    from dockship.progress import RichProgress

    config = _config(args)
    observer = RichProgress(err)
    try:
        result = build(config, args.package,
                       BuildOptions(version=args.version, pre=args.pre, push=args.push,
                                    force=args.force, pull=args.pull),
                       observer=observer)
    finally:
        observer.close()
    err.print(f"[green]✓[/] {escape(result.summary())}")
    if args.json:
        _emit_json(result.to_json())
    return 0


def _lab_up(args: argparse.Namespace) -> int:
    from dockship import lab

    if args.nodes < 1:
        raise _usage("--nodes must be at least 1")
    status = lab.up(nodes=args.nodes, progress=lambda step, detail="": err.print(
        f"[bold]›[/] {escape(step)}" + (f" [dim]{escape(detail)}[/]" if detail else "")))
    _print_lab(status.to_json(), args.json)
    return 0


def _lab_down(args: argparse.Namespace) -> int:
    from dockship import lab

    lab.down()
    err.print("[green]✓[/] lab removed")
    return 0


def _lab_status(args: argparse.Namespace) -> int:
    from dockship import lab

    _print_lab(lab.status().to_json(), args.json)
    return 0


def _print_lab(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _emit_json(data)
        return
    err.print(f"index     {data.get('index_url')}")
    err.print(f"registry  {data.get('registry')}")
    err.print(f"base      {data.get('base_image')}")
    err.print(f"chef      {(data.get('chef') or {}).get('url')}")
    for node in data.get("nodes", []):
        err.print(f"node      {node['name']:8} {node['address']:15} zone {node['zone']}  {node['docker']}")
    err.print(f"config    {data.get('config')}")


def _usage(message: str) -> DockshipError:
    from dockship.errors import UsageError
    return UsageError(message)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except DockshipError as exc:
        err.print(Text.assemble(("dockship: error: ", "bold red"), str(exc)), soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("dockship: interrupted")
        return 130
