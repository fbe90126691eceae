"""--report, "schema": 1, and the GitHub Actions files, from real roll reports in memory."""

from __future__ import annotations

import io
import json
import re

from fakenode import fleet
from test_executor import run

from dockship import ghactions
from dockship.cli import main
from dockship.report import NodeOutcome, NodeResult, Result, RollReport, roll_document

FIXED = {"env", "service", "tag", "digest", "result", "nodes"}
NODE_KEYS = {"name", "zone", "from", "to", "result", "seconds"}


def gha(tmp_path) -> dict[str, str]:
    return {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
            "GITHUB_OUTPUT": str(tmp_path / "output")}


def parse_outputs(text: str) -> dict[str, str]:
    """$GITHUB_OUTPUT read the way the runner reads it: name=value, or name<<DELIM ... DELIM."""
    out, lines = {}, iter(text.splitlines())
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delim = line.split("<<", 1)
            value = []
            for more in lines:
                if more == delim:
                    break
                value.append(more)
            out[name] = "\n".join(value)
        else:
            name, value = line.split("=", 1)
            out[name] = value
    return out


def test_one_service_is_one_object_with_the_fixed_keys_and_schema():
    doc = roll_document([run(fleet(2))])
    assert doc["schema"] == 1 and list(doc)[0] == "schema"
    assert FIXED <= set(doc) and "services" not in doc
    assert all(NODE_KEYS <= set(n) for n in doc["nodes"])


def test_several_services_are_listed_under_services_with_one_schema():
    doc = roll_document([run(fleet(1)), run(fleet(2))])
    assert set(doc) == {"schema", "services"}
    assert all(FIXED <= set(s) and "schema" not in s for s in doc["services"])


def test_a_broken_node_says_broken_in_the_report():
    nodes = fleet(3)
    nodes["node2"].lose_engine("start")
    doc = roll_document([run(nodes)])
    assert doc["result"] == "failed"
    assert [n["result"] for n in doc["nodes"]] == ["rolled_back", "broken", "not_reached"]


def test_github_actions_gets_a_summary_annotations_and_outputs(tmp_path):
    report = run(fleet(3, behaviour={"1.1.0": "crash"}))
    stream = io.StringIO()
    ghactions.publish_roll([report], environ=gha(tmp_path), stream=stream)
    summary = (tmp_path / "summary.md").read_text()
    assert "roll of `hello` to `1.1.0` in `stage`: **rolled_back**" in summary
    assert "| node1 |   | 1.0.0 | 1.1.0 | failed |" in summary
    [line] = stream.getvalue().splitlines()
    assert line.startswith("::error title=hello on node1 in stage%3A failed::")
    assert "\n" not in line and "%0A" in line          # reason and log lines, escaped
    outputs = parse_outputs((tmp_path / "output").read_text())
    assert outputs == {"tag": "1.1.0", "digest": report.digest, "result": "rolled_back",
                       "failed_node": "node1", "broken": ""}


def test_github_outputs_name_broken_nodes_and_annotate_each(tmp_path):
    nodes = fleet(3)
    nodes["node2"].lose_engine("start")
    report = run(nodes)
    stream = io.StringIO()
    ghactions.publish_roll([report], environ=gha(tmp_path), stream=stream)
    titles = [re.match(r"::error title=([^:]*)::", x).group(1)
              for x in stream.getvalue().splitlines()]
    assert titles == ["hello on node2 in stage%3A broken"]   # node1 was only rolled back
    outputs = parse_outputs((tmp_path / "output").read_text())
    assert outputs["result"] == "failed" and outputs["broken"] == "node2"
    assert "Broken (could not be put back): node2" in (tmp_path / "summary.md").read_text()


def test_several_tags_are_a_multiline_output_in_the_heredoc_form(tmp_path):
    def report(service: str, tag: str) -> RollReport:
        node = NodeOutcome("n1", None, "1.0", tag, NodeResult.UPDATED, 1.0)
        return RollReport("roll", "prod", service, tag, f"sha256:{service}", Result.SUCCEEDED,
                          "d1", (node,), "2026-01-01T00:00:00Z", 1.0)

    ghactions.publish_roll([report("api", "1.1"), report("web", "2.0")], environ=gha(tmp_path),
                           stream=io.StringIO())
    text = (tmp_path / "output").read_text()
    assert re.search(r"^tag<<ghadelimiter_[0-9a-f]{16}$", text, re.M)
    outputs = parse_outputs(text)
    assert outputs["tag"] == "api=1.1\nweb=2.0" and outputs["result"] == "succeeded"


def test_nothing_is_written_outside_github_actions(tmp_path):
    env = gha(tmp_path) | {"GITHUB_ACTIONS": "false"}
    stream = io.StringIO()
    ghactions.publish_roll([run(fleet(1))], environ=env, stream=stream)
    assert stream.getvalue() == "" and not list(tmp_path.iterdir())


def test_workflow_command_escaping():
    assert ghactions.escape_data("50%\r\nnext") == "50%25%0D%0Anext"
    assert ghactions.escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"
    assert ghactions.annotation("t: x, y", "m: x, y") == "::error title=t%3A x%2C y::m: x, y"


def test_a_failure_before_any_result_writes_the_error_everywhere(tmp_path, monkeypatch, capsys):
    for key, value in gha(tmp_path).items():
        monkeypatch.setenv(key, value)
    config = tmp_path / "dockship.toml"
    config.write_text("[index]\nurl = 'not a url'\n")
    report, xml = tmp_path / "report.json", tmp_path / "junit.xml"
    code = main(["--config", str(config), "roll", "--env", "stage", "--json",
                 "--report", str(report), "--junit", str(xml)])
    assert code == 2
    out, err = capsys.readouterr()
    printed = json.loads(out)                       # annotations went to stderr: stdout is JSON
    assert printed == json.loads(report.read_text())
    assert printed["schema"] == 1 and printed["exit_code"] == 2 and printed["error"]
    assert "::error title=dockship roll failed (exit 2)::" in err
    assert parse_outputs((tmp_path / "output").read_text()) == {"result": "error"}
    assert b"<error" in xml.read_bytes()


def test_a_usage_error_still_writes_the_report(tmp_path):
    report = tmp_path / "r.json"
    assert main(["roll", "--report", str(report), "--no-such-flag"]) == 2
    assert json.loads(report.read_text())["exit_code"] == 2


def test_a_report_that_cannot_be_written_is_refused_before_anything_is_read(tmp_path, capsys):
    code = main(["--config", str(tmp_path / "absent.toml"), "roll", "--env", "stage",
                 "--junit", str(tmp_path / "no" / "such" / "junit.xml")])
    assert code == 2
    assert "--junit: folder" in capsys.readouterr().err


def test_an_unwritable_report_after_the_outcome_is_an_error_line_not_a_new_exit_code(
        tmp_path, capsys):
    from dockship.cli import _write_file

    folder = tmp_path / "gone"
    _write_file(str(folder / "r.json"), b"{}", "--report")     # the folder vanished meanwhile
    assert "--report " in capsys.readouterr().err and not folder.exists()
