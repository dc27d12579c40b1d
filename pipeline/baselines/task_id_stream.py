"""The baselines that select a delta by task id: Share and one LoRA per task (the storage reference).

Same tasks, backbone, targets, rank, heads, optimiser, epochs and metrics as the adapter methods; they need
the task id at inference, so only task-incremental accuracy is reported for them (docs/method.md §8).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipeline.adapters.inject import replace_linears
from pipeline.baselines.share_layer import TaskLoRALinear
from pipeline.learn.backbone import autocast, embed, load_backbone, pick_device
from pipeline.learn.config import TrainConfig
from pipeline.learn.heads import TaskHeads
from pipeline.learn.recipe import Batches
from pipeline.learn.stream import StreamResult
from pipeline.learn.task import Task

TASK_ID_METHODS: dict[str, str] = {"share": "share", "lora-per-task": "lora"}
"""Bench method name → how the per-task factors are stored."""


@dataclass
class ShareConfig:
    basis: float | int = 0.6
    """Basis size k per side: a float is the explained-variance fraction that picks k (the paper's guidance is
    about 60%), an int a fixed k."""
    expansion: int = 2
    """φ, rank of the temporary expansion trained beside the coefficients."""
    pad: bool = False
    """A fixed k keeps k columns, random orthogonal directions where the stack has fewer informative ones (the
    official code); False keeps only the informative ones."""
    fold_expansion: bool = True
    """The task keeps its whole trained factor U L + P Q (ours); False: only U L (the official code)."""
    reproject: str = "all"
    """Earlier tasks re-projected onto a new basis: "all" (ours) or only the "previous" one (the NLU script)."""
    epochs: int | None = None
    """Epochs per task, for both task-id methods (None: the training config's)."""
    lr: float | None = None
    weight_decay: float = 0.0
    warmup: float = 0.0
    """Fraction of a task's steps over which the learning rate ramps up linearly (the official scripts: 0.06)."""

    def __post_init__(self) -> None:
        if self.reproject not in ("all", "previous"):
            raise ValueError(f"reproject is 'all' or 'previous', not {self.reproject!r}")
        if self.reproject == "previous" and not (isinstance(self.basis, int) and self.pad):
            # Older tasks keep coefficients of the old basis: they stay usable only while k cannot change.
            raise ValueError("reproject='previous' needs a fixed k that is padded (basis=int, pad=True)")

    @classmethod
    def official(cls, epochs: int) -> ShareConfig:
        """The official code's NLU settings (k = 32 with padding, φ = 2, only U L kept, the previous task
        re-projected, AdamW lr 4e-3, weight decay 0.1, 6% warm-up), `epochs` scaled to our task sizes."""
        return cls(
            basis=32,
            expansion=2,
            pad=True,
            fold_expansion=False,
            reproject="previous",
            epochs=epochs,
            lr=4e-3,
            weight_decay=0.1,
            warmup=0.06,
        )


class TaskSelectedModel(torch.nn.Module):
    def __init__(
        self, config: TrainConfig, kind: str, backbone: torch.nn.Module | None = None, tokenizer=None
    ):
        super().__init__()
        self.config = config
        self.encoder = load_backbone(config.backbone, backbone, tokenizer)
        self.backbone = self.encoder.network
        self.layers = replace_linears(
            self.backbone,
            config.adapter.targets,
            lambda linear: TaskLoRALinear(linear, kind, config.adapter.rank),
        )
        self.heads = TaskHeads(self.encoder.hidden_size)
        self.device = pick_device(config.device)
        self.to(self.device)

    def select(self, task: int | None) -> None:
        for layer in self.layers.values():
            layer.task = task

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        return self.heads(self.encoder.features(**batch).float())

    def encode(self, inputs: list) -> dict[str, torch.Tensor]:
        return self.encoder.encode(inputs)


def train_selected_task(model: TaskSelectedModel, task: Task, t: int, share: ShareConfig) -> int:
    """Train task t's delta and head (the backbone and any basis frozen); returns its trainable parameters."""
    cfg = model.config
    torch.manual_seed(cfg.seed + t)
    for layer in model.layers.values():
        layer.begin_task(share.expansion)
    head = model.heads.add_task(len(task.classes)).to(model.device)
    params = [p for layer in model.layers.values() for p in layer.train_params.values()] + list(
        head.parameters()
    )
    optimizer = torch.optim.AdamW(params, lr=share.lr or cfg.lr, weight_decay=share.weight_decay)
    epochs = share.epochs or cfg.epochs
    warmup = share.warmup * epochs * -(-len(task.train_labels) // cfg.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / max(warmup, 1.0))
    )
    offset = model.heads.offsets()[-1]
    batches = Batches.of(model, task.train_inputs, task.train_labels)
    model.train()
    model.backbone.eval()
    for epoch in range(epochs):
        for batch, labels in batches.iterate(cfg.batch_size, cfg.seed + 7919 * t + epoch, model.device):
            with autocast(model.device):
                logits = model(**batch)
            loss = F.cross_entropy(logits[:, offset : offset + len(task.classes)].float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    trainable = sum(p.numel() for p in params)
    pad = torch.Generator().manual_seed(cfg.seed + t) if share.pad else None
    for layer in model.layers.values():
        layer.end_task(share.basis, share.fold_expansion, share.reproject, pad)
    model.eval()
    return trainable


def task_accuracy(model: TaskSelectedModel, task: Task, j: int) -> int:
    """Correct task-incremental predictions on task j's test set, with task j's delta and head."""
    model.select(j)
    features = embed(model.encoder, task.test_inputs, model.config.eval_batch_size, model.device)
    model.select(None)
    head = model.heads.heads[j]
    with torch.no_grad():
        logits = head(features.to(head.weight.device)).cpu()
    return int((logits.argmax(1) == torch.tensor(task.test_labels)).sum())


def run_task_id_stream(
    tasks: list[Task],
    config: TrainConfig,
    method: str,
    share: ShareConfig | None = None,
    on_task: Callable[[int, StreamResult], None] | None = None,
    model: TaskSelectedModel | None = None,
) -> StreamResult:
    share = share or ShareConfig()
    start = time.perf_counter()
    model = model or TaskSelectedModel(config, TASK_ID_METHODS[method])
    result = StreamResult(method, task_incremental_only=True)
    for t, task in enumerate(tasks):
        task_start = time.perf_counter()
        result.trainable_params.append(train_selected_task(model, task, t, share))
        result.task_seconds.append(time.perf_counter() - task_start)
        correct = [task_accuracy(model, seen, j) for j, seen in enumerate(tasks[: t + 1])]
        result.til.add_stage(correct, [len(seen.test_labels) for seen in tasks[: t + 1]])
        layers = list(model.layers.values())
        if method == "share":
            k = sum(layer.basis_a.shape[1] + layer.basis_b.shape[1] for layer in layers) / (2 * len(layers))
            result.decisions.append(f"k={k:.1f}")
            result.reprojection_errors.append(
                sum(layer.reprojection_errors[-1] for layer in layers) / len(layers)
            )
        else:
            result.decisions.append("store")
        if on_task is not None:
            on_task(t, result)
    result.active_adapters = 1 if method == "share" else len(tasks)
    result.stored_params = sum(layer.stored_parameters() for layer in model.layers.values())
    result.head_params = sum(p.numel() for p in model.heads.parameters())
    result.wall_time = time.perf_counter() - start
    return result
