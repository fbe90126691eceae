"""What users see while long things run: rich progress on stderr.

The library reports events to an observer and never prints; the CLI picks
`RichProgress` for people. `--json` keeps stdout clean because everything
human goes to stderr. `RichProgress` implements `build.BuildObserver`
(structurally: build.py imports no rich code, and this module no build code).

Step texts come from the Dockerfile and layer statuses from the engine and the
registry: descriptions are `redact.safe` and never read as markup, so a
`base_image` like ``[/]`` is shown, not parsed.
"""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, Progress, SpinnerColumn, TaskID,
                           TextColumn, TimeElapsedColumn)
from rich.text import Text

from dockship.redact import safe

_STEP_RE = re.compile(r"^Step (\d+)/(\d+) : (.*)$")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class RichProgress:
    """A `build.BuildObserver`: build steps as one bar, and one bar per layer for push and pull."""

    def __init__(self, console: Console | None = None, *, verbose: bool = False):
        self.console = console or Console(stderr=True)
        self.verbose = verbose       # -v: every line the build prints, not only its steps
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}", markup=False), BarColumn(),
                                 DownloadColumn(), TimeElapsedColumn(), console=self.console,
                                 transient=True)
        self._started = False
        self._build: TaskID | None = None
        self._layers: dict[str, TaskID] = {}

    def _start(self) -> None:
        if not self._started:
            self.progress.start()
            self._started = True

    def stage(self, text: str) -> None:
        self._start()
        self.console.print(Text.assemble(("›", "bold"), " ", safe(text)))
        self._build = None
        self._layers.clear()

    def note(self, text: str) -> None:
        self.console.print(Text(f"  {safe(text)}"))

    def build_chunk(self, chunk: dict[str, Any]) -> None:
        self._start()
        text = str(chunk.get("stream") or "").strip()
        m = _STEP_RE.match(text)
        if self.verbose and text:
            self.console.print(Text(f"  {safe(text)}", style="dim"))
        if not m:
            return
        step, total, what = int(m.group(1)), int(m.group(2)), m.group(3)
        desc = safe(f"step {step}/{total}: {what[:60]}")
        if self._build is None:
            # "Download" columns make no sense for steps; show the count in the description.
            self._build = self.progress.add_task(desc, total=total)
        self.progress.update(self._build, completed=step - 1, description=desc)

    def layer_chunk(self, chunk: dict[str, Any]) -> None:
        self._start()
        layer = chunk.get("id")
        status = str(chunk.get("status", ""))
        if not isinstance(layer, str) or len(layer) < 8 or " " in layer:
            return
        detail = chunk.get("progressDetail")
        detail = {k: v for k, v in detail.items() if _is_count(v)} if isinstance(detail, dict) else {}
        task = self._layers.get(layer)
        if task is None:
            task = self._layers[layer] = self.progress.add_task(safe(f"{layer} {status}"), total=None)
        total = detail.get("total")
        self.progress.update(task, description=safe(f"{layer} {status}"),
                             completed=detail.get("current", 0) if total else None, total=total)
        if status in ("Pushed", "Layer already exists", "Pull complete", "Already exists",
                      "Mounted from"):
            t = self.progress.tasks[task].total or 1
            self.progress.update(task, total=t, completed=t)

    def close(self) -> None:
        if self._started:
            self.progress.stop()
            self._started = False
