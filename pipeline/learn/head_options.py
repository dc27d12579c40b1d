"""Head options: how a set turns adapted features into scores over every class seen (`TrainConfig.head`).

    linear      the paper's per-task heads, trained with their adapter (the reference; biased to recent tasks)
    prototype   cosine similarity to each class's mean adapted feature
    aligned     one classifier over all classes, re-fitted after every task on features sampled from each
                class's Gaussian (classifier alignment, as in SLCA, Zhang et al., ICCV 2023)
    calibrated  the linear heads, each with a scale and bias fitted on its own task's features
    ridge       ridge regression to one-hot labels from running sums of the features (ridge.py, after RanPAC,
                McDonnell et al., NeurIPS 2023)

Only the linear heads train with the adapter; the other options are fitted after the task closes, from the
task's features and the stored class statistics. They never change what the adapters learn, so one
training run can be scored under every option (the bench does).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from pipeline.learn.adapted_features import RowFeatures
from pipeline.learn.class_stats import ClassStatistics
from pipeline.learn.shard_sums import spread, summed
from pipeline.learn.task import Task

HeadOption = Literal["linear", "prototype", "aligned", "calibrated", "ridge"]
HEAD_OPTIONS: tuple[str, ...] = ("linear", "prototype", "aligned", "calibrated", "ridge")
SCORE_SCALE = 10.0
"""Cosines lie in [-1, 1] and ridge scores near [0, 1]; scaled so that a softmax over them gives usable
probabilities (argmax unchanged)."""


STORED = {
    "linear": (),
    "prototype": ("stats.means", "stats.counts"),
    "aligned": ("stats.", "aligned."),
    "calibrated": ("calibration",),
    "ridge": ("ridge.", "routing."),
}
"""Which scoring tensors (by name prefix) a set trained with each option keeps beyond its linear heads."""


KNOWN_CLASS_HEADS = ("ridge", "prototype", "aligned")
"""Head options that keep one entry per class (sums or statistics), so a later task's rows of a known class add
to it. The per-task heads (`linear`, `calibrated`) would hold a class twice."""


def needs_statistics(options: tuple[str, ...]) -> bool:
    return bool({"prototype", "aligned"} & set(options))


def needs_drift_reference(model, options: tuple[str, ...]) -> bool:
    """Whether fitting `options` after the next task needs the task's features from before it trained."""
    if not model.method.adapts(len(model.tasks)) or model.routes is not None:
        return False  # a task that adapts nothing, or only the rows routed to it, moves no earlier feature
    stored = model.class_stats.num_classes if needs_statistics(options) else 0
    return model.config.drift_compensation and bool(
        stored or ("ridge" in options and model.ridge.num_classes)
    )


def check_fittable(model, options: tuple[str, ...]) -> None:
    """Refuse, before any training, an option whose state for earlier tasks the set does not have."""
    for option in options:
        if option not in HEAD_OPTIONS:
            raise ValueError(f"unknown head option {option!r}; choose one of {', '.join(HEAD_OPTIONS)}")
    lacking = [
        o
        for o in options
        if o in ("prototype", "aligned") and model.class_stats.num_classes != len(model.classes)
    ]
    if "ridge" in options and model.routes is None and model.ridge.num_classes != len(model.classes):
        lacking.append("ridge")
    if "calibrated" in options and len(model.heads.calibration) != len(model.tasks):
        lacking.append("calibrated")
    if lacking:
        raise ValueError(
            f"head option {lacking[0]!r} needs what it fits after every task, but the set's earlier tasks were "
            f"trained with head {model.config.head!r}; keep that head or start a new lineage"
        )


def classifier(model, option: str) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Every option as one linear map over all classes: (weight [C, d], bias [C], normalise features first)."""
    heads = model.heads
    if option in ("linear", "calibrated") and len(model.classes) != sum(len(t.classes) for t in model.tasks):
        raise ValueError(
            f"the {option!r} head keeps one head per task, and a later task brought a known class again: score "
            f"this set with one of {', '.join(KNOWN_CLASS_HEADS)}"
        )
    if option == "linear":
        return torch.cat([h.weight for h in heads.heads]), torch.cat([h.bias for h in heads.heads]), False
    if option == "calibrated":
        scale = torch.cat(
            [c[0].expand(h.out_features) for c, h in zip(heads.calibration, heads.heads, strict=True)]
        )
        shift = torch.cat(
            [c[1].expand(h.out_features) for c, h in zip(heads.calibration, heads.heads, strict=True)]
        )
        weight, bias, _ = classifier(model, "linear")
        scale, shift = scale.to(weight.device), shift.to(weight.device)
        return weight / scale[:, None], (bias - shift) / scale, False
    if option == "prototype":
        means = F.normalize(model.class_stats.means, dim=-1)
        return SCORE_SCALE * means, torch.zeros(len(means)), True
    if option == "ridge":
        if model.ridge.dim:
            raise ValueError("a ridge head over random features is not one linear map of the features")
        return SCORE_SCALE * model.ridge.weight, torch.zeros(model.ridge.num_classes), True
    if option == "aligned":
        return heads.aligned_weight, heads.aligned_bias, False
    raise ValueError(f"unknown head option {option!r}; choose one of {', '.join(HEAD_OPTIONS)}")


def score(model, features: torch.Tensor, option: str) -> torch.Tensor:
    """Scores over every class seen, in head order, for already computed features."""
    if model.routes is not None:  # the configuration allows only the ridge head
        return SCORE_SCALE * model.routes.scores(features)
    if option == "ridge" and model.ridge.dim:
        return SCORE_SCALE * model.ridge.scores(features)
    weight, bias, normalise = classifier(model, option)
    if normalise:
        features = F.normalize(features, dim=-1)
    return features @ weight.to(features.device, features.dtype).T + bias.to(features.device, features.dtype)


def fit_heads(model, task: Task, options: tuple[str, ...], rows: RowFeatures) -> None:
    """After `task` closed: update the class statistics and fit what each option in `options` needs.

    `rows` holds the task's training rows' features under the model now and, for drift, under the model as it
    was before the task (`rows.before`). When they are this rank's share of the rows (`rows.shard`), every
    statistic is summed over the ranks (shard_sums.py): each rank fits the same heads from the whole task."""
    labels = model.class_index(task.classes)[rows.labels]  # global class indices
    cfg, shard = model.config, rows.shard
    drift = rows.before is not None and cfg.drift_compensation
    if model.routes is not None:
        model.routes.add(rows.features, labels, len(model.classes), rows.ridge_held, shard)
        return
    if needs_statistics(options):
        if drift:
            model.class_stats.compensate_drift(rows.before, rows.features, cfg.drift, shard)
        model.class_stats.add_rows(rows.features, labels, len(model.classes), shard)
    if "aligned" in options:
        model.heads.aligned_weight, model.heads.aligned_bias = align_classifier(
            model.heads,
            model.class_stats,
            steps=cfg.align_steps,
            seed=cfg.seed + len(model.tasks),
            rows=model.first_head_rows(),
        )
    if "calibrated" in options:
        model.heads.calibration = torch.cat(
            [model.heads.calibration, calibration_of(model.heads.heads[-1], rows.features, shard)]
        )
    if "ridge" in options:
        ridge = model.ridge
        if drift:
            ridge.compensate_drift(rows.before, rows.features, cfg.drift, shard)
        ridge.add(rows.features, labels, len(model.classes), rows.ridge_held, shard)
        ridge.fit()


def calibration_of(head: torch.nn.Linear, features: torch.Tensor, shard: bool = False) -> torch.Tensor:
    """[[scale, bias]] standardising the head's top logit on its own task's features (`shard`: this rank's share
    of them; the mean and spread are of every rank's)."""
    with torch.no_grad():
        top = head(features.to(head.weight.device)).max(dim=1).values.float().cpu()
    if not spread(shard):
        return torch.stack([top.std().clamp_min(1e-6), top.mean()]).reshape(1, 2)
    n, total = summed([torch.tensor(float(len(top))), top.sum()], shard)
    mean = total / n
    (squares,) = summed([(top.double() - mean).square().sum()], shard)
    std = (squares / (n - 1)).sqrt()  # unbiased, as torch.std
    return torch.stack([std.clamp_min(1e-6), mean]).float().reshape(1, 2)


def align_classifier(
    heads,
    stats: ClassStatistics,
    *,
    steps: int,
    seed: int,
    rows: torch.Tensor | None = None,
    per_class: int = 32,
    lr: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One linear classifier over every class, started from the trained heads (`rows`: each class's row among
    them, for classes more than one task brought) and fitted by cross-entropy on features drawn from the class
    Gaussians (deterministic for a seed, so every DDP rank agrees)."""
    weight = torch.cat([h.weight.detach().float().cpu() for h in heads.heads])
    bias = torch.cat([h.bias.detach().float().cpu() for h in heads.heads])
    if rows is not None:
        weight, bias = weight[rows], bias[rows]
    weight, bias = weight.clone().requires_grad_(True), bias.clone().requires_grad_(True)
    optimizer = torch.optim.SGD([weight, bias], lr=lr, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    with torch.enable_grad():
        for _ in range(steps):
            x, y = stats.sample(per_class, generator)
            loss = F.cross_entropy(x @ weight.T + bias, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return weight.detach(), bias.detach()
