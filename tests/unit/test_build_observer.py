"""The build reports to a `BuildObserver`; the rich progress is one, and build.py needs no rich code."""

import io
import subprocess
import sys

from dockship.build import BuildObserver, Silent


def test_importing_the_build_imports_no_rich_code():
    code = ("import sys, dockship.build; "
            "print(sorted(m for m in sys.modules if m == 'rich' or m.startswith('rich.') "
            "or m == 'dockship.progress'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_rich_progress_and_the_silent_observer_are_build_observers():
    from rich.console import Console

    from dockship.progress import RichProgress

    assert isinstance(Silent(), BuildObserver)
    assert isinstance(RichProgress(Console(file=io.StringIO())), BuildObserver)
