"""The command line: parse, call the library, print, map errors to exit codes.

Nothing here decides anything; the library does. Human output goes to
stderr and `--json` prints exactly one object on stdout, so CI can pipe it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

from rich.console import Console
from rich.text import Text

from dockship import __version__
from dockship.config import DEFAULT_LOCK_TTL, DEFAULT_PARALLEL
from dockship.errors import DockshipError, UsageError, last_line
from dockship.halt import Halt
from dockship.redact import safe

# Results (tables, plans, summaries) go to stdout, so `dockship status | grep node2` works;
# progress and errors go to stderr (design §2). A page that is not a terminal is wide: nothing
# wraps in a log or a pipe, and tables are read whole rather than squeezed into 80 columns.
def _width(stream) -> int | None:
    return None if stream.isatty() or "COLUMNS" in os.environ else 160


err = Console(stderr=True, highlight=False, width=_width(sys.stderr))
out = Console(highlight=False, width=_width(sys.stdout))


def _results(args: argparse.Namespace) -> Console:
    """Where a command's human-readable result goes: stdout, or stderr when stdout is --json's."""
    return err if getattr(args, "json", False) else out


def _progress(args: argparse.Namespace) -> Console:
    """Where progress goes: stderr, silenced by -q (errors and results still show)."""
    return Console(stderr=True, highlight=False, width=_width(sys.stderr),
                   quiet=getattr(args, "quiet", False))


class _Parser(argparse.ArgumentParser):
    """argparse that raises a UsageError instead of exiting, so --json still gets its object."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dockship", description="Bake package versions from an index into images and roll them onto nodes, gated on health.")
    p.add_argument("--version", action="version", version=f"dockship {__version__}")
    _global_options(p, defaults=True)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _build_parser(sub)
    _roll_parsers(sub)
    _read_parsers(sub)
    _lock_parser(sub)
    _config_parser(sub)
    ini = _command(sub, "init", help="write a commented dockship.toml and the Dockerfile.template; "
                                     "never overwrites")
    ini.set_defaults(func=_init)
    _lab_parser(sub)
    _completion_parser(sub, p)
    return p


def _completion_parser(sub, parent: argparse.ArgumentParser) -> None:
    """`dockship completion bash|zsh|tcsh`: the shell's completion script, made by shtab from
    this very parser, so it never drifts from the commands and flags."""
    try:
        import shtab
    except ImportError:      # completion is a convenience: without shtab the rest still works
        return
    comp = sub.add_parser("completion", help="print the shell completion script, e.g. "
                          "dockship completion bash > /etc/bash_completion.d/dockship")
    shtab.add_argument_to(comp, "shell", parent=parent, help="bash, zsh or tcsh")


def _global_options(p: argparse.ArgumentParser, *, defaults: bool) -> None:
    """--config, --json and --debug, before or after the subcommand (design §2).

    The subcommands' copies default to SUPPRESS, so a value given before the
    subcommand is not overwritten by the subcommand's default.
    """
    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    p.add_argument("--config", metavar="PATH", default=default(None),
                   help="configuration file (default: $DOCKSHIP_CONFIG or ./dockship.toml)")
    p.add_argument("--json", action="store_true", default=default(False),
                   help="print the result (or the error) as one JSON object on stdout")
    p.add_argument("--debug", action="store_true", default=default(False),
                   help="show the traceback of an internal error (also DOCKSHIP_DEBUG=1)")
    loud = p.add_mutually_exclusive_group()
    loud.add_argument("-q", "--quiet", action="store_true", default=default(False),
                      help="no progress on stderr: only results, warnings and errors")
    loud.add_argument("-v", "--verbose", action="store_true", default=default(False),
                      help="progress as one line per step (every phase, every build line), "
                           "no live displays")


def _command(sub: Any, name: str, **kw: Any) -> argparse.ArgumentParser:
    cmd = sub.add_parser(name, **kw)
    _global_options(cmd, defaults=False)
    return cmd


def _build_parser(sub) -> None:
    b = _command(sub, "build", help="bake a package version from the index into a tagged image and push it")
    b.add_argument("package", help="distribution name on the index")
    b.add_argument("version", nargs="?", help="PEP 440 version (default: newest final release)")
    b.add_argument("--pre", action="store_true", help="consider pre-releases when picking the newest")
    b.add_argument("--no-push", dest="push", action="store_false", help="build only, do not push")
    b.add_argument("--force", action="store_true",
                   help="replace a tag that already holds different content")
    b.add_argument("--pull", action="store_true", help="refresh the base image before building")
    _ci_flags(b)
    b.set_defaults(func=_build)


def _roll_parsers(sub) -> None:
    for name, rollback, text, tag_help in (
            ("roll", False, "roll a tag onto the nodes of an environment, node by node",
             "image tag (default: the highest final release in the registry)"),
            ("rollback", True, "put every node back on the tag it ran before",
             "roll this tag instead of each node's previous one")):
        r = _command(sub, name, help=text)
        r.add_argument("--env", required=True, help="environment name from the config")
        r.add_argument("--service", help="service (default: every service of the config)")
        r.add_argument("--tag", help=tag_help)
        r.add_argument("--dry-run", action="store_true", help="print the plan and touch nothing")
        if not rollback:
            r.add_argument("--canary-only", action="store_true",
                           help="roll the canary nodes only and stop (promote later with a normal roll)")
            r.add_argument("--zone", help="roll the nodes of this zone only")
        _deploy_flags(r)
        _ci_flags(r)
        r.set_defaults(func=_roll, rollback=rollback, canary_only=False, zone=None)


def _read_parsers(sub) -> None:
    st = _command(sub, "status", help="what every node of an environment runs, and its health")
    st.add_argument("--env", required=True)
    st.add_argument("--service")
    st.set_defaults(func=_status)

    hi = _command(sub, "history", help="every roll and rollback of an environment, newest first")
    hi.add_argument("--env", required=True)
    hi.add_argument("--service")
    hi.set_defaults(func=_history)

    ve = _command(sub, "versions", help="the tags the registry holds, newest first, and where each runs")
    ve.add_argument("service", help="service name from the config")
    ve.set_defaults(func=_versions)

    lg = _command(sub, "logs", help="the service's container output from each node")
    ex = _command(sub, "exec", help="run a command in the service's running container on each node")
    for p in (lg, ex):
        p.add_argument("--env", required=True)
        p.add_argument("--service")
        p.add_argument("--node", help="only this node")
    lg.add_argument("--since", help="only lines newer than this: 10m, 2h, 1d, or an ISO 8601 time")
    lg.add_argument("--tail", type=int, metavar="N", help="the last N lines of each node")
    lg.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    lg.set_defaults(func=_logs)
    ex.add_argument("command", nargs=argparse.REMAINDER, metavar="-- COMMAND...",
                    help="an argv, no shell (write `-- sh -c '...'` for one)")
    ex.set_defaults(func=_exec)


def _lock_parser(sub) -> None:
    lock = _command(sub, "lock", help="the deploy lock: who holds it, and giving it back")
    locksub = lock.add_subparsers(dest="lock_command", required=True, metavar="ACTION")
    st = _command(locksub, "status", help="who holds the lock of each service, since when, why")
    rel = _command(locksub, "release",
                   help="remove a lock whose holder is gone (a killed job); recorded in history")
    rel.add_argument("--force", action="store_true",
                     help="also remove a live lease (its roll may still be running!)")
    for p in (st, rel):
        p.add_argument("--env", required=True)
        p.add_argument("--service")
    st.set_defaults(func=_lock_status)
    rel.set_defaults(func=_lock_release, force=False)


def _config_parser(sub) -> None:
    cfg = _command(sub, "config", help="check the configuration, or show it with every default")
    cfgsub = cfg.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = _command(cfgsub, "check", help="validate offline: exit 0, or 2 listing every problem")
    show = _command(cfgsub, "show", help="the resolved settings, defaults filled in, credentials masked")
    for p in (check, show):
        p.add_argument("--env", help="only this environment")
    check.set_defaults(func=_config_check)
    show.set_defaults(func=_config_show)


def _lab_parser(sub) -> None:
    lab = _command(sub, "lab", help="the local test bed: engines, registry, index, nodes, Chef server")
    labsub = lab.add_subparsers(dest="lab_command", required=True, metavar="ACTION")
    up = _command(labsub, "up", help="bring the lab up (idempotent)")
    up.add_argument("--nodes", type=int, default=3, help="number of nodes (default 3)")
    up.add_argument("--swarm", action="store_true",
                    help="the node engines also form one Docker Swarm (three managers), "
                         "configured as environment labswarm")
    up.set_defaults(func=_lab)
    down = _command(labsub, "down", help="stop and remove the whole lab")
    down.set_defaults(func=_lab)
    st = _command(labsub, "status", help="what the lab runs, and where")
    st.set_defaults(func=_lab)


def _config(args: argparse.Namespace):
    """The loaded configuration; its warnings (plain TCP engines, say) are printed once here."""
    from dockship.config import config_path, load

    config = load(config_path(args.config))
    _remember_url_secrets(config)
    for warning in config.warnings:
        err.print(Text.assemble(("warning: ", "bold yellow"), safe(warning)), soft_wrap=True)
    return config


def _remember_url_secrets(config) -> None:
    """Credentials written into URLs of the config are scrubbed from every output from now on,
    even where they appear outside a URL (a server echoing a token, say)."""
    from dockship import redact

    urls = [config.index_url] + [e.chef.url for e in config.environments.values() if e.chef]
    for url in urls:
        redact.remember(*redact.url_secrets(url))


def _ci_flags(p: argparse.ArgumentParser) -> None:
    """--junit and --report (design §12): files for CI, written whatever stdout shows."""
    p.add_argument("--junit", metavar="PATH",
                   help="write a JUnit XML report: a testsuite per service, a testcase per "
                        "node step and gate")
    p.add_argument("--report", metavar="PATH",
                   help="write the --json object to this file (also on failure)")


def _json_text(obj: Any) -> str:
    from dockship.report import document

    return json.dumps(document(obj), indent=2, sort_keys=False) + "\n"


def _emit_json(obj: Any) -> None:
    """Every JSON document dockship prints goes through here: it gets `"schema": 1` first."""
    sys.stdout.write(_json_text(obj))
    sys.stdout.flush()


def _deliver(args: argparse.Namespace, obj: Any) -> None:
    """A command's result object: printed with --json, written to --report either way."""
    if args.json:
        _emit_json(obj)
    if getattr(args, "report", None):
        _write_file(args.report, _json_text(obj).encode(), "--report")


@contextlib.contextmanager
def _ci_output(what: str) -> Iterator[None]:
    """Writing a CI file or GitHub Actions output, once the command's outcome is known.

    The outcome stays the exit code: a file that cannot be written (the folder
    was checked before anything ran) is an error line on stderr, not a second
    outcome that would hide the deployment's own.
    """
    try:
        yield
    except OSError as exc:
        err.print(Text.assemble(("dockship: error: ", "bold red"),
                                safe(f"{what}: cannot write: {exc.strerror or exc}")),
                  soft_wrap=True)


def _write_file(path: str, data: bytes, flag: str) -> None:
    with _ci_output(f"{flag} {path}"), open(path, "wb") as fh:
        fh.write(data)


def _ci_stream(args: argparse.Namespace):
    """Where GitHub annotations go: stdout, or stderr when stdout holds --json's object."""
    return sys.stderr if getattr(args, "json", False) else sys.stdout


def _build(args: argparse.Namespace, halt: Halt) -> int:
    from dockship.build import BuildOptions, build
    from dockship.progress import RichProgress

    from dockship import ghactions, junit

    config = _config(args)
    observer = RichProgress(_progress(args), verbose=args.verbose)
    t0 = time.monotonic()
    try:
        result = build(config, args.package,
                       BuildOptions(version=args.version, pre=args.pre, push=args.push,
                                    force=args.force, pull=args.pull),
                       observer=observer)
    finally:
        observer.close()
    _results(args).print(Text.assemble(("✓", "green"), " ", safe(result.summary())))
    _deliver(args, {**result.to_json(), "result": "succeeded"})
    if args.junit:
        _write_file(args.junit, junit.build_xml(result.package, result.version,
                                                pushed=result.pushed,
                                                seconds=time.monotonic() - t0), "--junit")
    with _ci_output("GitHub Actions outputs"):
        ghactions.publish_build({"tag": result.tag, "digest": result.digest or "",
                                 "result": "succeeded"}, result.summary(),
                                stream=_ci_stream(args))
    return 0


def _deploy_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--lock-wait", type=float, default=0.0, metavar="SECONDS",
                   help="wait this long for another deployment's lock (default: fail at once, exit 3)")
    p.add_argument("--parallel", type=int, default=DEFAULT_PARALLEL, metavar="N",
                   help=f"engine connections and pulls opened at once (default {DEFAULT_PARALLEL})")
    p.add_argument("--lock-ttl", type=float, default=DEFAULT_LOCK_TTL, metavar="SECONDS",
                   help="how long the deploy lock outlives its last renewal if dockship dies "
                        f"(default {DEFAULT_LOCK_TTL:g}; renewed every third of it while rolling)")
    p.add_argument("--message", default=os.environ.get("DOCKSHIP_LOCK_MESSAGE", ""),
                   help="stored with the deploy lock and shown to anyone it blocks, e.g. a CI "
                        "job URL (default $DOCKSHIP_LOCK_MESSAGE)")


def _roll(args: argparse.Namespace, halt: Halt) -> int:
    from dockship import ghactions, junit
    from dockship.roll import RollOptions, roll
    from dockship.report import NodeResult, roll_document
    from dockship.live import LiveTable
    from dockship import notify

    config = _config(args)
    outcomes = roll(config, args.env, service=args.service,
                    opts=RollOptions(tag=args.tag, dry_run=args.dry_run,
                                     canary_only=args.canary_only, zone=args.zone,
                                     lock_wait=args.lock_wait, lock_ttl=args.lock_ttl,
                                     message=args.message, parallel=args.parallel,
                                     report_path=args.report),
                    observer=LiveTable(_progress(args), results=_results(args),
                                       lines=args.verbose),
                    halt=halt, rollback=args.rollback)
    if args.dry_run:
        for o in outcomes:
            _print_plan(o.plan, _results(args))
        plans = [o.plan.to_json() for o in outcomes]
        _deliver(args, plans[0] if len(plans) == 1 else {"services": plans})
        return 0
    reports = [o.report for o in outcomes if o.report is not None]
    # The final report objects: --json, --report, --junit, GitHub Actions and the
    # notifications all read `reports`; a failed delivery never changes the exit code.
    notes = notify.deliver(config, args.env, reports)
    _deliver(args, notify.with_notifications(roll_document(reports), notes))
    if args.junit:
        _write_file(args.junit, junit.roll_xml(reports), "--junit")
    with _ci_output("GitHub Actions outputs"):
        ghactions.publish_roll(reports, stream=_ci_stream(args))
    if any(r.broken for r in reports):
        return 4     # a node could not be put back: the report names it
    if halt.is_set():
        untouched = {NodeResult.NOT_REACHED, NodeResult.UNCHANGED, NodeResult.HELD}
        if halt.signum and all(n.result in untouched for r in reports for n in r.nodes):
            return 128 + halt.signum     # 130 / 143: stopped before any node was touched
        return 1
    return 0 if all(r.ok for r in reports) else 1


def _print_plan(plan, console: Console | None = None) -> None:
    from dockship.live import cell

    console = console or err
    kind = "rollback" if plan.rollback else "roll"
    console.print(Text.assemble(("plan", "bold"), f" ({kind}, dry run: nothing touched): ",
                                cell(f"{plan.service} → {plan.target.tag} in {plan.env} "),
                                cell(plan.target.digest, "dim")))
    for batch in plan.batches:
        console.print(Text.assemble("  ", cell(batch.label, "bold")))
        for s in batch.steps:
            why = s.action.value if s.why == s.action.value else f"{s.action.value}: {s.why}"
            changed = f" {', '.join(s.changed)}" if s.changed else ""   # key names, never values
            console.print(cell(f"    {s.node.name:12} zone {s.node.zone or '-':4} "
                               f"{s.from_tag or '—'} → {s.to_tag}  ({why}{changed})"))
    for note in plan.notes:
        console.print(cell(f"  {note}"))


def _status(args: argparse.Namespace, halt: Halt) -> int:
    from dockship.status import status

    result = status(_config(args), args.env, args.service)
    console = _results(args)
    for svc in result:
        for part in _status_view(svc):
            console.print(part)
    if args.json:
        data = [s.to_json() for s in result]
        _emit_json(data[0] if len(data) == 1 else {"services": data})
    return 0 if all(n.ok for s in result for n in s.nodes) else 1   # design §11


def _status_view(svc) -> tuple[Any, ...]:
    """A service's heading, its table of nodes, and each node's error in full below it.

    Tag, health and times are never cut; an error is too long for a cell, so the
    cell says "error" and the text follows the table. Every value goes through
    `live.cell` (escaped, never markup); `since` is shown as an age.
    """
    from rich.table import Table

    from dockship.live import cell
    from dockship.times import ago

    split = cell(" (split fleet: " + ", ".join(svc.tags) + ")", "yellow") if len(svc.tags) > 1 else ""
    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("node", "zone", "tag", "health", "since", "previous", "retained", "digest"):
        table.add_column(col, no_wrap=col != "retained", overflow="fold")
    for n in svc.nodes:
        health = cell("error (below)", "red") if n.error else cell(n.health, "" if n.ok else "red")
        table.add_row(cell(n.name), cell(n.zone or ""), cell(n.tag or "—"), health,
                      cell(ago(n.since)), cell(n.previous or ""), cell(", ".join(n.retained)),
                      cell((n.digest or "")[:19]))
    errors = tuple(Text.assemble("  ", cell(n.name, "bold"), ": ", cell(n.error, "red"))
                   for n in svc.nodes if n.error)
    return (Text.assemble(cell(svc.service, "bold"), " in ", cell(svc.env), split), table, *errors)


def _history(args: argparse.Namespace, halt: Halt) -> int:
    from dockship.roll import read_history

    records = read_history(_config(args), args.env, args.service)
    _results(args).print(_history_table(records) if records else "no deployments recorded")
    if args.json:
        _emit_json({"env": args.env, "service": args.service,
                    "records": [r.to_json() for r in records]})
    return 0


def _history_table(records) -> Any:
    """The records newest first, and below the table the reason of each that did not succeed.

    Deploy, kind, tag and result are never cut; the nodes column wraps. Every
    value goes through `live.cell` (escaped, never markup).
    """
    from rich.console import Group
    from rich.table import Table

    from dockship.live import cell
    from dockship.times import ago

    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("when", "deploy", "kind", "service", "tag", "result", "time", "by", "nodes"):
        table.add_column(col, no_wrap=col != "nodes", overflow="fold")
    for rec in records:
        nodes = "\n".join(safe(f"{n.name} {n.from_tag or '—'}→{n.to_tag} {n.result}")
                          for n in rec.nodes)
        table.add_row(*(cell(v) for v in (
            ago(rec.started_at), rec.deploy_id, rec.kind, rec.service, rec.tag, rec.result,
            f"{rec.duration:.1f}s", rec.user.split(" pid ")[0])), Text(nodes))
    reasons = [Text.assemble("  ", cell(rec.deploy_id, "bold"), f" {rec.result}: ",
                             cell(rec.reason))
               for rec in records if rec.reason and str(rec.result) != "succeeded"
               or rec.reason and str(rec.kind) == "lock_release"]
    return Group(table, *reasons)


def _versions(args: argparse.Namespace, halt: Halt) -> int:
    from rich.table import Table

    from dockship.versions import versions

    found = versions(_config(args), args.service)
    table = Table(box=None, pad_edge=False, header_style="bold", title_justify="left",
                  title=Text(f"{found.repository}", style="bold"))
    table.add_column("tag", no_wrap=True)
    table.add_column("running on", overflow="fold")
    for row in found.rows:
        table.add_row(Text(row.tag), Text(", ".join(str(p) for p in row.running)))
    _results(args).print(table if found.rows else Text(f"{found.repository}: no tags in the registry"))
    for line in found.unread:
        err.print(Text.assemble(("not read: ", "yellow"), safe(line)), soft_wrap=True)
    if args.json:
        _emit_json(found.to_json())
    return 0


def _logs(args: argparse.Namespace, halt: Halt) -> int:
    from dockship.logs import logs, parse_since

    if args.follow and args.json:
        raise _usage("--json prints one object at the end, which -f never reaches; drop one")
    since = parse_since(args.since) if args.since else None
    config = _config(args)
    collected: list[dict[str, str]] = []

    def emit(line) -> None:
        if args.json:
            collected.append({"node": line.node, "service": line.service, "text": line.text})
        else:
            sys.stdout.write(f"{line.node} | {safe(line.text)}\n")
            if args.follow:
                sys.stdout.flush()

    unread = logs(config, args.env, args.service, args.node, tail=args.tail, since=since,
                  follow=args.follow, emit=emit)
    for line in unread:
        err.print(Text.assemble(("not read: ", "yellow"), safe(line)), soft_wrap=True)
    if args.json:
        _emit_json({"env": args.env, "lines": collected, "unread": unread})
    return 1 if unread else 0


def _exec(args: argparse.Namespace, halt: Halt) -> int:
    from dockship.nodeexec import run

    command = tuple(args.command[1:] if args.command[:1] == ["--"] else args.command)
    if not command:
        raise _usage("exec needs a command after `--`, e.g. dockship exec --env stage -- "
                     "python -m myapp.migrate")
    results = run(_config(args), args.env, args.service, args.node, command)
    for r in results:
        head = f"exit {r.exit_code}" if r.error is None else f"not run: {r.error}"
        err.print(Text.assemble((f"{r.node}", "bold"), f" ({r.service}) ", safe(head)),
                  soft_wrap=True)
        if not args.json:
            for stream, text in ((sys.stdout, r.stdout), (sys.stderr, r.stderr)):
                for line in text.splitlines():
                    stream.write(f"{r.node} | {safe(line)}\n")
            sys.stdout.flush()
    if args.json:
        _emit_json({"env": args.env, "command": list(command),
                    "nodes": [r.to_json() for r in results]})
    return 0 if results and all(r.ok for r in results) else 1


def _config_check(args: argparse.Namespace, halt: Halt) -> int:
    from dockship.configview import settings, summary

    config = _config(args)
    settings(config, args.env)            # an unknown --env is exit 2 here too
    if args.json:
        _emit_json({"config": str(config.path), "valid": True, "warnings": list(config.warnings)})
    else:
        sys.stdout.write(safe(summary(config, args.env)) + "\n")
    return 0


def _config_show(args: argparse.Namespace, halt: Halt) -> int:
    from dockship import configfile
    from dockship.configview import settings

    config = _config(args)
    data = settings(config, args.env)
    if args.json:
        _emit_json(data)
    else:
        sys.stdout.write(configfile.render(data, comment=f"resolved from {config.path}"))
    return 0


def _init(args: argparse.Namespace, halt: Halt) -> int:
    from dockship.config import config_path
    from dockship.scaffold import init

    made = init(config_path(args.config))
    if args.json:
        _emit_json({"config": str(made.config), "template": str(made.template)})
    else:
        sys.stdout.write(f"wrote {made.config} (every key, commented) and {made.template}; "
                         f"edit them, then: dockship config check\n")
    return 0


def _lock_status(args: argparse.Namespace, halt: Halt) -> int:
    from dockship.lockops import lock_status

    locks = lock_status(_config(args), args.env, args.service)
    for state in locks:
        _results(args).print(Text.assemble((state.service, "bold"), f" in {state.env}: ",
                                safe(state.describe())), soft_wrap=True)
    if args.json:
        _emit_json({"env": args.env, "locks": [s.to_json() for s in locks]})
    return 0


def _lock_release(args: argparse.Namespace, halt: Halt) -> int:
    from dockship.lockops import release

    done = release(_config(args), args.env, args.service, force=args.force)
    for r in done:
        text = (f"released: {r.record.reason}" if r.record is not None else "was not locked")
        _results(args).print(Text.assemble((r.service, "bold"), f" in {args.env}: ", safe(text)),
                  soft_wrap=True)
        if r.failed:
            err.print(f"  [red]could not remove it on:[/] {escape(', '.join(r.failed))}")
    if args.json:
        _emit_json({"env": args.env, "released": [r.to_json() for r in done]})
    return 1 if any(r.failed for r in done) else 0


def _lab(args: argparse.Namespace, halt: Halt) -> int:
    """`dockship lab ...` runs the lab package, which the product itself never imports."""
    import importlib

    try:
        lab = importlib.import_module("dockship_lab")
    except ModuleNotFoundError as exc:
        if exc.name != "dockship_lab":
            raise
        raise _usage("the lab is not installed; install it with: pip install 'dockship[lab]'") from None
    return lab.command(args, err)


def _usage(message: str) -> DockshipError:
    from dockship.errors import UsageError
    return UsageError(message)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every way it can end is an exit code and one line, never a traceback.

    With `--json` a failure before any result still prints one object,
    `{"error", "exit_code"}` (design §2). An error nobody foresaw is a bug:
    `dockship: internal error: …`, exit 1; `--debug` or DOCKSHIP_DEBUG=1 shows
    its traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = argparse.Namespace(json="--json" in argv, debug="--debug" in argv,
                              **_early_files(argv))
    halt = Halt()
    try:
        try:
            args = _parser().parse_args(argv)
        except UsageError as exc:
            return _fail(args, "dockship: error: ", str(exc), 2)
        _check_args(args)
        with _signals(args, halt):
            return args.func(args, halt)
    except DockshipError as exc:
        return _fail(args, "dockship: error: ", str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return _fail(args, "dockship: ", "interrupted", 130)
    except BrokenPipeError:
        # The reader left (`dockship history | head`): nothing more can reach it, and
        # Python's own flush at exit must not complain about it either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141   # 128 + SIGPIPE, as a shell reports a writer its pipe closed on
    except Exception as exc:  # noqa: BLE001 - the one place a bug is turned into an exit code
        if args.debug or os.environ.get("DOCKSHIP_DEBUG", "") not in ("", "0"):
            raise
        return _fail(args, "dockship: internal error: ",
                     f"{type(exc).__name__}: {last_line(exc, 500)} (run with --debug for the "
                     "traceback)", 1)


def _early_files(argv: Sequence[str]) -> dict[str, Any]:
    """--report and --junit as typed, for the error object when the arguments do not parse."""
    found: dict[str, Any] = {"report": None, "junit": None, "command": None}
    taking = {"--config", "--report", "--junit"}
    for i, arg in enumerate(argv):
        if found["command"] is None and not arg.startswith("-") \
                and (i == 0 or argv[i - 1] not in taking):
            found["command"] = arg
        for name in ("report", "junit"):
            if arg == f"--{name}" and i + 1 < len(argv):
                found[name] = argv[i + 1]
            elif arg.startswith(f"--{name}="):
                found[name] = arg.split("=", 1)[1]
    return found


def _tag_problem(value: object) -> str | None:
    """A tag, or a version typed as a version (1!2.0, 1.0+abc), which the roll maps to its tag."""
    from dockship.checks import tag_problem, version_problem
    return None if version_problem(value) is None else tag_problem(value)


def _arg_checks() -> dict[str, tuple[str, Any]]:
    """Each checked argument: its flag and the check of `dockship.checks` it must pass."""
    from dockship import checks

    hour, day = 3600.0, 86400.0
    return {
        "env": ("--env", checks.name_problem), "service": ("--service", checks.name_problem),
        "node": ("--node", checks.name_problem), "zone": ("--zone", checks.name_problem),
        "tag": ("--tag", _tag_problem), "version": ("VERSION", checks.version_problem),
        "package": ("PACKAGE", checks.package_problem),
        "lock_wait": ("--lock-wait", lambda v: checks.number_problem(v, 0, day)),
        "lock_ttl": ("--lock-ttl", lambda v: checks.number_problem(v, 1, 7 * day)),
        "parallel": ("--parallel", lambda v: checks.number_problem(v, 1, 1024, integer=True)),
        "tail": ("--tail", lambda v: checks.number_problem(v, 0, 10_000_000, integer=True)),
        "message": ("--message", lambda v: checks.text_problem(v, limit=1024)),
        "nodes": ("--nodes", lambda v: checks.number_problem(v, 1, 64, integer=True)),
        "report": ("--report", _output_file_problem), "junit": ("--junit", _output_file_problem),
    }


def _output_file_problem(value: object) -> str | None:
    """A CI file must be writable where asked, or the roll would end saying nothing of itself."""
    path = str(value)
    folder = os.path.dirname(os.path.abspath(path)) if path else ""
    if not path or os.path.isdir(path):
        return f"{path!r} is not a file path; give e.g. reports/dockship.xml"
    if not os.path.isdir(folder):
        return f"folder {folder} does not exist; create it first"
    if not os.access(folder, os.W_OK):
        return f"folder {folder} is not writable"
    return None


def _check_args(args: argparse.Namespace) -> None:
    """Every command-line value checked like configuration, before any file, engine or server
    is read (design §8): one UsageError listing every bad value, exit 2."""
    problems = []
    for attr, (flag, check) in _arg_checks().items():
        value = getattr(args, attr, None)
        if value is not None and (attr != "message" or value) and (problem := check(value)):
            problems.append(f"{flag}: {problem}")
    if problems:
        raise UsageError("; ".join(problems))


@contextlib.contextmanager
def _signals(args: argparse.Namespace, halt: Halt) -> Iterator[None]:
    """SIGINT and SIGTERM: end at once while nothing is touched, else wind the roll down.

    Until `halt.begin_changes()` (a roll taking its first lock) the process
    only resolves, plans and connects, and may block in any of them on a slow
    server: ending it outright is the one way to stop within the 2 s of design
    §8, and nothing needs undoing. After that a signal trips the halt: the
    node in flight is finished or put back, the rest per auto_rollback. The lab
    keeps Python's defaults: its own steps run subprocesses it must reap.
    """
    if args.command == "lab" or threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if not halt.changing:
            _fail(args, "dockship: ", f"stopped by {name}; nothing was touched", 128 + signum)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + signum)
        if halt.trip(f"interrupted by {name}", signum=signum):
            err.print(f"[yellow]![/] {name}: finishing or undoing the node "
                      "in flight, then stopping (rolling back what changed)")
        else:
            err.print("[yellow]![/] already stopping; no node is left without a container")

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _fail(args: argparse.Namespace, head: str, text: str, code: int) -> int:
    shown = safe(text, newlines=True)
    err.print(Text.assemble((head, "bold red"), shown), soft_wrap=True)
    if getattr(args, "json", False):
        _emit_json({"error": shown, "exit_code": code})
    _fail_files(args, shown, code)
    return code


def _fail_files(args: argparse.Namespace, shown: str, code: int) -> None:
    """--report, --junit and GitHub Actions also learn why a command ended without a result."""
    from dockship import ghactions, junit

    command = getattr(args, "command", None) or "command"
    if getattr(args, "report", None):
        _write_file(args.report, _json_text({"error": shown, "exit_code": code}).encode(),
                    "--report")
    if getattr(args, "junit", None):
        _write_file(args.junit, junit.error_xml(command, shown, code), "--junit")
    if command in ("build", "roll", "rollback"):
        with _ci_output("GitHub Actions outputs"):
            ghactions.publish_error(command, shown, code, stream=_ci_stream(args))
