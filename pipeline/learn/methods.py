"""Which model runs a stream's method; training, scoring and loading whichever it is.

LiteLoRA and the other gated methods (SD-LoRA, sequential LoRA, frozen) are `ContinualModel`s: one set of adapters
serves every class. Share is a `TaskSelectedModel`: a prediction names its task (docs/method.md §8).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from pipeline.adapters.adapter_set import read_manifest
from pipeline.learn.config import TrainConfig
from pipeline.learn.evaluate import StageScores, evaluate_heads, evaluate_stage
from pipeline.learn.held_out_features import held_out_features
from pipeline.learn.model import ContinualModel
from pipeline.learn.recipe import EpochCallback, Progress, train_task
from pipeline.learn.task import Task
from pipeline.learn.training_rows import TrainingRows
from pipeline.methods import method_of
from pipeline.methods.share.model import TaskSelectedModel, evaluate_selected, train_selected_task

AnyModel = ContinualModel | TaskSelectedModel


def selects_by_task(method: str) -> bool:
    """Whether a method's predictions need the task's name."""
    return method_of(method).selects_by_task


def accuracy_scope(method: str) -> str:
    """What a set's accuracy counts, in words: among every class, or within the task a prediction names."""
    return "within each task so far" if selects_by_task(method) else "on every class so far"


def load_model(directory: str | Path, backbone: nn.Module | None = None, tokenizer=None) -> AnyModel:
    """The model an adapter set was written by, rebuilt from it."""
    kind = TaskSelectedModel if selects_by_task(read_manifest(directory)["method"]) else ContinualModel
    return kind.load(directory, backbone, tokenizer)


def continuing(parent: AnyModel | None, config: TrainConfig, overrides: dict | None = None) -> AnyModel:
    """The model the next task trains: `parent` (its configuration, with `overrides`), or a new model running
    `config.method` for a lineage's first task."""
    if parent is None and selects_by_task(config.method):
        parent = TaskSelectedModel(config)
    elif not isinstance(parent, TaskSelectedModel):
        return ContinualModel.continuing(parent, config, overrides)
    if overrides:
        parent.reconfigure(parent.config.with_overrides(**overrides))
    return parent


@dataclass
class Trained:
    decision: str
    """recruit | reuse | continue | none (gated methods); store (Share: every task keeps its delta)."""
    logit: float
    wall_time: float
    keep: bool = True
    """Whether the task's adapter (or delta) is kept."""
    trainable_parameters: int = 0


def train_next_task(
    model: AnyModel,
    task: Task,
    on_epoch: EpochCallback | None = None,
    *,
    wrap: Callable[[nn.Module], nn.Module] = lambda m: m,
    rank: int = 0,
    world_size: int = 1,
    resume: Progress | None = None,
    rows: TrainingRows | None = None,
) -> Trained:
    """Train `task` on `model`, whichever method it runs: in this process, or as one DDP rank (`wrap`, `rank`,
    `world_size`) on its own `rows`. `resume`: where an earlier, killed attempt stopped (gated methods; a Share
    task restarts from its first epoch)."""
    distributed = {"wrap": wrap, "rank": rank, "world_size": world_size, "rows": rows}
    if isinstance(model, TaskSelectedModel):
        result = train_selected_task(model, task, on_epoch, **distributed)
        return Trained("store", 0.0, result.wall_time, True, result.trainable_parameters)
    result = train_task(model, task, on_epoch=on_epoch, resume=resume, **distributed)
    decision = result.decision
    return Trained(
        decision.decision, decision.logit, result.wall_time, decision.keep, result.trainable_parameters
    )


def evaluate(model: AnyModel, tasks: list[Task], features_dir: Path | None = None) -> StageScores:
    """Every task so far on its held-out rows: class-incremental and task-incremental for a gated model, only
    task-incremental (in both rows) for a Share model, whose predictions name their task. `features_dir`: where a
    gated model's held-out features are kept by encoder (held_out_features.py)."""
    if isinstance(model, TaskSelectedModel):
        return evaluate_selected(model, tasks)
    if features_dir is None:
        return evaluate_stage(model, tasks)
    features = held_out_features(model, tasks, features_dir)
    return evaluate_heads(model, tasks, (model.config.head,), features)[model.config.head]
