"""The ceiling: the same adapter and heads trained on every task of a stream at once (not continual).

If a continual method barely beats the frozen encoder, this number says whether the method or the stream is to
blame: a stream whose joint training barely moves above the frozen encoder leaves adaptation no room.
Every stage is scored as the continual methods are, with the argmax restricted to the classes seen by then.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from pipeline.learn.adapted_features import features_of
from pipeline.learn.config import TrainConfig
from pipeline.learn.head_options import score
from pipeline.learn.model import ContinualModel
from pipeline.learn.recipe import train_task
from pipeline.learn.sequence import SequenceResult
from pipeline.learn.task import Task
from pipeline.methods.joint import METHOD
from pipeline.methods.registry import DEFAULT_METHOD


def merge_tasks(tasks: list[Task]) -> Task:
    """One task holding every class and training row of `tasks`, classes in stream order."""
    offsets = [sum(len(u.classes) for u in tasks[:j]) for j in range(len(tasks))]
    return Task(
        name=METHOD.name,
        classes=[c for t in tasks for c in t.classes],
        train_inputs=[x for t in tasks for x in t.train_inputs],
        train_labels=[y + offsets[j] for j, t in enumerate(tasks) for y in t.train_labels],
        test_inputs=[x for t in tasks for x in t.test_inputs],
        test_labels=[y + offsets[j] for j, t in enumerate(tasks) for y in t.test_labels],
    )


def run_joint(
    tasks: list[Task], config: TrainConfig, head_options: tuple[str, ...]
) -> dict[str, SequenceResult]:
    """Train one adapter (task 0's recipe: `first_examples`) and the heads on all tasks at once; score each stage."""
    start = time.perf_counter()
    model = ContinualModel(replace(config, method=DEFAULT_METHOD))  # its first-task recipe, on every task
    trained = train_task(model, merge_tasks(tasks), head_options=head_options)
    results = {option: SequenceResult(METHOD.name, option) for option in head_options}
    test_features = [features_of(model, t.test_inputs) for t in tasks]
    sizes = [len(t.classes) for t in tasks]
    for stage in range(len(tasks)):
        seen = sum(sizes[: stage + 1])
        for option, result in results.items():
            cil, til, counts = [], [], []
            for j in range(stage + 1):
                offset = sum(sizes[:j])
                logits = score(model, test_features[j], option)[:, :seen]
                labels = torch.tensor(tasks[j].test_labels)
                cil.append(int((logits.argmax(1) == labels + offset).sum()))
                til.append(int((logits[:, offset : offset + sizes[j]].argmax(1) == labels).sum()))
                counts.append(len(labels))
            result.cil.add_stage(cil, counts)
            result.til.add_stage(til, counts)
            result.decisions.append(METHOD.name)
    for result in results.values():
        result.active_adapters = model.active_adapters
        result.stored_params = model.stored_parameters()
        result.trainable_params = [trained.trainable_parameters]
        result.wall_time = time.perf_counter() - start
    return results
