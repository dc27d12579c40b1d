"""A model's adapted features of rows: pooled, in eval mode (the gate deterministic), on the CPU in float32; and
a task's training rows under them, as fitting the head options reads them (head_options.py): this process's rows
only, which under Ray Train is its worker's shard (the heads' statistics are summed over the ranks).
"""

from __future__ import annotations

import contextlib
import copy
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


def features_of_batches(models: list, batches: Iterable[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
    """Each of `models`' features of already encoded batches (a streamed shard), every batch through every model as
    it passes: one pass over the rows, so the models' features line up row by row."""
    device = models[0].gate.alpha.device
    parts: list[list[torch.Tensor]] = [[] for _ in models]
    with contextlib.ExitStack() as stack:
        for model in models:
            stack.enter_context(evaluating(model))
        for batch in batches:
            for model, part in zip(models, parts, strict=True):
                part.append(embed_batches(model, [batch], device))
    return [torch.cat(part) for part in parts]


def reference_copy(model):
    """The model as it is now, to compute a task's rows' features "before the task" beside the trained model's,
    in the same pass (a streamed shard may hold other rows on each pass). The pretrained weights and the tokenizer,
    which no task changes, are shared rather than copied: the copy costs the adapters, gate, heads and buffers."""
    pretrained = {
        id(p): p
        for name, p in model.backbone.named_parameters()
        if name.rsplit(".", 1)[-1] not in ("lora_a", "lora_b")  # sequential LoRA trains one adapter on
    }
    tokenizer = getattr(model.encoder, "tokenizer", None)  # text: its vocabulary was most of a copy's cost
    if tokenizer is not None:
        pretrained[id(tokenizer)] = tokenizer
    reference = copy.deepcopy(model, memo=pretrained)
    reference.eval()
    return reference


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
    before: torch.Tensor | None = None
    """[N, D]: the same rows' features under the model as it was before the task (for drift), or None."""
    shard: bool = False
    """Whether these are this rank's share of the task's rows, the other ranks holding the rest (statistics are
    then summed over the ranks); False when every rank holds every row."""

    @classmethod
    def of(cls, task: Task, features: torch.Tensor, before: torch.Tensor | None = None) -> RowFeatures:
        """`features` (and `before`) of `task`'s training rows, in their order."""
        labels = torch.tensor(task.train_labels, dtype=torch.long)
        return cls(features, labels, held_out(task.train_inputs), before)
