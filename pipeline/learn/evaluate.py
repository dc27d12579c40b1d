"""Class-incremental (global argmax over every seen class) and task-incremental evaluation."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pipeline.learn.adapted_features import features_of
from pipeline.learn.head_options import score
from pipeline.learn.task import Task


@dataclass
class StageScores:
    cil_correct: list[int]
    til_correct: list[int]
    counts: list[int]
    classes: dict[str, list[int]] = field(default_factory=dict)
    """Per class, [correct, count] over every class seen, on the held-out rows of the latest task that brought it
    (a class that comes back is scored on its newest data)."""
    til_classes: dict[str, list[int]] = field(default_factory=dict)
    """The same, task-incremental: among the classes of the task the rows belong to."""


@torch.no_grad()
def predict_logits(model, inputs: list, head: str | None = None) -> torch.Tensor:
    """Scores over every class seen so far (the configured head option unless `head`), on CPU in float32."""
    return score(model, features_of(model, inputs), head or model.config.head)


def evaluate_stage(model, tasks: list[Task], head: str | None = None) -> StageScores:
    """Score every task seen so far on its own held-out rows (a class two tasks brought counts in both), and every
    class on its latest rows."""
    return evaluate_heads(model, tasks, (head or model.config.head,))[head or model.config.head]


def evaluate_heads(
    model, tasks: list[Task], options: tuple[str, ...], features: list[torch.Tensor] | None = None
) -> dict[str, StageScores]:
    """`evaluate_stage` under several head options, from one pass of features (or given ones: `features[j]` of
    `tasks[j].test_inputs`, for a frozen model whose features are cached)."""
    out = {option: StageScores([], [], []) for option in options}
    offsets = model.heads.offsets()
    for j, task in enumerate(tasks):
        features_j = features_of(model, task.test_inputs) if features is None else features[j]
        labels = torch.tensor(task.test_labels)
        # The task's classes among every class seen; a task still open (scored mid-training, linear heads only)
        # has only its own head, after the others.
        closed = j < len(model.tasks)
        index = model.class_index(task.classes) if closed else offsets[j] + torch.arange(len(task.classes))
        for option, scores in out.items():
            logits = score(model, features_j, option)
            hits = logits.argmax(1) == index[labels]
            scores.cil_correct.append(int(hits.sum()))
            own = logits[:, index].argmax(1) == labels  # task-incremental: the task's own classes only
            scores.til_correct.append(int(own.sum()))
            scores.counts.append(len(task.test_labels))
            for k, name in enumerate(task.classes):
                rows = labels == k
                if rows.any():  # a later task without held-out rows of the class keeps the earlier score
                    scores.classes[name] = [int(hits[rows].sum()), int(rows.sum())]
                    scores.til_classes[name] = [int(own[rows].sum()), int(rows.sum())]
    return out
