"""The continual model: a frozen pretrained encoder with SD-LoRA adapters, the gate and per-task heads.

It owns the task lifecycle (what each method does when a task starts and ends) and converts itself
to and from an adapter set on disk. The training loops live in `recipe.py`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import nn

from pipeline.adapters import GateDecision, LiteLoRAGate, inject_adapters
from pipeline.adapters.adapter_set import (
    FORMAT,
    read_manifest,
    read_tensor_file,
    tensor_file,
    write_adapter_set,
)
from pipeline.learn.backbone import load_backbone, pick_device
from pipeline.learn.class_stats import ClassStatistics
from pipeline.learn.config import TrainConfig
from pipeline.learn.head_options import KNOWN_CLASS_HEADS, STORED, score
from pipeline.learn.heads import TaskHeads
from pipeline.learn.ridge import RidgeHead
from pipeline.learn.routing import Routes
from pipeline.learn.subspace import chance_coverage, coverage
from pipeline.learn.task import Task
from pipeline.methods import Method, method_of


@dataclass
class TaskRecord:
    name: str
    classes: list[str]
    decision: (
        str  # "recruit" | "reuse" | "continue" (sequential LoRA keeps training one adapter) | "none" (frozen)
    )
    logit: float
    dataset_id: str = ""
    coverage: float | None = None
    """Share of the task's trained adapter inside the span of the adapters kept before it (subspace.coverage)."""
    chance_coverage: float | None = None
    """The same for a random subspace of that rank: what coverage means nothing beyond."""
    weighed: list[float] | None = None
    """[with the recruit, with a reuse]: accuracy on the validation cut when the no-regret rule weighed the gate's
    recruit (learn/no_regret.py); None when it did not."""


def classes_of(tasks: list[TaskRecord]) -> list[str]:
    """Every class the tasks brought, once, in the order they introduced them (a later task may bring known ones)."""
    return list(dict.fromkeys(c for t in tasks for c in t.classes))


def introducing_tasks(tasks: list[TaskRecord]) -> list[str]:
    """For each class of `classes_of(tasks)`, the name of the task that brought it first."""
    first: dict[str, str] = {}
    for t in tasks:
        for c in t.classes:
            first.setdefault(c, t.name)
    return list(first.values())


def task_named(tasks: list[TaskRecord], name: str) -> int:
    """The index of the task called `name` (the latest, if drops repeated a name); KeyError naming the tasks."""
    for j in reversed(range(len(tasks))):
        if tasks[j].name == name:
            return j
    raise KeyError(f"no task {name!r}; the tasks: {', '.join(t.name for t in tasks)}")


class ContinualModel(nn.Module):
    def __init__(self, config: TrainConfig, backbone: nn.Module | None = None, tokenizer=None):
        """`backbone` (and, for text, `tokenizer`): a fresh network to adapt instead of loading the configured one."""
        super().__init__()
        if method_of(config.method).selects_by_task:
            raise ValueError(
                f"{config.method!r} selects by task: its model is a TaskSelectedModel (methods.py)"
            )
        self.config = config
        self.encoder = load_backbone(config.backbone, backbone, tokenizer)
        self.backbone = self.encoder.network  # registered here: the module that carries the adapters
        self.gate = LiteLoRAGate(config.gate)
        # Fixed magnitudes leave nothing to re-learn a normalised direction's scale: adapters keep their own.
        adapter = config.adapter if config.relearn_magnitudes else replace(config.adapter, norm="none")
        self.adapters = inject_adapters(self.backbone, self.gate, adapter)
        self.ridge = RidgeHead(config.ridge_dim, config.seed)
        self.routes = (
            Routes.start(config.ridge_dim, config.seed) if config.recruit_space == "routed" else None
        )
        self.heads = TaskHeads(self.encoder.hidden_size)
        self.class_stats = ClassStatistics.empty(self.encoder.hidden_size, config.stats_rank)
        self.tasks: list[TaskRecord] = []
        self.to(pick_device(config.device))

    def reconfigure(self, config: TrainConfig) -> None:
        """Train later tasks with another configuration (the gate reads its own part of it)."""
        self.config = config
        self.gate.config = config.gate

    @classmethod
    def continuing(
        cls, parent: ContinualModel | None, config: TrainConfig, overrides: dict | None = None
    ) -> ContinualModel:
        """The model the next task trains: `parent` with its own configuration (and `overrides`), or a new model
        with `config` for a lineage's first task."""
        model = parent or cls(config)
        if overrides:
            model.reconfigure(model.config.with_overrides(**overrides))
        return model

    # -- forward -----------------------------------------------------------------------------------
    def train(self, mode: bool = True) -> ContinualModel:
        super().train(mode)
        self.backbone.eval()  # the frozen encoder never runs dropout; only adapters, gate and heads learn
        return self

    def encode(self, inputs: list) -> dict[str, torch.Tensor]:
        """Raw inputs (texts, or image bytes) → one batch of tensors on the CPU."""
        return self.encoder.encode(inputs)

    def features(self, **batch: torch.Tensor) -> torch.Tensor:
        if self.routes is not None:
            return self.routes.features(self, batch)
        return self.encoder.features(**batch)

    def forward(self, head: str | None = None, **batch: torch.Tensor) -> torch.Tensor:
        """Scores over every class seen: in training the linear heads being learned, in eval mode the
        configured head option (or `head`)."""
        features = self.features(**batch).float()
        if self.training:
            return self.heads(features)
        return score(self, features, head or self.config.head)

    # -- bookkeeping -------------------------------------------------------------------------------
    @property
    def classes(self) -> list[str]:
        """Every class seen, once, in the order tasks introduced them (a later task may bring known ones)."""
        return classes_of(self.tasks)

    def class_index(self, classes: list[str]) -> torch.Tensor:
        """The global index (into `classes`) of each of `classes`."""
        where = {c: i for i, c in enumerate(self.classes)}
        return torch.tensor([where[c] for c in classes], dtype=torch.long)

    def first_head_rows(self) -> torch.Tensor:
        """For each class, its row in the per-task heads stacked in task order (the head of the task that brought
        it first)."""
        seen: dict[str, int] = {}
        rows = (c for t in self.tasks for c in t.classes)
        for row, c in enumerate(rows):
            seen.setdefault(c, row)
        return torch.tensor(list(seen.values()), dtype=torch.long)

    def introduced_by(self) -> list[str]:
        """For each class, the name of the task that brought it first."""
        return introducing_tasks(self.tasks)

    @property
    def active_adapters(self) -> int:
        return self.adapters.num_frozen

    def stored_parameters(self) -> int:
        """Adapter parameters a saved set holds: kept adapters + one α (and one logit for LiteLoRA) per task."""
        per_task = self.method.task_parameters
        return sum(self.adapters.adapter_parameter_count(r) for r in self.adapter_ranks()) + per_task * len(
            self.tasks
        )

    @property
    def method(self) -> Method:
        return method_of(self.config.method)

    def run_params(self) -> dict:
        """What made the set, for its training run: the configuration."""
        return self.config.to_dict()

    def head_parameters(self) -> int:
        return sum(p.numel() for p in self.heads.parameters())

    def adapter_ranks(self) -> list[int]:
        """Rank of each kept adapter, in storage order."""
        return next(iter(self.adapters))[1].ranks

    # -- task lifecycle ----------------------------------------------------------------------------
    def begin_task(self, task: Task) -> int:
        """Open a gate slot, a new (or, for sequential LoRA, the continued) adapter and the task's head."""
        overlap = set(task.classes) & set(self.classes)
        if overlap and self.config.head not in KNOWN_CLASS_HEADS:
            raise ValueError(
                f"task {task.name!r} brings classes already learned by earlier tasks: {sorted(overlap)}; with the "
                f"{self.config.head!r} head (one head per task) every task must bring new classes: the "
                f"{', '.join(KNOWN_CLASS_HEADS)} heads absorb more data for known classes"
            )
        method, opening = self.method, self.method.opening(len(self.tasks))
        if opening == "none":
            self.gate.begin_task()  # a slot for the task's bookkeeping; no adapter
        else:
            if method.normalises_directions:
                self.adapters.normalise()  # the previous task's direction is used normalised from now on
            self.gate.begin_task(init_alpha=method.initial_magnitude)
            if method.resets_magnitudes():
                self.gate.reset_alpha(self.config.sdlora_alpha_init)
            if opening == "continue":
                self.adapters.resume_latest()
            else:
                self.adapters.new_adapter(self.config.adapter.rank, self.config.recruit_space == "null")
        self.heads.add_task(len(task.classes)).to(self.gate.alpha.device)
        return self.gate.current_task

    def end_task(
        self, task: Task, keep: bool | None = None, weighed: list[float] | None = None
    ) -> GateDecision:
        covered = coverage(self)  # measured before a pruned adapter disappears
        chance = chance_coverage(self) if covered is not None else None
        index = len(self.tasks)
        adapted = self.method.adapts(index)
        decision = self.gate.close_task(keep=keep if adapted else False)
        if decision.keep:
            self.adapters.freeze_adapter(slot=decision.task)
        else:
            self.adapters.drop_adapter()  # pruned: neither stored nor computed from now on
        if self.routes is not None:
            self.routes.close(self.adapters.num_frozen - 1 if decision.keep and adapted else None)
        label = self.method.decision(index, decision.decision)
        self.tasks.append(
            TaskRecord(
                task.name,
                list(task.classes),
                label,
                decision.logit,
                task.dataset_id,
                covered,
                chance,
                weighed,
            )
        )
        return decision

    def merge(self, unwrap: bool = False) -> None:
        """Fold all adapters into the backbone weights for inference. `unwrap` also puts the plain nn.Linear
        modules back, so a forward is exactly the plain backbone's (the model cannot train afterwards). A routed
        set merges nothing: which adapters apply depends on the row."""
        if self.routes is not None:
            return
        self.adapters.merge()
        if unwrap:
            for name, layer in self.adapters:
                parent_name, _, child = name.rpartition(".")
                setattr(
                    self.backbone.get_submodule(parent_name) if parent_name else self.backbone,
                    child,
                    layer.base,
                )

    # -- adapter set -------------------------------------------------------------------------------
    def save(self, directory: str | Path, extra: dict | None = None) -> dict:
        """Write this model's adapter set (not the backbone) and return its manifest."""
        if self.gate.task_open:
            raise RuntimeError("cannot save while a task is being trained")
        files: dict[str, bytes] = {}
        adapters = []
        for index, (rank, slot) in enumerate(zip(self.adapter_ranks(), self.adapter_slots(), strict=True)):
            rel, data = tensor_file("adapters", self.adapters.adapter_tensors(index))
            files[rel] = data
            adapters.append({"file": rel, "rank": rank, "slot": slot})
        tasks = []
        for record, head in zip(self.tasks, self.heads.heads, strict=True):
            rel, data = tensor_file("heads", {"weight": head.weight, "bias": head.bias})
            files[rel] = data
            tasks.append({**asdict(record), "head": rel})
        scoring, scoring_file = self.scoring_tensors(), None
        if scoring:
            scoring_file, data = tensor_file("scoring", scoring)
            files[scoring_file] = data
        bases, bases_file = self.adapters.input_bases(), None
        if bases:
            bases_file, data = tensor_file("spaces", bases)
            files[bases_file] = data
        latest = next(iter(self.adapters))[1].latest_unnormalised if adapters else False
        manifest = {
            "format": FORMAT,
            "method": self.config.method,
            "config": self.config.to_dict(),
            "targets": [name for name, _ in self.adapters],
            "adapters": adapters,
            "latest_unnormalised": latest,
            "gate": {
                "alpha": self.gate.alpha.detach().cpu().tolist(),
                "logits": self.gate.logits.cpu().tolist(),
                "keep": self.gate.keep.cpu().tolist(),
            },
            "tasks": tasks,
            "scoring": scoring_file,
            **({"input_bases": bases_file} if bases_file else {}),
            **({"routes": self.routes.manifest()} if self.routes is not None else {}),
            **(extra or {}),
        }
        write_adapter_set(directory, manifest, files)
        return manifest

    def scoring_tensors(self, option: str | None = None) -> dict[str, torch.Tensor]:
        """What a head option (default: the configured one) keeps beyond the linear heads: class statistics
        (never examples), calibration, the aligned classifier."""
        out = {}
        if self.class_stats.num_classes:
            out |= {f"stats.{k}": v for k, v in self.class_stats.tensors().items()}
        if len(self.heads.calibration):
            out["calibration"] = self.heads.calibration
        if self.heads.aligned_weight is not None:
            out |= {"aligned.weight": self.heads.aligned_weight, "aligned.bias": self.heads.aligned_bias}
        if self.ridge.num_classes:
            out |= {f"ridge.{k}": v for k, v in self.ridge.tensors().items()}
        if self.routes is not None:
            out |= {f"routing.{k}": v for k, v in self.routes.tensors().items()}
        keep = STORED[option or self.config.head]
        return {k: v for k, v in out.items() if k.startswith(keep)} if keep else {}

    def load_scoring(self, tensors: dict[str, torch.Tensor]) -> None:
        stats = {k.removeprefix("stats."): v for k, v in tensors.items() if k.startswith("stats.")}
        if stats:
            self.class_stats = ClassStatistics.from_tensors(stats)
        if "calibration" in tensors:
            self.heads.calibration = tensors["calibration"]
        if "aligned.weight" in tensors:
            self.heads.aligned_weight, self.heads.aligned_bias = (
                tensors["aligned.weight"],
                tensors["aligned.bias"],
            )
        ridge = {k.removeprefix("ridge."): v for k, v in tensors.items() if k.startswith("ridge.")}
        if ridge:
            self.ridge = RidgeHead.from_tensors(ridge)

    def adapter_slots(self) -> list[int]:
        """The task (gate slot) that recruited each kept adapter."""
        return next(iter(self.adapters))[1].slots.tolist()

    @classmethod
    def load(cls, directory: str | Path, backbone: nn.Module | None = None, tokenizer=None) -> ContinualModel:
        """Rebuild a model from an adapter set; `backbone` must be a fresh (un-adapted) copy if given."""
        manifest = read_manifest(directory)
        config = TrainConfig.from_dict(manifest["config"])
        config.adapter.targets = tuple(manifest["targets"])
        model = cls(config, backbone, tokenizer)
        gate = manifest["gate"]
        model.gate.load_state(gate["alpha"], gate["logits"], gate["keep"])
        for entry in manifest["adapters"]:  # push_frozen moves the tensors to the model's device
            model.adapters.push_frozen(read_tensor_file(directory, entry["file"]), slot=entry["slot"])
        for _, layer in model.adapters:
            layer.latest_unnormalised = bool(manifest["latest_unnormalised"])
        for entry in manifest["tasks"]:
            state = read_tensor_file(directory, entry.pop("head"))
            model.heads.add_task(state["weight"].shape[0]).to(model.gate.alpha.device).load_state_dict(state)
            model.tasks.append(TaskRecord(**entry))
        scoring = read_tensor_file(directory, manifest["scoring"]) if manifest.get("scoring") else {}
        if scoring:
            model.load_scoring(scoring)
        if manifest.get("routes"):
            routing = {k.removeprefix("routing."): v for k, v in scoring.items() if k.startswith("routing.")}
            model.routes = Routes.load(manifest["routes"], routing, config.ridge_dim, config.seed)
        if manifest.get("input_bases"):
            model.adapters.load_input_bases(read_tensor_file(directory, manifest["input_bases"]))
        return model
