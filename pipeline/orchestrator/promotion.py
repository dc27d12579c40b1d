"""When a new set may become `current`: the promotion guard, and the move itself, the commit point of a task.

The guard compares task-incremental accuracy: in class-incremental scoring every old task loses accuracy as
soon as new classes compete for the argmax, which is expected, not breakage. "til" asks whether the new set
damaged an earlier task's features; "cil" is the stricter option.
"""

from __future__ import annotations

from pipeline.learn.evaluate import StageScores
from pipeline.registry.lineage import version_label
from pipeline.registry.store import Registry

MAX_ACCURACY_DROP = 0.05
SUPERSEDED = "superseded"
"""The version tag of a set that lost the promotion race; its value says why."""
GUARD_METRIC = "til"


def guard_reason(
    parent_metrics: dict | None, scores: StageScores, max_drop: float, metric: str = GUARD_METRIC
) -> str:
    """Why a new set must not become current: an earlier task lost more than `max_drop` accuracy."""
    rows = (parent_metrics or {}).get("til_correct" if metric == "til" else "correct")
    if not rows:
        return ""
    before, counts = rows[-1], scores.counts
    new_row = scores.til_correct if metric == "til" else scores.cil_correct
    worst, task = max(((before[j] - new_row[j]) / counts[j], j) for j in range(len(before)))
    if worst > max_drop:
        return (
            f"task {task} {metric.upper()} accuracy would drop by {100 * worst:.1f} points "
            f"(bound {100 * max_drop:.1f}); current stays on the parent"
        )
    return ""


def promote_if_parent_current(registry: Registry, version: str, parent: str | None, reason: str) -> bool:
    """Move `current` to `version` if it still points at `parent`, as one compare-and-set (a set never lands on a
    lineage it was not trained on). True if it moved; otherwise the version is tagged `superseded`, saying
    where `current` was."""
    if registry.pointer.move(version, kind="promote", reason=reason, expected=parent):
        return True
    now = registry.pointer.version()
    registry.lineage.tag_version(
        version,
        SUPERSEDED,
        f"current was {version_label(now, 'no set')} when this set was ready, not its parent "
        f"{version_label(parent)}",
    )
    return False
