"""A model's adapted features of rows: pooled, in eval mode (the gate deterministic), on the CPU in float32; and
a task's training rows under them, as fitting the head options reads them (head_options.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from pipeline.learn.backbone import embed, embed_batches
from pipeline.learn.ridge import held_out
from pipeline.learn.task import Task


def features_of(model, inputs: list) -> torch.Tensor:
    """Adapted, pooled features of `inputs` (eval mode: deterministic gate), on CPU in float32."""
    with evaluating(model):
        return embed(model, inputs, model.config.eval_batch_size, model.gate.alpha.device)


def features_of_batches(model, batches: Iterable[dict[str, torch.Tensor]]) -> torch.Tensor:
    """The same for already encoded batches (a streamed shard)."""
    with evaluating(model):
        return embed_batches(model, batches, model.gate.alpha.device)


@contextlib.contextmanager
def evaluating(model) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@dataclass
class RowFeatures:
    """Every training row's pooled features under the model as it is, with what fitting heads needs beside them."""

    features: torch.Tensor
    """[N, D] float32 on the CPU."""
    labels: torch.Tensor
    """[N] task-local class indices."""
    ridge_held: torch.Tensor
    """[N] bool: the rows the ridge head chooses λ on (ridge.held_out)."""

    @classmethod
    def of(cls, task: Task, features: torch.Tensor) -> RowFeatures:
        """`features` of `task`'s training rows, in their order."""
        return cls(features, torch.tensor(task.train_labels, dtype=torch.long), held_out(task.train_inputs))
