"""`litelora train --out`: one task dataset on top of a local adapter set (or the bare backbone), no registry.

What a pipeline job does, minus S3 and MLflow: handy on a bare GPU box or to try a dataset before dropping it.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.data.task_dataset import TaskDataset
from pipeline.learn.config import TrainConfig
from pipeline.learn.methods import continuing, evaluate, load_model, train_next_task
from pipeline.learn.recipe import EpochCallback


def train_local_set(
    data: Path,
    out: Path,
    config: TrainConfig,
    parent: Path | None = None,
    task: str | None = None,
    overrides: dict | None = None,
    on_epoch: EpochCallback | None = None,
) -> dict:
    """Train `data` (a drop folder or parquet file) on `parent` (its configuration, with `overrides`), or on a new
    model with `config`; write the new set to `out` and return a summary."""
    dataset = TaskDataset.from_dir(data, name=task)
    new_task = dataset.to_task()
    if not parent:  # a new set runs the method (and recruits as) its task.json names
        config = config.for_first_drop(dataset.method, dataset.recruits)
    model = continuing(load_model(parent) if parent else None, config, overrides)
    result = train_next_task(model, new_task, on_epoch)
    accuracy = None
    if not parent:  # a first set can be scored on its own task's held-out rows
        scores = evaluate(model, [new_task])
        accuracy = scores.cil_correct[0] / scores.counts[0]
    manifest = model.save(out, extra={"parent": str(parent) if parent else None})
    return {
        "task": new_task.name,
        "dataset_id": new_task.dataset_id,
        "decision": result.decision,
        "gate_logit": result.logit,
        "active_adapters": model.active_adapters,
        "tasks": len(model.tasks),
        "accuracy": accuracy,
        "adapter_set": str(out),
        "wall_time": result.wall_time,
        "adapters": [a["file"] for a in manifest["adapters"]],
    }
