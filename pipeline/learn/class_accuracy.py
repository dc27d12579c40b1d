"""Per-class accuracy along a lineage: every class on its latest held-out rows, after each version, beside the
frozen encoder with the same head.

A set's manifest carries the history of its chain (like the accuracy matrix), so one manifest is enough to show
how each class fared from the version that brought it to this one, including classes that later drops brought
back with fresh data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ClassCounts = dict[str, list[int]]
"""class → [correct, count]: class-incremental hits on the held-out rows of the latest task that brought it."""


def accuracy(counts: ClassCounts, name: str) -> float | None:
    correct, count = counts.get(name, (0, 0))
    return correct / count if count else None


@dataclass
class ClassHistory:
    stages: list[ClassCounts] = field(default_factory=list)
    """After each stage of the chain (the root's first); empty for stages registered before this was recorded."""
    frozen: list[ClassCounts] = field(default_factory=list)
    """The frozen encoder with the same head, on the same rows, after each stage."""

    @classmethod
    def from_metrics(cls, metrics: dict | None) -> ClassHistory:
        metrics = metrics or {}
        return cls(list(metrics.get("classes", [])), list(metrics.get("frozen_classes", [])))

    def to_metrics(self) -> dict:
        return {"classes": self.stages, "frozen_classes": self.frozen}

    def extended(self, stage: ClassCounts, frozen: list[ClassCounts], stages: int) -> ClassHistory:
        """This history (a parent's) with the new stage; `stages` counts them all, so a parent that predates the
        record is padded with empty stages. `frozen` is the reference's whole history (it is refitted each time)."""
        earlier = self.stages[: stages - 1]
        return ClassHistory([*([{}] * (stages - 1 - len(earlier))), *earlier, stage], list(frozen))

    def classes(self) -> list[str]:
        """Every class, in the order the chain first scored it."""
        names: dict[str, None] = {}
        for counts in [*self.stages, *self.frozen]:
            names |= dict.fromkeys(counts)
        return list(names)

    def rows(self) -> list[dict]:
        """Per class: its accuracy after each stage (None before it was known) and the frozen encoder's now."""
        last_frozen = self.frozen[-1] if self.frozen else {}
        return [
            {
                "class": name,
                "accuracy": [accuracy(counts, name) for counts in self.stages],
                "frozen_accuracy": accuracy(last_frozen, name),
                "rows": (self.stages[-1].get(name) or [0, 0])[1] if self.stages else 0,
            }
            for name in self.classes()
        ]

    def latest_metrics(self) -> dict[str, float]:
        """The last stage as flat metrics, `class_accuracy/<class>` and `frozen_class_accuracy/<class>`."""
        out = {}
        for prefix, history in (("class_accuracy", self.stages), ("frozen_class_accuracy", self.frozen)):
            for name, (correct, count) in (history[-1] if history else {}).items():
                if count:
                    out[f"{prefix}/{name}"] = correct / count
        return out
