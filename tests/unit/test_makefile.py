"""`make rollback` is what an on-call person runs in a hurry: it must install nothing."""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_make_rollback_runs_no_install_step():
    env = {k: v for k, v in os.environ.items() if k not in ("TAG", "ENV", "SERVICE", "MAKEFLAGS")}
    proc = subprocess.run(["make", "-n", "-C", str(ROOT), "rollback", "TAG=1.0.0"],
                          capture_output=True, text=True, env=env, check=True)
    assert "roll --env" in proc.stdout
    assert "install-deps" not in proc.stdout and "apt-get" not in proc.stdout
