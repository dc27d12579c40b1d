"""Continual-learning metrics as the official code computes them (docs/method.md §6), as fractions in [0, 1].

R[j][t] is the accuracy on task j's test set after training task t (zero for j > t), indexed by task id.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class AccuracyMatrix:
    correct: list[list[int]] = field(default_factory=list)
    """correct[t][j]: test samples of task j classified right after stage t."""
    counts: list[int] = field(default_factory=list)
    """Test samples per task."""

    def add_stage(self, correct: list[int], counts: list[int]) -> None:
        if len(correct) != len(self.correct) + 1:
            raise ValueError(f"stage {len(self.correct)} must report {len(self.correct) + 1} tasks")
        self.correct.append(list(correct))
        self.counts = list(counts)

    @property
    def num_tasks(self) -> int:
        return len(self.correct)

    def matrix(self) -> list[list[float]]:
        """R[j][t], tasks down, stages across."""
        T = self.num_tasks
        return [[self.correct[t][j] / self.counts[j] if j <= t else 0.0 for t in range(T)] for j in range(T)]

    def stage_accuracy(self, t: int) -> float:
        """a_t: accuracy over all test samples of tasks 0..t pooled (sample-weighted)."""
        return sum(self.correct[t]) / sum(self.counts[: t + 1])

    @property
    def average_accuracy(self) -> float:
        """A: the average anytime accuracy, mean of a_t over stages (not the final accuracy)."""
        return sum(self.stage_accuracy(t) for t in range(self.num_tasks)) / self.num_tasks

    @property
    def final_accuracy(self) -> float:
        return self.stage_accuracy(self.num_tasks - 1)

    @property
    def forgetting(self) -> float:
        """F: mean over tasks 0..T-2 of (best accuracy at any stage, the last included) − final accuracy."""
        T = self.num_tasks
        if T < 2:
            return 0.0
        R = self.matrix()
        return sum(max(R[j][j:]) - R[j][T - 1] for j in range(T - 1)) / (T - 1)

    def summary(self) -> dict:
        return {
            "avg_accuracy": self.average_accuracy,
            "final_accuracy": self.final_accuracy,
            "forgetting": self.forgetting,
            "accuracy_matrix": self.matrix(),
        }
