"""How a transaction has its task trained, and what the training hands back: in this process (`fit_locally`) or
as a Ray Train job (`ray_train.ray_fit`); `transaction.fit_with` picks one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.learn.methods import AnyModel, train_next_task
from pipeline.learn.recipe import EpochCallback
from pipeline.learn.task import Task
from pipeline.registry.current import Parent
from pipeline.registry.lineage import TrainingRun


@dataclass
class Fitted:
    model: AnyModel
    decision: str
    logit: float
    train_s: float
    timings: dict = field(default_factory=dict)


Fit = Callable[[AnyModel, Task, Parent, TrainingRun, EpochCallback], Fitted]


def fit_locally(
    model: AnyModel, task: Task, parent: Parent, run: TrainingRun, on_epoch: EpochCallback
) -> Fitted:
    trained = train_next_task(model, task, on_epoch)
    return Fitted(model, trained.decision, trained.logit, trained.wall_time, {"compute_s": trained.wall_time})
