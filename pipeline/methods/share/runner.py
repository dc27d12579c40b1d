"""The bench's runner for the methods that select a delta by task id: Share and one LoRA per task (the storage
reference).

Same tasks, backbone, targets, rank, heads, optimiser, epochs and metrics as the adapter methods; they need
the task id at inference, so only task-incremental accuracy is reported for them (docs/method.md §8).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from pipeline.learn.config import TrainConfig
from pipeline.learn.sequence import SequenceResult
from pipeline.learn.task import Task
from pipeline.methods.registry import METHODS, method_of
from pipeline.methods.share.model import (
    TaskSelectedModel,
    evaluate_selected,
    train_selected_task,
)

TASK_ID_METHODS: tuple[str, ...] = tuple(name for name, m in METHODS.items() if m.selects_by_task)
"""The methods whose predictions name their task: the bench runs them here."""


def run_task_id_stream(
    tasks: list[Task],
    config: TrainConfig,
    method: str,
    on_task: Callable[[int, SequenceResult], None] | None = None,
    model: TaskSelectedModel | None = None,
) -> SequenceResult:
    start = time.perf_counter()
    """Train `tasks` in order with `method` (a new model with the service's Share settings, unless `model`)."""
    model = model or TaskSelectedModel(config, method_of(method).kind)
    result = SequenceResult(method, task_incremental_only=True)
    for t, task in enumerate(tasks):
        trained = train_selected_task(model, task)
        result.trainable_params.append(trained.trainable_parameters)
        result.task_seconds.append(trained.wall_time)
        scores = evaluate_selected(model, tasks[: t + 1])
        result.til.add_stage(scores.til_correct, scores.counts)
        if model.kind == "share":
            layers = list(model.layers.values())
            k = sum(layer.basis_a.shape[1] + layer.basis_b.shape[1] for layer in layers) / (2 * len(layers))
            result.decisions.append(f"k={k:.1f}")
            result.reprojection_errors.append(model.reprojection_error())
        else:
            result.decisions.append("store")
        if on_task is not None:
            on_task(t, result)
    result.active_adapters = model.active_adapters
    result.stored_params = model.stored_parameters()
    result.head_params = model.head_parameters()
    result.wall_time = time.perf_counter() - start
    return result
