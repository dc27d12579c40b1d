"""Run one method over a sequence of tasks (a benchmark's; a lineage of drops is a stream): train each task,
evaluate every task seen so far, keep score."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from pipeline.learn.config import TrainConfig
from pipeline.learn.evaluate import evaluate_heads
from pipeline.learn.metrics import AccuracyMatrix
from pipeline.learn.model import ContinualModel
from pipeline.learn.no_regret import validation_cut
from pipeline.learn.recipe import EpochCallback, train_task
from pipeline.learn.subspace import mean_overlap, overlap_matrices
from pipeline.learn.task import Task


@dataclass
class SequenceResult:
    method: str
    head: str = "linear"
    task_incremental_only: bool = False
    """Methods that need the task id (Share, one LoRA per task) have no class-incremental scores."""
    cil: AccuracyMatrix = field(default_factory=AccuracyMatrix)
    til: AccuracyMatrix = field(default_factory=AccuracyMatrix)
    classes: list[dict[str, list[int]]] = field(default_factory=list)
    """Per stage: each class's [correct, count] on its latest held-out rows (`StageScores.classes`)."""
    til_classes: list[dict[str, list[int]]] = field(default_factory=list)
    """The same, task-incremental (`StageScores.til_classes`)."""
    decisions: list[str] = field(default_factory=list)
    weighed: list[list[float] | None] = field(default_factory=list)
    """Per task: [with the recruit, with a reuse] when the no-regret rule weighed one (TaskRecord.weighed)."""
    active_adapters: int = 0
    stored_params: int = 0
    head_params: int = 0
    scoring_bytes: int = 0
    """Bytes a set keeps for its head option beyond the linear heads (statistics, sums, calibration, classifier)."""
    num_classes: int = 0
    trainable_params: list[int] = field(default_factory=list)
    task_seconds: list[float] = field(default_factory=list)
    coverage: list[float | None] = field(default_factory=list)
    """Per task: share of its trained adapter inside the span of the adapters kept before it."""
    chance_coverage: list[float | None] = field(default_factory=list)
    overlap: list[list[float]] = field(default_factory=list)
    """Kept adapters × kept adapters: subspace overlap at the end, averaged over layers."""
    reprojection_errors: list[float] = field(default_factory=list)
    """Share: mean relative error of earlier tasks' factors re-projected onto the new basis, per task."""
    wall_time: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SequenceResult:
        return cls(**data | {"cil": AccuracyMatrix(**data["cil"]), "til": AccuracyMatrix(**data["til"])})

    def row(self) -> dict:
        """One benchmark row: the fields every report and the JSON output carry."""
        cil = (
            dict.fromkeys(("avg_accuracy", "final_accuracy", "forgetting", "accuracy_matrix"))
            if self.task_incremental_only
            else self.cil.summary()
        )
        return {
            "method": self.method,
            "head": self.head,
            "avg_accuracy": cil["avg_accuracy"],
            "final_accuracy": cil["final_accuracy"],
            "forgetting": cil["forgetting"],
            "til_avg_accuracy": self.til.average_accuracy,
            "til_final_accuracy": self.til.final_accuracy,
            "active_adapters": self.active_adapters,
            "num_tasks": self.til.num_tasks,
            "stored_params": self.stored_params,
            "stored_params_per_task": self.stored_params / max(self.til.num_tasks, 1),
            "head_params": self.head_params,
            "scoring_bytes": self.scoring_bytes,
            "scoring_bytes_per_class": self.scoring_bytes / max(self.num_classes, 1),
            "trainable_params_per_task": self.trainable_params,
            "decisions": self.decisions,
            "weighed": self.weighed,
            "accuracy_matrix": cil["accuracy_matrix"],
            "til_accuracy_matrix": self.til.matrix(),
            "til_forgetting": self.til.forgetting,
            "reprojection_errors": self.reprojection_errors,
            "coverage": self.coverage,
            "chance_coverage": self.chance_coverage,
            "overlap": self.overlap,
            "task_seconds": self.task_seconds,
            "wall_time": self.wall_time,
        }


def run_sequence(
    tasks: list[Task],
    config: TrainConfig,
    *,
    model: ContinualModel | None = None,
    head_options: tuple[str, ...] | None = None,
    on_task: Callable[[int, SequenceResult], None] | None = None,
    on_epoch: EpochCallback | None = None,
    features: Callable[[Task, str], torch.Tensor] | None = None,
    done: int = 0,
    results: dict[str, SequenceResult] | None = None,
) -> tuple[dict[str, SequenceResult], ContinualModel]:
    """Train and evaluate the sequence once; score it under each head option (default: the configured one).
    Head options do not change training, so one run serves them all. `features(task, split)` gives the bare
    backbone's features (cached) to the `frozen` method, whose features never change.

    `done` > 0 continues a sequence: `model` has trained `tasks[:done]` and `results` hold their stages (those tasks
    need only their held-out rows)."""
    start = time.perf_counter()
    model = model or ContinualModel(config)
    head_options = head_options or (config.head,)
    results = results or {option: SequenceResult(config.method, option) for option in head_options}
    # The bare encoder's features serve every task only where nothing ever adapts.
    cached = None if model.method.adapts(0) else features
    for t, task in enumerate(tasks):
        if t < done:
            continue
        trained = train_task(
            model,
            task,
            on_epoch=on_epoch,
            head_options=head_options,
            features=cached(task, "train") if cached else None,
            cuts=[validation_cut(u) for u in tasks[:t]] if model.config.no_regret else None,
        )
        scores = evaluate_heads(
            model,
            tasks[: t + 1],
            head_options,
            [cached(u, "test") for u in tasks[: t + 1]] if cached else None,
        )
        for option, result in results.items():
            result.cil.add_stage(scores[option].cil_correct, scores[option].counts)
            result.til.add_stage(scores[option].til_correct, scores[option].counts)
            result.classes.append(scores[option].classes)
            result.til_classes.append(scores[option].til_classes)
            result.decisions.append(model.tasks[-1].decision)
            result.weighed.append(model.tasks[-1].weighed)
            result.trainable_params.append(trained.trainable_parameters)
            result.task_seconds.append(trained.wall_time)
        if on_task is not None:
            on_task(t, results[head_options[0]])
    overlap, wall_time = mean_overlap(overlap_matrices(model)), time.perf_counter() - start
    for option, result in results.items():
        result.active_adapters = model.active_adapters
        result.stored_params = model.stored_parameters()
        result.head_params = model.head_parameters()
        result.scoring_bytes = sum(
            v.numel() * v.element_size() for v in model.scoring_tensors(option).values()
        )
        result.num_classes = len(model.classes)
        result.coverage = [t.coverage for t in model.tasks]
        result.chance_coverage = [t.chance_coverage for t in model.tasks]
        result.overlap = overlap
        result.wall_time = wall_time
    return results, model
