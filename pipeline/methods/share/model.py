"""A model whose delta and head are the task's the caller names: Share (one basis per layer side, a few
coefficients per task) or one LoRA per task, its storage reference (docs/method.md §8).

Task-incremental by construction: a prediction names its task and scores that task's classes only. A Share stream
in the service trains tasks with `train_selected_task` and saves the model as an adapter set of format 2.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.adapters.adapter_set import (
    TASK_SELECTED_FORMAT,
    read_manifest,
    read_tensor_file,
    tensor_file,
    write_adapter_set,
)
from pipeline.adapters.inject import replace_linears
from pipeline.learn.backbone import autocast, embed, load_backbone, pick_device
from pipeline.learn.config import TrainConfig
from pipeline.learn.evaluate import StageScores
from pipeline.learn.heads import TaskHeads
from pipeline.learn.model import TaskRecord, classes_of, introducing_tasks
from pipeline.learn.recipe import EpochCallback
from pipeline.learn.task import Task
from pipeline.learn.training_rows import TaskRows, TrainingRows
from pipeline.methods.base import Method
from pipeline.methods.registry import method_of
from pipeline.methods.share.layer import TaskLoRALinear

KINDS = ("share", "lora")
"""How the per-task deltas are stored: Share's basis and coefficients, or each task's LoRA as trained."""


@dataclass
class ShareConfig:
    basis: float | int = 4
    """Basis size k per side: an int is a fixed k, a float the explained-variance fraction that picks k (the
    paper's guidance is about 60%)."""
    expansion: int = 0
    """φ, rank of the temporary expansion trained beside the coefficients."""
    pad: bool = True
    """A fixed k keeps k columns, random orthogonal directions where the stack has fewer informative ones (the
    official code); False keeps only the informative ones."""
    fold_expansion: bool = True
    """The task keeps its whole trained factor U L + P Q (ours); False: only U L (the official code)."""
    reproject: str = "all"
    """Earlier tasks re-projected onto a new basis: "all" (ours) or only the "previous" one (the NLU script)."""
    epochs: int | None = None
    """Epochs per task (None: the training config's)."""
    lr: float | None = 4e-3
    """AdamW learning rate of the deltas and the head (None: the training config's)."""
    weight_decay: float = 0.1
    warmup: float = 0.06
    """Fraction of a task's steps over which the learning rate ramps up linearly."""

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
        return cls(basis=32, expansion=2, fold_expansion=False, reproject="previous", epochs=epochs)

    @classmethod
    def from_dict(cls, data: dict) -> ShareConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class TaskSelectedModel(nn.Module):
    def __init__(
        self,
        config: TrainConfig,
        kind: str = "share",
        share: ShareConfig | None = None,
        backbone: nn.Module | None = None,
        tokenizer=None,
    ):
        """`share`: how tasks are trained and stored (default: the service's, `ShareConfig()`)."""
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
        self.config, self.kind, self.share = config, kind, share or ShareConfig()
        self.encoder = load_backbone(config.backbone, backbone, tokenizer)
        self.backbone = self.encoder.network
        self.layers = replace_linears(
            self.backbone,
            config.adapter.targets,
            lambda linear: TaskLoRALinear(linear, kind, config.adapter.rank),
        )
        self.heads = TaskHeads(self.encoder.hidden_size)
        self.tasks: list[TaskRecord] = []
        self.to(pick_device(config.device))

    @property
    def device(self) -> torch.device:
        """Where the model is (Ray Train moves it to its worker's device)."""
        return next(self.backbone.parameters()).device

    def reconfigure(self, config: TrainConfig) -> None:
        self.config = config

    @property
    def method(self) -> Method:
        return method_of(self.config.method)

    def run_params(self) -> dict:
        """What made the set, for its training run: the configuration and Share's own settings (k, φ, optimiser)."""
        return self.config.to_dict() | {"share": asdict(self.share)}

    def merge(self, unwrap: bool = False) -> None:
        """Nothing to merge: the delta depends on the task a prediction names."""

    def export_peft(self, directory) -> dict:
        from pipeline.methods.share.export import export_task_selected  # it reads the PEFT writer of learn/

        return export_task_selected(self, directory)

    # -- forward -----------------------------------------------------------------------------------
    def select(self, task: int | None) -> None:
        """Apply task `task`'s stored delta from now on (None: the bare backbone, or the task being trained)."""
        for layer in self.layers.values():
            layer.task = task

    def encode(self, inputs: list) -> dict[str, torch.Tensor]:
        return self.encoder.encode(inputs)

    def features(self, **batch: torch.Tensor) -> torch.Tensor:
        return self.encoder.features(**batch)

    def forward(self, **batch: torch.Tensor) -> torch.Tensor:
        """Every head's logits on the selected delta's features (training reads the newest head's)."""
        return self.heads(self.features(**batch).float())

    @torch.no_grad()
    def task_logits(self, inputs: list, task: int) -> torch.Tensor:
        """Logits over task `task`'s own classes, with its delta and head; on CPU in float32."""
        self.select(task)
        try:
            features = embed(self, inputs, self.config.eval_batch_size, self.device)
        finally:
            self.select(None)
        head = self.heads.heads[task]
        return head(features.to(head.weight.device)).cpu()

    # -- bookkeeping -------------------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        return classes_of(self.tasks)

    def introduced_by(self) -> list[str]:
        return introducing_tasks(self.tasks)

    @property
    def active_adapters(self) -> int:
        """Deltas a prediction chooses from: Share stores one basis, one LoRA per task one LoRA per task."""
        return (1 if self.tasks else 0) if self.kind == "share" else len(self.tasks)

    def stored_parameters(self) -> int:
        return sum(layer.stored_parameters() for layer in self.layers.values())

    def head_parameters(self) -> int:
        return sum(p.numel() for p in self.heads.parameters())

    # -- task lifecycle ----------------------------------------------------------------------------
    def begin_task(self, task: Task) -> nn.Linear:
        """A fresh delta to train (Share: coefficients from the previous task and the expansion) and a head."""
        for layer in self.layers.values():
            layer.begin_task(self.share.expansion)
        return self.heads.add_task(len(task.classes)).to(self.device)

    def trainable(self) -> list[nn.Parameter]:
        deltas = [p for layer in self.layers.values() for p in layer.train_params.values()]
        return deltas + list(self.heads.heads[-1].parameters())

    def end_task(self, task: Task) -> TaskRecord:
        """Store the trained task (Share: recompute the basis, re-project the tasks) and record it."""
        pad = torch.Generator().manual_seed(self.config.seed + len(self.tasks)) if self.share.pad else None
        for layer in self.layers.values():
            layer.end_task(self.share.basis, self.share.fold_expansion, self.share.reproject, pad)
        record = TaskRecord(task.name, list(task.classes), "store", 0.0, task.dataset_id)
        self.tasks.append(record)
        return record

    def reprojection_error(self) -> float:
        """Mean relative error of the earlier tasks' factors re-projected by the last task (Share)."""
        errors = [
            layer.reprojection_errors[-1] for layer in self.layers.values() if layer.reprojection_errors
        ]
        return sum(errors) / len(errors) if errors else 0.0

    # -- adapter set -------------------------------------------------------------------------------
    def save(self, directory: str | Path, extra: dict | None = None) -> dict:
        """Write the set (format 2: the deltas in one file, a head per task) and return its manifest."""
        files: dict[str, bytes] = {}
        deltas = {
            f"{name}.{key}": t for name, layer in self.layers.items() for key, t in layer.tensors().items()
        }
        deltas_file = None
        if deltas:
            deltas_file, data = tensor_file("deltas", deltas)
            files[deltas_file] = data
        tasks = []
        for record, head in zip(self.tasks, self.heads.heads, strict=True):
            rel, data = tensor_file("heads", {"weight": head.weight, "bias": head.bias})
            files[rel] = data
            tasks.append({**asdict(record), "head": rel})
        manifest = {
            "format": TASK_SELECTED_FORMAT,
            "method": self.config.method,
            "kind": self.kind,
            "config": self.config.to_dict(),
            "share": asdict(self.share),
            "targets": list(self.layers),
            "adapters": [],
            "deltas": deltas_file,
            "tasks": tasks,
            "scoring": None,
            **(extra or {}),
        }
        write_adapter_set(directory, manifest, files)
        return manifest

    @classmethod
    def load(
        cls, directory: str | Path, backbone: nn.Module | None = None, tokenizer=None
    ) -> TaskSelectedModel:
        manifest = read_manifest(directory)
        config = TrainConfig.from_dict(manifest["config"])
        config.adapter.targets = tuple(manifest["targets"])
        share = ShareConfig.from_dict(manifest["share"])
        model = cls(config, manifest["kind"], share, backbone, tokenizer)
        if manifest["deltas"]:
            per_layer: dict[str, dict[str, torch.Tensor]] = {}
            for key, tensor in read_tensor_file(directory, manifest["deltas"]).items():
                name, _, part = key.rpartition(".")
                per_layer.setdefault(name, {})[part] = tensor
            for name, layer in model.layers.items():
                layer.load_tensors(per_layer.get(name, {}))
        for entry in manifest["tasks"]:
            state = read_tensor_file(directory, entry.pop("head"))
            model.heads.add_task(state["weight"].shape[0]).to(model.device).load_state_dict(state)
            model.tasks.append(TaskRecord(**entry))
        return model


@dataclass
class SelectedTaskResult:
    trainable_parameters: int
    wall_time: float


def train_selected_task(
    model: TaskSelectedModel,
    task: Task,
    on_epoch: EpochCallback | None = None,
    wrap: Callable[[nn.Module], nn.Module] = lambda m: m,
    rank: int = 0,
    world_size: int = 1,
    rows: TrainingRows | None = None,
) -> SelectedTaskResult:
    """Train the task's delta and head (backbone and basis frozen), then store it. Under Ray Train `wrap` applies
    DDP and `rank`/`world_size` shard every batch, and `rows` may stream the task, as in `recipe.train_task`."""
    start = time.perf_counter()
    cfg, share, t = model.config, model.share, len(model.tasks)
    torch.manual_seed(cfg.seed + t)
    head = model.begin_task(task)
    params = model.trainable()
    optimizer = torch.optim.AdamW(params, lr=share.lr or cfg.lr, weight_decay=share.weight_decay)
    epochs = share.epochs or cfg.epochs
    batches = TaskRows(model, task) if rows is None else rows
    warmup = share.warmup * epochs * -(-len(batches) // cfg.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / max(warmup, 1.0))
    )
    offset = model.heads.offsets()[-1]
    network = wrap(model)
    model.train()
    model.backbone.eval()  # the frozen encoder never runs dropout
    for epoch in range(epochs):
        total, steps = torch.zeros((), device=model.device), 0  # read once an epoch, as in the recipe
        seed = cfg.seed + 7919 * t + epoch
        for batch, labels in batches.iterate(cfg.batch_size, seed, model.device, rank, world_size):
            with autocast(model.device):
                logits = network(**batch)
            loss = F.cross_entropy(logits[:, offset : offset + head.out_features].float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total, steps = total + loss.detach(), steps + 1
        if on_epoch is not None:
            on_epoch("train", epoch, total.item() / max(steps, 1))
    trainable = sum(p.numel() for p in params)
    model.end_task(task)
    model.eval()
    return SelectedTaskResult(trainable, time.perf_counter() - start)


def evaluate_selected(model: TaskSelectedModel, tasks: list[Task]) -> StageScores:
    """Every task on its own held-out rows with its own delta and head. Only task-incremental accuracy exists
    here, so it fills both rows of `StageScores`; each class is scored on its latest rows."""
    scores = StageScores([], [], [])
    for j, task in enumerate(tasks):
        labels = torch.tensor(task.test_labels)
        hits = model.task_logits(task.test_inputs, j).argmax(1) == labels
        correct = int(hits.sum())
        scores.cil_correct.append(correct)
        scores.til_correct.append(correct)
        scores.counts.append(len(labels))
        for k, name in enumerate(task.classes):
            rows = labels == k
            if rows.any():
                scores.classes[name] = [int(hits[rows].sum()), int(rows.sum())]
                scores.til_classes[name] = list(scores.classes[name])
    return scores
