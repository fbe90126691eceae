"""What servers and containers send is shown, never obeyed: no escape sequence, no markup, no secret.

Every table and line dockship prints is rendered here with hostile node
names, tags, reasons and log lines into a real terminal console.
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone

import pytest
from rich.console import Console

from dockship import cli
from dockship.config import Node
from dockship.history import HistoryRecord
from dockship.live import LiveTable
from dockship.observer import Phase
from dockship.plan import Batch, NodeStep, RollPlan, StepAction, Target
from dockship.progress import RichProgress
from dockship.report import NodeOutcome, NodeResult, Result, RollReport
from dockship.status import NodeStatus, ServiceStatus

# What a terminal would obey: OSC (set the title), clear screen, carriage return, C1 CSI,
# a bidi override, a bell; and what rich would parse as markup.
OBEYED = ("\x1b]0;", "\x1b[2J", "\r", "\x9b", "\u202e", "\x07", "\x00")
HOSTILE = "n\x1b]0;owned\x07\x1b[2J\rx\x9b31m\u202egnp[bold]b[/][/]"


def terminal() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=True, width=300, highlight=False), out


def assert_shown_not_obeyed(text: str) -> None:
    for raw in OBEYED:
        assert raw not in text, f"{raw!r} reached the terminal"
    assert "\\x1b]0;owned\\x07" in text and "\\u202e" in text     # shown, escaped
    assert "[bold]b[/][/]" in text                                  # shown, not parsed


def hostile_report() -> RollReport:
    node = NodeOutcome(HOSTILE, HOSTILE, HOSTILE, HOSTILE, NodeResult.FAILED, 1.0,
                       reason=HOSTILE, logs=(HOSTILE, "[/]"))
    return RollReport("roll", HOSTILE, HOSTILE, HOSTILE, "sha256:" + "a" * 64, Result.FAILED,
                      HOSTILE, (node,), "2026-12-02T00:00:00Z", 3.0, reason=HOSTILE,
                      failed_node=HOSTILE, warnings=(HOSTILE,))


def hostile_plan() -> RollPlan:
    step = NodeStep(Node(HOSTILE, "ssh://root@h", zone=HOSTILE), StepAction.DEPLOY, HOSTILE,
                    None, HOSTILE, "sha256:" + "b" * 64)
    return RollPlan(HOSTILE, HOSTILE, Target(HOSTILE, HOSTILE, "sha256:" + "b" * 64, "r/x"),
                    (Batch(0, True, (step,), zone=HOSTILE),), HOSTILE, notes=(HOSTILE,))


def test_the_status_table_shows_hostile_node_data_escaped():
    console, out = terminal()
    node = NodeStatus(HOSTILE, HOSTILE, "10.0.0.1", HOSTILE, HOSTILE, HOSTILE, HOSTILE, HOSTILE,
                      HOSTILE, (HOSTILE, "[/]"), error=HOSTILE)
    other = NodeStatus("n2", None, "10.0.0.2", "[bold]1.0[/]", None, "healthy", None, None, None, ())
    for part in cli._status_view(ServiceStatus(HOSTILE, HOSTILE, (node, other))):
        console.print(part)
    assert_shown_not_obeyed(out.getvalue())


def test_the_history_table_shows_hostile_records_escaped():
    console, out = terminal()
    start = datetime(2026, 12, 2, tzinfo=timezone.utc)
    report = hostile_report()
    rec = HistoryRecord(HOSTILE, "roll", HOSTILE, HOSTILE, HOSTILE, start, start + timedelta(seconds=3),
                        HOSTILE, None, Result.FAILED, reason=HOSTILE, nodes=report.nodes)
    console.print(cli._history_table([rec]))
    assert_shown_not_obeyed(out.getvalue())


def test_the_live_table_and_the_summary_show_hostile_text_escaped():
    console, out = terminal()
    table = LiveTable(console)
    table.planned(hostile_plan())
    table.node(HOSTILE, Phase.FAILED, HOSTILE)
    table.note(HOSTILE)
    console.print(table._table())      # what the live display draws
    table.finished(hostile_report())
    # The live display itself moves the cursor with \r; judge what the data put on the screen.
    assert_shown_not_obeyed(out.getvalue().replace("\r", ""))
    console, out = terminal()
    table = LiveTable(console)
    table.print_report(hostile_report())
    assert_shown_not_obeyed(out.getvalue())


def test_a_log_shows_every_phase_change_escaped():
    out = io.StringIO()
    table = LiveTable(Console(file=out, force_terminal=False, width=300))
    table.planned(hostile_plan())
    table.node(HOSTILE, Phase.HEALTH, HOSTILE)
    table.finished(hostile_report())
    assert_shown_not_obeyed(out.getvalue())


def test_the_dry_run_plan_shows_hostile_names_escaped(monkeypatch):
    console, out = terminal()
    monkeypatch.setattr(cli, "err", console)
    cli._print_plan(hostile_plan())
    assert_shown_not_obeyed(out.getvalue())


def test_build_progress_shows_markup_and_escapes_as_text():
    console, out = terminal()
    progress = RichProgress(console)
    progress.stage("pulling base image [bold]x[/] \x1b]0;owned\x07")
    progress.note("[/] \u202e")
    progress.build_chunk({"stream": "Step 1/2 : FROM [/] \x1b[2J\n"})
    progress.layer_chunk({"id": "0123456789ab", "status": "[bold]Pushing\x9b",
                          "progressDetail": {"current": "lots", "total": float("nan")}})
    progress.layer_chunk({"id": ["not", "a", "layer"], "status": 7})
    progress.close()
    text = out.getvalue()
    assert "[bold]x[/]" in text and "\\x1b]0;owned\\x07" in text
    for raw in ("\x1b]0;", "\x9b", "\u202e", "\x07"):
        assert raw not in text


def test_an_error_line_is_escaped_and_without_credentials(capsys, monkeypatch):
    def boom(args, halt):
        raise ValueError("Invalid URL 'http://me:s3cr/t@[::1/': \x1b]0;owned\x07 [/]")

    monkeypatch.setattr(cli, "_history", boom)
    assert cli.main(["history", "--env", "x", "--json"]) == 1
    captured = capsys.readouterr()
    for stream in (captured.err, captured.out):
        assert "s3cr" not in stream and "\x1b]0;" not in stream
    assert "[/]" in captured.err and "internal error" in captured.err


@pytest.mark.parametrize("base_image", ["[bold]x[/]", "[/]", "python:3.12[/"])
def test_markup_in_a_base_image_is_shown_not_parsed(base_image):
    console, out = terminal()
    RichProgress(console).stage(f"pulling base image {base_image}")
    assert base_image in out.getvalue()


def test_a_rejected_url_is_named_without_its_credentials(tmp_path, capsys):
    config = tmp_path / "dockship.toml"
    config.write_text('[index]\nurl = "ftp://deploy:s3cr/t@idx.example/simple/?token=zz9"\n'
                      '[registry]\nurl = "127.0.0.1:5000"\n')
    assert cli.main(["--config", str(config), "status", "--env", "stage", "--json"]) == 2
    out, err = capsys.readouterr()
    assert "index.url" in err
    for stream in (out, err):
        assert "s3cr" not in stream and "zz9" not in stream and "deploy" not in stream
    assert "ftp://***@idx.example/simple/" in err
