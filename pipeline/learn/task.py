"""A task of the stream, as the learning core sees it: inputs and label names, nothing about storage."""

from __future__ import annotations

from dataclasses import dataclass, field


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
