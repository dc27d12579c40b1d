"""A labelled pool cut into a class-incremental stream: the classes in a seeded order, a few per task."""

from __future__ import annotations

import numpy as np

from pipeline.learn.task import Task


def class_order(classes: list[str], ordering: int) -> list[str]:
    """The seeded class permutation of the official code: numpy.random.seed(o); permutation(n)."""
    np.random.seed(ordering)
    return [classes[i] for i in np.random.permutation(len(classes))]


def split_by_class(inputs: list, labels: list[str], splits: list[str], classes: list[str], per_task: int,
                   name: str, meta: dict) -> list[Task]:
    """Tasks of `per_task` consecutive `classes` each, named `{name}-t{t}`, with task-local labels."""
    tasks = []
    for t in range(len(classes) // per_task):
        own = classes[t * per_task : (t + 1) * per_task]
        index = {c: i for i, c in enumerate(own)}
        picked = [(x, index[y], s) for x, y, s in zip(inputs, labels, splits, strict=True) if y in index]
        train = [(x, y) for x, y, s in picked if s == "train"]
        test = [(x, y) for x, y, s in picked if s == "test"]
        tasks.append(Task(
            name=f"{name}-t{t}",
            classes=own,
            train_inputs=[x for x, _ in train],
            train_labels=[y for _, y in train],
            test_inputs=[x for x, _ in test],
            test_labels=[y for _, y in test],
            meta=dict(meta),
        ))
    return tasks
