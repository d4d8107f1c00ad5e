"""What a ``%%serve`` cell's widget shows while its deploy runs and after it fails.

The magic fills these in as the deploy goes (code shipped, replicas starting n/m, health checks, routing
switched) and hands each new state to the cell's widget, which renders it in place, so a re-run never
blanks the output. A failed deploy keeps its widget: the failure carries the user's error, already cut
down to the frames of their cell ("Cell In[N], line L"), and the replicas' last log lines. Pure data, no
ipywidgets, so both the magic and the widget front end are tested against it without a browser.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace


class StageState(enum.Enum):
    """Where one stage of a deploy is."""

    PENDING = "pending"
    ACTIVE = "active"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class DeployStage:
    """One line of the progress list, e.g. ``DeployStage("replicas starting", ACTIVE, "1/2")``."""

    label: str
    state: StageState = StageState.PENDING
    detail: str = ""


@dataclass(frozen=True)
class DeployFailure:
    """A deploy that did not finish: what the widget shows instead of the running app.

    ``error`` is the short traceback text ending with the user's exception; ``kept`` says whether the failed
    application was left deployed (``--keep-failed``, or a failed update whose previous version keeps serving) or
    removed; ``note`` says that in a sentence for the user (what is left, and what to do).
    """

    error: str
    log_lines: tuple[str, ...] = ()
    kept: bool = False
    note: str = ""


@dataclass(frozen=True)
class DeployState:
    """The progress of one deploy: its stages in order, and the failure if it failed."""

    stages: tuple[DeployStage, ...] = ()
    failure: DeployFailure | None = None
    finished: bool = False
    since: float = 0.0  # when the controller took this deploy (its last_deployed_time_s); 0 until then

    @property
    def failed(self) -> bool:
        return self.failure is not None

    def with_stage(self, label: str, state: StageState, detail: str = "") -> DeployState:
        """This state with stage ``label`` set (appended if new), so the magic can report stages as they pass."""
        stage = DeployStage(label, state, detail)
        stages = list(self.stages)
        for i, existing in enumerate(stages):
            if existing.label == label:
                stages[i] = stage
                break
        else:
            stages.append(stage)
        return replace(self, stages=tuple(stages))
