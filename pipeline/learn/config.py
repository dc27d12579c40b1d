"""The configuration of one continual-learning run, as plain typed data (defaults run on a 2-core CPU)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Literal

from pipeline.adapters.config import AdapterConfig, GateConfig
from pipeline.learn.backbone import BackboneConfig
from pipeline.learn.class_stats import DRIFT_COMPENSATIONS
from pipeline.learn.head_options import HEAD_OPTIONS, HeadOption
from pipeline.methods import DEFAULT_METHOD, method_of, stream_methods

FIRST_EPOCHS_CAP = 10
RECRUIT_SPACES = ("full", "null", "routed")


def check_recruit_space(name: object) -> None:
    """ValueError unless `name` is a recruit space (`TrainConfig.recruit_space`)."""
    if name not in RECRUIT_SPACES:
        raise ValueError(f"recruits must be one of {', '.join(RECRUIT_SPACES)} (got {name!r})")


@dataclass
class TrainConfig:
    method: str = DEFAULT_METHOD
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    optimizer: Literal["adamw", "sgd"] = "adamw"
    """The papers use SGD (momentum 0.9) for 20 epochs; AdamW reaches the same place in 2 epochs on CPU."""
    lr: float = 2e-3
    """Learning rate of the adapter factors and the head (`lrate`, `init_lr`)."""
    alpha_lr: float = 2e-3
    weight_decay: float = 2e-4
    """Applied to the magnitudes in phase 1 and to the gate logit in phase 2; adapters and head get none."""
    epochs: int = 2
    """Epochs of LiteLoRA's phase 1 and of the baselines' single phase (task 0 too unless `first_examples`)."""
    first_examples: int | None = 3000
    """Task 0, which adapts the bare backbone, trains whole epochs until it has seen this many examples (at least
    `epochs`, at most 10 × `epochs`; None: `epochs`): the first adaptation is the one later tasks mostly reuse (what
    RanPAC and APER do by hand), and a budget in examples gives a 2-class first task as many steps as a 4-class one
    (docs/method.md)."""
    adapter_lr: float | None = None
    """Learning rate of the adapter factors (None: `lr`); lower than the head's, a slow learner (SLCA)."""
    relearn_magnitudes: bool = False
    """LiteLoRA phase 1 re-learns every task's α on normalised directions (the paper). False trains α_t alone and
    normalises nothing, so a reused task leaves the features of every earlier task exactly as they were."""
    batch_size: int = 32
    lr_milestones: tuple[float, ...] = (0.6, 0.8)
    lr_decay: float = 0.5
    phase2_epochs: int = 1
    phase2_batch_size: int = 16
    phase2_lr: float = 0.05
    sdlora_alpha_init: float = 0.8
    """SD-LoRA re-creates every magnitude at this value at the start of each task."""
    head: HeadOption = "ridge"
    """How the set scores classes (head_options.py); "linear" is the paper's per-task heads."""
    stats_rank: int = 16
    """Principal directions kept per class covariance (prototype and aligned heads)."""
    drift_compensation: bool = True
    """Move stored class means along the feature drift each later task causes."""
    no_regret: bool = False
    """Keep a recruit the gate asks for only if the set scores better with it than with a reuse (a tie reuses), on
    validation cuts of every task's training rows (learn/no_regret.py)."""
    recruit_space: Literal["full", "null", "routed"] = "full"
    """Where a recruited adapter may act: on every input direction ("full"); only outside the subspace earlier
    tasks fed each adapted layer ("null", GPM/InfLoRA), so the features of earlier classes barely move ("null"
    records each task's input statistics when it closes: one more forward pass over its training rows); or only on
    the rows routed to it ("routed", learn/routing.py: features of earlier classes never move; two forward passes
    a prediction, ridge head only; with `no_regret` a recruit is weighed on the task's own held-out rows,
    routing.weigh_routed_recruit)."""
    null_space_energy: float = 0.97
    """Share of each task's input energy (Σ xxᵀ) per layer that the basis of earlier inputs must hold (GPM)."""
    drift: Literal["means", "linear"] = "means"
    """How (with `drift_compensation`): each class mean along nearby rows' drift, or the whole second moment
    along one affine map fitted on the task's rows (docs/method.md §4, feature drift)."""
    align_steps: int = 300
    ridge_dim: int = 0
    """Ridge head: random ReLU features of this size (RanPAC's M), 0 = the normalised features themselves."""
    eval_batch_size: int = 128
    seed: int = 1993
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.method not in stream_methods():  # asked each time: a method may be registered after import
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(stream_methods())}")
        if self.head not in HEAD_OPTIONS:
            raise ValueError(f"unknown head option {self.head!r}; choose one of {', '.join(HEAD_OPTIONS)}")
        if self.drift not in DRIFT_COMPENSATIONS:
            raise ValueError(
                f"unknown drift compensation {self.drift!r}; choose one of {', '.join(DRIFT_COMPENSATIONS)}"
            )
        check_recruit_space(self.recruit_space)
        if self.recruit_space == "routed":
            self._check_routable()
        if not 0 < self.null_space_energy <= 1:
            raise ValueError(f"null_space_energy must be in (0, 1] (got {self.null_space_energy})")
        for name in ("epochs", "batch_size", "phase2_batch_size", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")

    def _check_routable(self) -> None:
        """Routed recruits rely on every kept adapter staying as it was (an expert never changes) and score with
        the ridge head (learn/routing.py)."""
        method = method_of(self.method)
        moves_kept = method.resets_magnitudes() or method.opening(1) == "continue"
        moves_kept |= method.trains_magnitudes(1) and not method.only_the_task_magnitude(
            self.relearn_magnitudes
        )
        if moves_kept or not method.adapts(0) or self.head != "ridge":
            raise ValueError(
                "routed recruits need a method that adapts and never changes a kept adapter, and the ridge head "
                f"(got method {self.method!r}, head {self.head!r})"
            )

    def task_epochs(self, task_index: int, rows: int) -> int:
        """Phase-1 epochs of task `task_index` (0-based) with `rows` training rows."""
        if task_index or not self.first_examples:
            return self.epochs
        # Capped: a tiny first task would otherwise repeat its few rows for ever.
        return max(
            self.epochs, min(math.ceil(self.first_examples / max(rows, 1)), FIRST_EPOCHS_CAP * self.epochs)
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def for_backbone(cls, name: str, method: str = DEFAULT_METHOD) -> TrainConfig:
        """The defaults of a new lineage on backbone `name` running `method` (with the method's own defaults, e.g.
        Share's epochs and per-task heads). Vision backbones adapt at rank 4: the setting our Split-FashionMNIST
        numbers were measured with (docs/method.md)."""
        config = cls(backbone=BackboneConfig(name=name), method=method)
        config = config.with_overrides(**method_of(method).defaults)
        return config.with_overrides(rank=4) if config.backbone.reads_images else config

    def running(self, method: str) -> TrainConfig:
        """This configuration running `method`: what it left at the generic defaults takes `method`'s (Share's
        epochs and per-task heads), what it set stays."""
        generic = TrainConfig.for_backbone(self.backbone.name)
        specific = TrainConfig.for_backbone(self.backbone.name, method)
        changes = {
            f.name: getattr(specific, f.name)
            for f in fields(self)
            if f.name not in ("method", "backbone") and getattr(self, f.name) == getattr(generic, f.name)
        }
        return replace(self, method=method, **changes)

    def for_first_drop(self, method: str | None, recruits: str | None) -> TrainConfig:
        """A new lineage's configuration when its first drop names a method or a recruit space (task.json)."""
        config = self.running(method) if method else self
        return config.with_overrides(recruit_space=recruits)

    def with_overrides(self, **changes) -> TrainConfig:
        """A copy with knobs changed by their field name, wherever they live (`rank` → adapter, `sparsity` →
        gate, `lr` → here); None keeps the current value."""
        changes = {k: v for k, v in changes.items() if v is not None}
        parts = {}
        for name in ("adapter", "gate"):
            part = getattr(self, name)
            mine = {k: changes.pop(k) for k in list(changes) if k in {f.name for f in fields(part)}}
            if mine:
                parts[name] = replace(part, **mine)
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"unknown training option(s): {', '.join(sorted(unknown))}")
        return replace(self, **changes, **parts)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        """A configuration as `to_dict` wrote it; fields added since keep the behaviour the set was trained with."""
        data = {**BEFORE_FIELDS_EXISTED, **data}
        nested = {"backbone": BackboneConfig, "adapter": AdapterConfig, "gate": GateConfig}
        for key, kind in nested.items():
            if isinstance(data.get(key), dict):
                value = dict(data[key])
                if key == "adapter" and value.get("targets") is not None:
                    value["targets"] = tuple(value["targets"])
                data[key] = kind(**value)
        if "lr_milestones" in data:
            data["lr_milestones"] = tuple(data["lr_milestones"])
        return cls(**data)


BEFORE_FIELDS_EXISTED = {"relearn_magnitudes": True, "first_examples": None, "adapter_lr": None}
"""What a configuration written before these fields existed meant (its sets were trained that way)."""
