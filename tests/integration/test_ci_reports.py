"""The CI files of a real roll on the lab: --junit, --report, GitHub Actions, closing hooks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import xmlschema

from conftest import dockship
from rollkit import make_fleet

pytestmark = pytest.mark.lab

SCHEMA = xmlschema.XMLSchema(Path(__file__).parent.parent / "data" / "junit-10.xsd")
DUMP = ("import json, os, sys; env = {k: v for k, v in os.environ.items() "
        "if k.startswith('DOCKSHIP_')}; "
        "env['report'] = json.load(open(env['DOCKSHIP_REPORT'])); "
        "json.dump(env, open(sys.argv[1], 'w'))")


@pytest.fixture(scope="module")
def fleet(lab, run_id, tmp_path_factory):
    fleet = make_fleet(lab, run_id, tmp_path_factory.mktemp("ci"), prefix="c", port=18850,
                       versions={"1.0.0": "ok", "1.1.0": "crash"})
    yield fleet
    fleet.cleanup()


def ci_env(tmp: Path) -> dict[str, str]:
    return {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(tmp / "summary.md"),
            "GITHUB_OUTPUT": str(tmp / "output")}


def test_a_roll_and_a_failed_roll_write_every_ci_file(fleet, tmp_path):
    seen = tmp_path / "hook.json"
    fleet.write_config(hooks={name: [sys.executable, "-c", DUMP, str(seen)]
                              for name in ("post_roll", "on_failure")})
    good_dir, bad_dir = tmp_path / "good", tmp_path / "bad"
    for folder in (good_dir, bad_dir):
        folder.mkdir()

    good = fleet.roll("--tag", "1.0.0", "--junit", str(good_dir / "junit.xml"),
                      "--report", str(good_dir / "report.json"), env=ci_env(good_dir))
    assert good.returncode == 0, good.stderr
    report = json.loads((good_dir / "report.json").read_text())
    assert report["schema"] == 1 and report["result"] == "succeeded"
    SCHEMA.validate(str(good_dir / "junit.xml"))
    assert "::error" not in good.stdout
    assert "result=succeeded\n" in (good_dir / "output").read_text()
    assert "tag=1.0.0\n" in (good_dir / "output").read_text()
    hook = json.loads(seen.read_text())
    assert hook["DOCKSHIP_RESULT"] == "succeeded"
    assert hook["DOCKSHIP_REPORT"] == str(good_dir / "report.json")

    bad = fleet.roll("--tag", "1.1.0", "--json", "--junit", str(bad_dir / "junit.xml"),
                     "--report", str(bad_dir / "report.json"), env=ci_env(bad_dir))
    assert bad.returncode == 1, bad.stderr
    report = json.loads((bad_dir / "report.json").read_text())
    assert json.loads(bad.stdout) == report                  # annotations went to stderr
    assert report["result"] == "rolled_back" and report["failed_node"] == "node1"
    SCHEMA.validate(str(bad_dir / "junit.xml"))
    junit = (bad_dir / "junit.xml").read_text()
    assert "<failure" in junit and "node1" in junit
    assert f"::error title={fleet.service} on node1 in lab%3A failed::" in bad.stderr
    outputs = (bad_dir / "output").read_text()
    assert "result=rolled_back\n" in outputs and "failed_node=node1\n" in outputs
    assert "**rolled_back**" in (bad_dir / "summary.md").read_text()
    hook = json.loads(seen.read_text())
    assert (hook["DOCKSHIP_RESULT"], hook["DOCKSHIP_FAILED_NODE"]) == ("rolled_back", "node1")
    assert hook["DOCKSHIP_REASON"] == report["reason"]
    assert set(fleet.versions().values()) == {"1.0.0"}


def test_a_build_writes_its_outputs_and_junit(fleet, tmp_path):
    proc = dockship("--config", str(fleet.config), "build", fleet.package, "1.0.0",
                    "--junit", str(tmp_path / "junit.xml"), "--report", str(tmp_path / "r.json"),
                    env=ci_env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    SCHEMA.validate(str(tmp_path / "junit.xml"))
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["schema"] == 1 and report["digest"] == fleet.digests["1.0.0"]
    outputs = (tmp_path / "output").read_text()
    assert f"digest={fleet.digests['1.0.0']}\n" in outputs and "result=succeeded\n" in outputs
