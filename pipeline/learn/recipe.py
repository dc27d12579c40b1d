"""Train one task on top of the current model: the continual-learning step, top to bottom.

    task 0, SD-LoRA, sequential LoRA:  one phase (adapter + head, and the magnitudes for SD-LoRA)
    LiteLoRA, task t ≥ 1:             phase 1 (new adapter, all α, head; gate deterministic)
                                        phase 2 (only l_t; noisy gate; CE + λ·mean|β_t|) → keep iff l_t > 0

Plain PyTorch: under Ray Train the same functions run in every worker, with `rank`/`world_size` sharding
the batches (or `rows`, the worker's streamed shard) and `wrap` applying DDP once per phase, after the phase has
set what is trainable.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.adapters import GateDecision
from pipeline.learn.adapted_features import RowFeatures, reference_copy
from pipeline.learn.backbone import autocast
from pipeline.learn.head_options import check_fittable, fit_heads, needs_drift_reference
from pipeline.learn.input_space import extend_input_bases, recording_inputs
from pipeline.learn.model import ContinualModel
from pipeline.learn.no_regret import Weighing, weigh_recruit
from pipeline.learn.routing import weigh_routed_recruit
from pipeline.learn.task import Task
from pipeline.learn.training_rows import Batches, TaskRows, TrainingRows

EpochCallback = Callable[[str, int, float], None]  # (phase, epoch, mean loss)


@dataclass
class TaskResult:
    decision: GateDecision
    trainable_parameters: int
    wall_time: float
    losses: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class Progress:
    """A task's state at an epoch boundary, enough to resume a killed run (optimizer moments restart)."""

    phase: str
    epochs_done: int
    tensors: dict[str, torch.Tensor]


def capture_progress(model: ContinualModel, phase: str, epochs_done: int) -> Progress:
    tensors = {"gate.alpha": model.gate.alpha, "gate.current_logit": model.gate.current_logit.reshape(1)}
    head = model.heads.heads[-1]
    tensors |= {"head.weight": head.weight, "head.bias": head.bias}
    for name, layer in model.adapters:
        if layer.lora_a is not None:  # the frozen method trains no adapter
            tensors |= {f"{name}.lora_a": layer.lora_a, f"{name}.lora_b": layer.lora_b}
    return Progress(phase, epochs_done, {k: v.detach().cpu().clone() for k, v in tensors.items()})


@torch.no_grad()
def restore_progress(model: ContinualModel, progress: Progress) -> None:
    t = progress.tensors
    model.gate.alpha.copy_(t["gate.alpha"])
    model.gate.current_logit.copy_(t["gate.current_logit"].reshape(()))
    model.heads.heads[-1].weight.copy_(t["head.weight"])
    model.heads.heads[-1].bias.copy_(t["head.bias"])
    for name, layer in model.adapters:
        if layer.lora_a is not None:
            layer.lora_a.copy_(t[f"{name}.lora_a"])
            layer.lora_b.copy_(t[f"{name}.lora_b"])


def _optimizer(kind: str, groups: list[dict], lr: float) -> torch.optim.Optimizer:
    groups = [g for g in groups if g["params"]]
    if kind == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    return torch.optim.AdamW(groups, lr=lr)


def _run_epochs(
    model: ContinualModel,
    forward: nn.Module,
    batches: TrainingRows,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    sparsity: float = 0.0,
    start: int = 0,
    phase: str,
    on_epoch: EpochCallback | None,
    rank: int,
    world_size: int,
) -> list[float]:
    offset, width = model.heads.offsets()[-1], model.heads.sizes[-1]
    losses = []
    for _ in range(start):  # a resumed run continues the schedule where it stopped
        if scheduler is not None:
            scheduler.step()
    for epoch in range(start, epochs):
        # Summed on the device and read once an epoch: a read per step would wait for the GPU at every step.
        total, steps = torch.zeros((), device=device), 0
        for batch, labels in batches.iterate(batch_size, seed * 1000 + epoch, device, rank, world_size):
            model.gate.clear_samples()
            with autocast(device):
                logits = forward(**batch)
            # Train on the current task's logits only, with task-local targets (docs/method.md §3).
            loss = F.cross_entropy(logits[:, offset : offset + width].float(), labels)
            if sparsity:
                loss = loss + sparsity * model.gate.sparsity_penalty()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, steps = total + loss.detach(), steps + 1
        if scheduler is not None:
            scheduler.step()
        losses.append(total.item() / max(steps, 1))
        if on_epoch is not None:
            on_epoch(phase, epoch, losses[-1])
    model.gate.clear_samples()
    return losses


def _milestones(epochs: int, fractions: tuple[float, ...]) -> list[int]:
    return [int(f * epochs) for f in fractions]


def train_task(
    model: ContinualModel,
    task: Task,
    *,
    on_epoch: EpochCallback | None = None,
    wrap: Callable[[nn.Module], nn.Module] = lambda m: m,
    rank: int = 0,
    world_size: int = 1,
    resume: Progress | None = None,
    head_options: tuple[str, ...] | None = None,
    features: torch.Tensor | None = None,
    rows: TrainingRows | None = None,
    cuts: list[Task] | None = None,
) -> TaskResult:
    """Train `task` on top of `model` in place, close it with the gate's (or the method's) decision and fit
    the head options (by default the configured one).

    `resume` continues from an epoch boundary captured by `capture_progress` in an earlier, killed attempt.
    `features`: the task's training features for a task that adapts nothing (the `frozen` method's never
    change, so can be cached). `rows`: the task's training rows when they are not in `task` (a Ray Train
    worker's streamed shard). `cuts`: validation cuts of the earlier tasks' training rows (`validation_cut`), for
    the no-regret rule (`config.no_regret`)."""
    cfg = model.config
    if cfg.no_regret and cuts is None and model.tasks and model.routes is None:
        raise ValueError(
            "no_regret weighs a recruit on every earlier task's validation cut: pass them as `cuts`"
        )
    start = time.perf_counter()
    head_options = head_options or (cfg.head,)
    check_fittable(model, head_options)
    rows = TaskRows(model, task) if rows is None else rows
    # The model as it is, for the rows' features before the task: computed beside theirs after it, in one pass.
    reference = reference_copy(model) if needs_drift_reference(model, head_options) else None
    if model.routes is not None:  # the parent the task's new adapter trains on: where its rows route now
        model.routes.open(rows.features(model))
    torch.manual_seed(cfg.seed + len(model.tasks))
    t = model.begin_task(task)
    frozen: RowFeatures | None = None
    if not model.method.adapts(t):
        # Nothing adapts, so the head trains on features computed once: the batches are features, the network
        # is the heads alone.
        frozen = parent_features(model, rows) if features is None else RowFeatures.of(task, features)
        batches = Batches({"features": frozen.features}, frozen.labels, frozen.shard)
        network = model.heads
    else:
        batches, network = rows, model
    run = _Run(model, batches, wrap, cfg.seed + 7919 * t, on_epoch, rank, world_size, resume)
    epochs = cfg.task_epochs(t, len(rows))
    losses, trainable = run.phase1(network, t, epochs)
    keep, weighed = True, None
    if model.method.selects(t):
        losses["phase2"] = run.phase2()
        keep = None  # decided by the sign of l_t
        if cfg.no_regret and float(model.gate.current_logit) > 0:
            weighing = _weigh(model, task, rows, reference, cuts or [])
            keep, weighed = weighing.keep, [weighing.recruit, weighing.reuse]
    decision = model.end_task(task, keep=keep, weighed=weighed)
    model.gate.alpha.requires_grad_(False)
    model.eval()
    recording = cfg.recruit_space == "null"
    if set(head_options) != {"linear"} or recording:
        # One pass serves both: the rows' features for the heads and their inputs to every adapted layer.
        routed = (
            model.routes.forcing(model.routes.task_expert[-1]) if model.routes else contextlib.nullcontext()
        )
        with recording_inputs(model) if recording else contextlib.nullcontext() as seen, routed:
            trained = (
                rows.features(model, reference) if recording or frozen is None or model.routes else frozen
            )
        if recording:
            extend_input_bases(model, seen, cfg.null_space_energy)
        if set(head_options) != {"linear"}:
            fit_heads(model, task, head_options, trained)
    return TaskResult(decision, trainable, time.perf_counter() - start, losses)


def _weigh(model, task: Task, rows: TrainingRows, reference, cuts: list[Task]) -> Weighing:
    """The no-regret rule on the recruit the gate asks for: a routed one on the task's own rows, one added into
    shared weights on every earlier task's validation cut (docs/method.md §3)."""
    if model.routes is not None:
        return weigh_routed_recruit(model, task, rows)
    head = (model.config.head,)
    return weigh_recruit(
        model, task, cuts, lambda trial: fit_heads(trial, task, head, rows.features(trial, reference))
    )


def parent_features(model, rows: TrainingRows) -> RowFeatures:
    """The rows' features as the open task trains them: under the model, or a routed set's open task's parent."""
    if model.routes is None:
        return rows.features(model)
    with model.routes.forcing(model.routes.parent):
        both = rows.features(model)
    return replace(both, features=both.features.chunk(2, dim=1)[0])


@dataclass
class _Run:
    """One task's training passes: what both phases share (the rows, the seed, where a resumed attempt stopped)."""

    model: ContinualModel
    batches: TrainingRows
    wrap: Callable[[nn.Module], nn.Module]
    seed: int
    on_epoch: EpochCallback | None
    rank: int
    world_size: int
    resume: Progress | None

    def _epochs(self, network, optimizer, scheduler, **how) -> list[float]:
        device = self.model.gate.alpha.device
        common = {
            "device": device,
            "on_epoch": self.on_epoch,
            "rank": self.rank,
            "world_size": self.world_size,
        }
        return _run_epochs(
            self.model, self.wrap(network), self.batches, optimizer, scheduler, **how, **common
        )

    def phase1(self, network: nn.Module, t: int, epochs: int) -> tuple[dict[str, list[float]], int]:
        """The new direction, the magnitudes the method trains and the task's head; the gate is deterministic.
        Returns the losses and the number of parameters trained."""
        model, cfg = self.model, self.model.config
        train_alpha = model.method.trains_magnitudes(t)
        model.gate.alpha.requires_grad_(train_alpha)
        hooks = []
        if train_alpha and model.method.only_the_task_magnitude(cfg.relearn_magnitudes):
            # Only α_t learns: the earlier magnitudes, and so the features every earlier task was fitted on, stay.
            mask = torch.zeros_like(model.gate.alpha)
            mask[t] = 1.0
            hooks.append(model.gate.alpha.register_hook(lambda grad: grad * mask))
        model.gate.current_logit.requires_grad_(False)
        model.train()
        if self.resume is not None:
            restore_progress(model, self.resume)
        groups = [
            {
                "params": model.adapters.trainable_parameters(),
                "lr": cfg.adapter_lr or cfg.lr,
                "weight_decay": 0.0,
            },
            # Decoupled weight decay would still shrink magnitudes whose gradient is masked to zero.
            {
                "params": [model.gate.alpha] if train_alpha else [],
                "lr": cfg.alpha_lr,
                "weight_decay": 0.0 if hooks else cfg.weight_decay,
            },
            {"params": list(model.heads.heads[-1].parameters()), "lr": cfg.lr, "weight_decay": 0.0},
        ]
        optimizer = _optimizer(cfg.optimizer, groups, cfg.lr)
        scheduler = torch.optim.lr_scheduler.MultiStepLR(
            optimizer, _milestones(epochs, cfg.lr_milestones), gamma=cfg.lr_decay
        )
        in_phase2 = self.resume is not None and self.resume.phase == "phase2"
        losses = self._epochs(
            network,
            optimizer,
            scheduler,
            epochs=epochs,
            batch_size=cfg.batch_size,
            seed=self.seed,
            start=epochs if in_phase2 else (self.resume.epochs_done if self.resume else 0),
            phase="phase1",
        )
        for hook in hooks:
            hook.remove()
        return {"phase1": losses}, sum(p.numel() for g in groups for p in g["params"])

    def phase2(self) -> list[float]:
        """Selection: only the task's gate logit l_t learns, from noisy hard gate samples; all else is frozen."""
        model, cfg = self.model, self.model.config
        for p in model.parameters():
            p.requires_grad_(False)
        model.gate.current_logit.requires_grad_(True)
        model.gate.sampling = True
        optimizer = torch.optim.AdamW(
            [model.gate.current_logit], lr=cfg.phase2_lr, weight_decay=cfg.weight_decay
        )
        in_phase2 = self.resume is not None and self.resume.phase == "phase2"
        losses = self._epochs(
            model,
            optimizer,
            None,
            epochs=cfg.phase2_epochs,
            batch_size=cfg.phase2_batch_size,
            seed=self.seed + 1,
            sparsity=cfg.gate.sparsity,
            start=self.resume.epochs_done if in_phase2 else 0,
            phase="phase2",
        )
        model.gate.sampling = False
        model.gate.current_logit.requires_grad_(False)
        return losses
