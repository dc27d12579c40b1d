"""The no-regret rule (docs/method.md §3): a recruit the gate asks for is kept only if the set with it scores better
than the set that reuses (a tie reuses), on validation rows cut from the training rows of every task so far.

The gate's phase 2 weighs the new task's loss against the recruit's size; it never sees what the recruit costs
the earlier classes (a recruit moves their features, and their stored statistics follow only approximately).
Scoring both ends of the decision on every class seen is what prices that cost. The rows come from the tasks'
*training* rows (the fifth the ridge head chooses λ on, by content hash), never from the rows a version is scored
on; an earlier task keeps only such a cut.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch

from pipeline.learn.evaluate import evaluate_heads
from pipeline.learn.ridge import held_out
from pipeline.learn.task import Task

CUT_PER_CLASS = 20
"""Validation rows per class: enough to see a recruit's cost on old classes, few to keep or pass around."""


@dataclass(frozen=True)
class Weighing:
    """Class-incremental accuracy on the validation cut of every task so far, with the recruit and without it."""

    recruit: float
    reuse: float

    @property
    def keep(self) -> bool:
        return self.recruit > self.reuse  # a tie reuses: an adapter that adds nothing is not worth its cost


def validation_cut(task: Task, per_class: int = CUT_PER_CLASS) -> Task:
    """Up to `per_class` rows of each class from the task's training rows that the ridge head holds out (a hash of
    each row's content picks them, so every rank and every retry cuts the same rows), as the task's rows to score."""
    held = held_out(task.train_inputs).tolist()
    taken: dict[int, int] = {}
    inputs, labels = [], []
    for x, y, is_held in zip(task.train_inputs, task.train_labels, held, strict=True):
        if is_held and taken.get(y, 0) < per_class:
            taken[y] = taken.get(y, 0) + 1
            inputs.append(x)
            labels.append(y)
    return replace(task, test_inputs=inputs, test_labels=labels)


def weigh_recruit(model, task: Task, cuts: list[Task], fit) -> Weighing:
    """Close the open `task` both ways on copies of `model` and score each on `cuts` (the earlier tasks' cuts, in
    order) plus the task's own. `fit(closed_model)` fits the head the set scores with after the task closed."""
    scored = [*cuts, validation_cut(task)]
    head = model.config.head
    accuracy = {}
    for keep in (True, False):
        trial = copy.deepcopy(model)
        trial.end_task(task, keep=keep)
        trial.gate.alpha.requires_grad_(False)
        trial.eval()
        fit(trial)
        with torch.no_grad():
            scores = evaluate_heads(trial, scored, (head,))[head]
        accuracy[keep] = sum(scores.cil_correct) / max(sum(scores.counts), 1)
    return Weighing(recruit=accuracy[True], reuse=accuracy[False])
