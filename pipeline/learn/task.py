"""A task of the stream, as the learning core sees it: inputs and label names, nothing about storage."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field, replace


@dataclass
class Task:
    name: str
    classes: list[str]
    """Label names of this task, in the order of its head's outputs."""
    train_inputs: list[str]
    train_labels: list[int]
    """Indices into `classes`."""
    test_inputs: list[str]
    test_labels: list[int]
    dataset_id: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.train_inputs) != len(self.train_labels) or len(self.test_inputs) != len(self.test_labels):
            raise ValueError(f"task {self.name!r}: inputs and labels differ in length")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"task {self.name!r}: duplicate class names")

    def subsample(self, fraction: float, seed: int) -> Task:
        """A seeded, class-stratified share of the training rows (at least one per class); held-out rows stay."""
        if not 0 < fraction <= 1:
            raise ValueError(f"subsample fraction must be in (0, 1] (got {fraction})")
        if fraction == 1:
            return self
        rng, by_class = random.Random(seed), defaultdict(list)
        for i, label in enumerate(self.train_labels):
            by_class[label].append(i)
        keep = sorted(i for rows in by_class.values() for i in rng.sample(rows, max(1, round(fraction * len(rows)))))
        return replace(self, train_inputs=[self.train_inputs[i] for i in keep],
                       train_labels=[self.train_labels[i] for i in keep])
