"""What a roll tells whoever watches it: phases of a node, notes, the plan and the report.

The live table, `--json` and the unit tests' recorders are observers; the
roll never prints. Phases are an enum, so the table's styling, the tests and
the roll agree on their names.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from dockship.plan import RollPlan
    from dockship.report import RollReport


class Phase(enum.StrEnum):
    WAITING = "waiting"              # not its turn yet
    UNCHANGED = "unchanged"          # already on the target
    HELD = "held"                    # outside this roll (--canary-only, --zone)
    PULLING = "pulling"
    PRE_NODE = "pre_node hook"
    DRAINING = "draining"
    DRAINED = "drained"
    STOPPING = "stopping"
    STARTING = "starting"
    HEALTH = "health"
    READY = "ready"                  # healthy, waiting for the balancer
    IN_SERVICE = "in service"
    POST_NODE = "post_node hook"
    BAKING = "baking"
    UPDATED = "updated"
    FAILED = "failed"
    PUTTING_BACK = "putting back"    # the new version failed here; the old one goes back
    ROLLING_BACK = "rolling back"    # a later node failed; this node goes back
    ROLLED_BACK = "rolled back"
    KEPT = "kept"                    # no previous version to go back to
    BROKEN = "broken"                # could not be put back: needs a human

    @property
    def final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset({Phase.UPDATED, Phase.FAILED, Phase.ROLLED_BACK, Phase.KEPT, Phase.BROKEN})


class RollObserver(Protocol):
    def planned(self, plan: RollPlan) -> None: ...
    def node(self, name: str, phase: Phase, detail: str = "") -> None: ...
    def note(self, text: str) -> None: ...
    def finished(self, report: RollReport) -> None: ...


class QuietObserver:
    def planned(self, plan: RollPlan) -> None: pass
    def node(self, name: str, phase: Phase, detail: str = "") -> None: pass
    def note(self, text: str) -> None: pass
    def finished(self, report: RollReport) -> None: pass
