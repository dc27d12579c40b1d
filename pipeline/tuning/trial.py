"""One Ray Tune trial: the core's `train_task` (the code every Ray Train worker runs) on a seeded subsample
of the task, on top of the same parent set, scored after each epoch on validation rows of this task and every
earlier one (cut from their training rows), so ASHA can stop a weak trial early.

    objective = mean accuracy over the tasks so far (class-incremental) − cost_per_adapter · active adapters
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from pipeline.learn.config import TrainConfig
from pipeline.learn.evaluate import StageScores, evaluate_stage
from pipeline.learn.model import ContinualModel
from pipeline.learn.recipe import train_task
from pipeline.learn.task import Task
from pipeline.settings import Connection

VALIDATION_FRACTION = 0.2


def trial_rows(rows: int, subsample: float) -> int:
    """A lower bound of the rows a trial trains on (validation rows cut, then a subsample; at least 1)."""
    return max(1, int(rows * (1 - VALIDATION_FRACTION) * subsample))


@dataclass
class TrialSetup:
    """What every trial of one search shares (sent once through `tune.with_parameters`)."""

    conn: Connection
    base_config: dict
    parent_set_id: str | None
    dataset_id: str
    task_name: str
    earlier: list[tuple[str, str]] = field(default_factory=list)
    """(dataset id, task name) of the parent's tasks, in head order."""
    subsample: float = 0.5
    cost_per_adapter: float = 0.01
    threads: int = 1
    seed: int = 0
    train_rows: int = 1
    """About how many rows a trial trains on (`trial_rows`): sets the first task's epochs in the schedule."""


def objective(accuracy: float, active_adapters: int, cost_per_adapter: float) -> float:
    return accuracy - cost_per_adapter * active_adapters


def mean_accuracy(correct: list[int], counts: list[int]) -> float:
    return sum(c / n for c, n in zip(correct, counts, strict=True)) / len(counts)


def score_mid_task(model: ContinualModel, tasks: list[Task]) -> StageScores:
    """Evaluate between epochs: the gate deterministic (as after closing), then back to training mode. The
    open task's classes have only their linear head so far, so every head option is scored as linear."""
    sampling, model.gate.sampling = model.gate.sampling, False
    try:
        return evaluate_stage(model, tasks, head="linear")
    finally:
        model.gate.sampling = sampling
        model.train()


def would_keep(model: ContinualModel) -> bool:
    """Whether the open task's adapter would be kept if it closed now."""
    if not model.method.selects(model.gate.current_task):  # no gate decides: the adapter is kept
        return True
    return float(model.gate.current_logit) > 0


def run_trial(sample: dict, setup: TrialSetup) -> None:
    """A Tune function trainable: reports metrics after every epoch and once more after the gate decides."""
    from ray import tune

    from pipeline.registry.bucket import Bucket
    from pipeline.registry.current import load_parent
    from pipeline.registry.store import AdapterSetStore, read_dataset

    torch.set_num_threads(setup.threads)  # trials share the machine: one core each by default
    config = TrainConfig.from_dict(setup.base_config).with_overrides(**sample)
    trial_sets = AdapterSetStore(
        Bucket.connect(setup.conn), setup.conn.cache_dir / "tune" / tune.get_context().get_trial_id()
    )
    # A search refuses a Share stream (`NothingToTune`): a trial's parent is a gated set.
    model = ContinualModel.continuing(
        load_parent(trial_sets, setup.parent_set_id, config=config).model, config
    )
    # Trials are scored on validation rows cut from each task's training rows, never on the held-out rows
    # that the registered version's accuracy and the promotion guard are measured on.
    task, validation = (
        read_dataset(setup.conn, setup.dataset_id, setup.task_name)
        .to_task()
        .split_validation(VALIDATION_FRACTION, setup.seed)
    )
    tasks = [
        *(
            read_dataset(setup.conn, i, n).to_task().split_validation(VALIDATION_FRACTION, setup.seed)[1]
            for i, n in setup.earlier
        ),
        validation,
    ]
    kept_before = model.active_adapters

    def report(phase: str, epoch: int, loss: float, closed: bool = False) -> None:
        scores = score_mid_task(model, tasks) if not closed else evaluate_stage(model, tasks)
        active = model.active_adapters if closed else kept_before + int(would_keep(model))
        accuracy = mean_accuracy(scores.cil_correct, scores.counts)
        tune.report(
            {
                "objective": objective(accuracy, active, setup.cost_per_adapter),
                "accuracy": accuracy,
                "til_accuracy": mean_accuracy(scores.til_correct, scores.counts),
                "active_adapters": active,
                "gate_logit": float(model.gate.logits[-1] if closed else model.gate.current_logit),
                "loss": loss,
                "phase": phase,
                "epoch": epoch,
                "closed": int(closed),
            }
        )

    result = train_task(model, task.subsample(setup.subsample, setup.seed), on_epoch=report)
    last_loss = list(result.losses.values())[-1][-1]
    report("closed", -1, last_loss, closed=True)
