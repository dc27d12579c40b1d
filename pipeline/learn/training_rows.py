"""A task's training rows as the training loops read them: shuffled batches of encoded inputs, and every row's
features for fitting heads.

`TaskRows` holds a task's rows in memory (a `Task`). Anything with the same three methods can feed the loops
instead: the Ray Train workers read their shard of a task through Ray Data, which reads, decodes and tokenises
as it streams (pipeline/orchestrator/shard_rows.py), so a worker never holds the whole task.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch

from pipeline.learn.adapted_features import RowFeatures, features_of
from pipeline.learn.task import Task

Batch = tuple[dict[str, torch.Tensor], torch.Tensor]
"""Encoded inputs (a dict of tensors, one row per example) and task-local labels, on the training device."""


class TrainingRows(Protocol):
    def __len__(self) -> int:
        """Training rows of the task (all ranks together)."""

    def iterate(
        self, batch_size: int, seed: int | None, device: torch.device, rank: int = 0, world_size: int = 1
    ) -> Iterator[Batch]:
        """One epoch in `batch_size` global batches, shuffled by `seed` (None: in order). Under DDP each rank gets
        its share of every global batch, and every rank the same number of batches (DDP steps are collective)."""

    def features(self, model, reference=None) -> RowFeatures:
        """The rows' features under `model` in eval mode and, given `reference` (the model as it was before the
        task: `reference_copy`), under it too, computed beside them so the two line up row by row. Every row
        on every rank, or this rank's share of them (`RowFeatures.shard`)."""


@dataclass
class Batches:
    """Encoded inputs of one task held in memory, cut into shuffled (and, under DDP, sharded) batches. Under DDP,
    rank r's k-th batch is its share of the k-th global batch."""

    inputs: dict[str, torch.Tensor]
    labels: torch.Tensor
    shard: bool = False
    """The rows are this rank's alone (a streamed shard's features): under DDP each rank shuffles and batches its
    own, its share of the global batch at a time (the shards are equal, so the ranks take as many steps)."""

    @classmethod
    def of(cls, model, inputs: list, labels: list[int]) -> Batches:
        return cls(dict(model.encode(inputs)), torch.tensor(labels, dtype=torch.long))

    def __len__(self) -> int:
        return self.labels.numel()

    def iterate(
        self, batch_size: int, seed: int | None, device: torch.device, rank: int = 0, world_size: int = 1
    ) -> Iterator[Batch]:
        n = len(self)
        order = (
            torch.randperm(n, generator=torch.Generator().manual_seed(seed))
            if seed is not None
            else torch.arange(n)
        )
        if world_size > 1 and self.shard:
            batch_size = math.ceil(batch_size / world_size)
        elif world_size > 1:  # every worker gets the same number of batches: DDP steps are collective
            per_rank = math.ceil(n / world_size)
            order = order.repeat(math.ceil(per_rank * world_size / n))[: per_rank * world_size][
                rank::world_size
            ]
            # `batch_size` is the global batch, as in Ray Train's examples: each rank takes its share, so a
            # task takes as many optimiser steps on 2 workers as in one process and learns as much.
            batch_size = math.ceil(batch_size / world_size)
        for start in range(0, order.numel(), batch_size):
            idx = order[start : start + batch_size]
            batch = trim_padding({name: tensor[idx] for name, tensor in self.inputs.items()})
            yield {name: tensor.to(device) for name, tensor in batch.items()}, self.labels[idx].to(device)


PADDED_TO = 16
"""Trimmed sequences keep a multiple of this many positions: a handful of batch shapes rather than one a step,
so the allocator reuses its blocks instead of growing a worker's heap through a long epoch."""


def trim_padding(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Padded sequences cut to the longest one of this batch, rounded up to `PADDED_TO` (images pass unchanged)."""
    if "attention_mask" not in batch:
        return batch
    longest = int(batch["attention_mask"].sum(1).max())
    width = -(-longest // PADDED_TO) * PADDED_TO
    return {name: tensor[:, :width] for name, tensor in batch.items()}


class TaskRows:
    """The training rows of a `Task` in memory, encoded once on first use."""

    def __init__(self, model, task: Task):
        self.model, self.task = model, task
        self._batches: Batches | None = None

    def __len__(self) -> int:
        return len(self.task.train_labels)

    def iterate(
        self, batch_size: int, seed: int | None, device: torch.device, rank: int = 0, world_size: int = 1
    ) -> Iterator[Batch]:
        if self._batches is None:
            self._batches = Batches.of(self.model, self.task.train_inputs, self.task.train_labels)
        return self._batches.iterate(batch_size, seed, device, rank, world_size)

    def features(self, model, reference=None) -> RowFeatures:
        # Every rank computes every row's features: identical on all ranks, and in-memory tasks are small.
        inputs = self.task.train_inputs
        before = None if reference is None else features_of(reference, inputs)
        return RowFeatures.of(self.task, features_of(model, inputs), before)
