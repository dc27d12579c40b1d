"""A task of the stream, as the learning core sees it: inputs and label names, nothing about storage."""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import numpy as np


def input_hashes(inputs: Iterable[str | bytes], person: bytes = b"") -> np.ndarray:
    """A 64-bit BLAKE2b hash of each input's bytes (uint64), keyed by `person`: choices made by a row's own content
    are the same on every rank and in any order."""
    return np.array(
        [
            int.from_bytes(
                hashlib.blake2b(
                    x.encode("utf-8") if isinstance(x, str) else bytes(x), digest_size=8, person=person
                ).digest(),
                "big",
            )
            for x in inputs
        ],
        dtype=np.uint64,
    )


@dataclass
class Task:
    name: str
    classes: list[str]
    """Label names of this task, in the order of its head's outputs."""
    train_inputs: list[str] | list[bytes]
    """Texts, or encoded PNG/JPEG images: whatever the backbone's `encode` reads."""
    train_labels: list[int]
    """Indices into `classes`."""
    test_inputs: list[str] | list[bytes]
    test_labels: list[int]
    dataset_id: str = ""
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.train_inputs) != len(self.train_labels) or len(self.test_inputs) != len(self.test_labels):
            raise ValueError(f"task {self.name!r}: inputs and labels differ in length")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"task {self.name!r}: duplicate class names")

    def _stratified(self, fraction: float, seed: int) -> list[int]:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1] (got {fraction})")
        rng, by_class = random.Random(seed), defaultdict(list)
        for i, label in enumerate(self.train_labels):
            by_class[label].append(i)
        return sorted(
            i for rows in by_class.values() for i in rng.sample(rows, max(1, round(fraction * len(rows))))
        )

    def _train_rows(self, rows: list[int]) -> dict:
        return {
            "train_inputs": [self.train_inputs[i] for i in rows],
            "train_labels": [self.train_labels[i] for i in rows],
        }

    def subsample(self, fraction: float, seed: int) -> Task:
        """A seeded, class-stratified share of the training rows (at least one per class); held-out rows stay."""
        return self if fraction == 1 else replace(self, **self._train_rows(self._stratified(fraction, seed)))

    def split_validation(self, fraction: float, seed: int) -> tuple[Task, Task]:
        """(the other training rows, a task whose held-out rows are a seeded, class-stratified `fraction` of the
        training rows): model selection that never looks at the held-out split the registry reports."""
        held = set(self._stratified(fraction, seed))
        rest = [i for i in range(len(self.train_labels)) if i not in held]
        validation = replace(
            self,
            train_inputs=[],
            train_labels=[],
            test_inputs=[self.train_inputs[i] for i in sorted(held)],
            test_labels=[self.train_labels[i] for i in sorted(held)],
        )
        return replace(self, **self._train_rows(rest)), validation
