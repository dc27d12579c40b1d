"""A labelled pool cut into a class-incremental stream: the classes in a seeded order, a few per task."""

from __future__ import annotations

from collections import defaultdict
from importlib import resources

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.learn.task import Task


def class_order(classes: list[str], ordering: int) -> list[str]:
    """The seeded class permutation of the official code: numpy.random.seed(o); permutation(n)."""
    np.random.seed(ordering)
    return [classes[i] for i in np.random.permutation(len(classes))]


def shipped_tier(pool_file: str, n_train: int, n_test: int) -> pa.Table:
    """A tier of the pool shipped in pipeline/data/assets: the head of each class's train and test sample (a
    smaller tier is the head of the quick pool)."""
    table = pq.read_table(resources.files("pipeline.data.assets").joinpath(pool_file))
    keep, seen = [], defaultdict(int)
    for i, (label, split) in enumerate(
        zip(table["label"].to_pylist(), table["split"].to_pylist(), strict=True)
    ):
        seen[(label, split)] += 1
        if seen[(label, split)] <= (n_train if split == "train" else n_test):
            keep.append(i)
    return table.take(keep)


def split_by_class(
    inputs: list,
    labels: list[str],
    splits: list[str],
    classes: list[str],
    per_task: int,
    name: str,
    meta: dict,
) -> list[Task]:
    """Tasks of `per_task` consecutive `classes` each, named `{name}-t{t}`, with task-local labels."""
    tasks = []
    for t in range(len(classes) // per_task):
        own = classes[t * per_task : (t + 1) * per_task]
        index = {c: i for i, c in enumerate(own)}
        picked = [(x, index[y], s) for x, y, s in zip(inputs, labels, splits, strict=True) if y in index]
        train = [(x, y) for x, y, s in picked if s == "train"]
        test = [(x, y) for x, y, s in picked if s == "test"]
        tasks.append(
            Task(
                name=f"{name}-t{t}",
                classes=own,
                train_inputs=[x for x, _ in train],
                train_labels=[y for _, y in train],
                test_inputs=[x for x, _ in test],
                test_labels=[y for _, y in test],
                meta=dict(meta),
            )
        )
    return tasks
