"""The frozen reference: the same head fitted on the bare backbone's features, scored on the same rows.

Adapting the backbone is worth its cost only where it beats this number, so the bench reports it beside every
method and every registered version records it. The bare backbone's features never change, so they are
computed once per (backbone, dataset, split) and cached.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pipeline.learn.backbone import BackboneConfig, embed, load_backbone, pick_device
from pipeline.learn.config import TrainConfig
from pipeline.learn.model import ContinualModel
from pipeline.learn.sequence import SequenceResult, run_sequence
from pipeline.learn.task import Task
from pipeline.methods.frozen import METHOD as FROZEN


def backbone_key(config: BackboneConfig) -> str:
    """Names everything that changes a backbone's features (model, revision, pooling, lengths, image size)."""
    return hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()[:16]


class FeatureCache:
    """Frozen features on local disk: `<directory>/<backbone key>/<dataset id>-<split>.safetensors`. Tasks without
    a dataset id (benchmark tasks built in memory, named uniquely) are cached in memory by name."""

    def __init__(
        self, config: BackboneConfig, directory: Path | None = None, device: str = "auto", backbone=None
    ):
        """`backbone`: an already loaded bare backbone for `config` (default: loaded on first use)."""
        self.config, self.device = config, pick_device(device)
        self.directory = directory / backbone_key(config) if directory else None
        self._backbone = backbone
        self._memory: dict[tuple[str, str], torch.Tensor] = {}

    def __call__(self, task: Task, split: str) -> torch.Tensor:
        inputs = task.train_inputs if split == "train" else task.test_inputs
        path = (
            self.directory / f"{task.dataset_id}-{split}.safetensors"
            if self.directory and task.dataset_id
            else None
        )
        if path is not None and path.exists():
            cached = load_file(path)["features"]
            if len(cached) == len(inputs):
                return cached
        key = (task.name, split)
        if path is None and key in self._memory:
            return self._memory[key]
        features = self.compute(inputs)
        if path is None:
            self._memory[key] = features
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.partial")
            save_file({"features": features.contiguous()}, partial)
            partial.replace(path)  # atomic: a reader never sees half a file
        return features

    def backbone(self):
        if self._backbone is None:
            self._backbone = load_backbone(self.config)
            self._backbone.network.to(self.device)
        return self._backbone

    def compute(self, inputs: list) -> torch.Tensor:
        return embed(self.backbone(), inputs, 128, self.device)


def frozen_reference(
    config: TrainConfig,
    tasks: list[Task],
    features: FeatureCache,
    stages: Path | None = None,
    rows: Callable[[Task], Task] | None = None,
) -> SequenceResult:
    """`config`'s head (and recipe, for linear heads) fitted on the bare backbone's features of `tasks`, in order,
    each stage scored on the tasks' held-out rows.

    `stages`: a directory that keeps the reference after every prefix of tasks, named by the backbone, the
    configuration and the dataset ids, so a lineage's next task only fits its own head on top of its parent's
    reference. Tasks before the longest kept prefix need only their held-out rows; `rows(task)` gives a task's
    training rows when it has to be fitted again (a cold cache). When every task's stage is kept, the kept
    accuracy rows come back as they are (the model-level fields, such as `num_classes`, are not recomputed)."""
    frozen = replace(config, method=FROZEN.name, recruit_space="full")  # it never recruits: where is moot
    keys = stage_keys(frozen, tasks) if stages is not None else []
    done = next((k for k in range(len(keys), 0, -1) if (stages / keys[k - 1] / "result.json").exists()), 0)
    kept = stages / keys[done - 1] if done else None
    results = None
    if kept is not None:
        results = {config.head: SequenceResult.from_dict(json.loads((kept / "result.json").read_text()))}
        if done == len(tasks):  # every stage kept (a retried drop): nothing to fit, no backbone to load
            return results[config.head]
    bare = features.backbone()
    tokenizer = getattr(bare, "tokenizer", None)
    model = (
        ContinualModel.load(kept, copy.deepcopy(bare.network), tokenizer)
        if kept is not None
        else ContinualModel(frozen, copy.deepcopy(bare.network), tokenizer)
    )
    needed = [
        task if t < done or task.train_labels or rows is None else rows(task) for t, task in enumerate(tasks)
    ]

    def keep(t: int, result: SequenceResult) -> None:
        target = stages / keys[t]
        if target.exists():
            return
        partial = stages / f"{keys[t]}.{os.getpid()}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        model.save(partial)
        (partial / "result.json").write_text(json.dumps(result.to_dict()))
        try:
            partial.rename(target)  # atomic: a reader sees a whole stage or none
        except OSError:  # another process kept the same stage first
            shutil.rmtree(partial, ignore_errors=True)

    scored, _ = run_sequence(
        needed,
        frozen,
        model=model,
        features=features,
        done=done,
        results=results,
        on_task=keep if keys else None,
    )
    return scored[config.head]


def stage_keys(config: TrainConfig, tasks: list[Task]) -> list[str]:
    """For each prefix of `tasks`, a name for the frozen reference after it (none if a task has no dataset id)."""
    if not all(task.dataset_id for task in tasks):
        return []
    head = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
    keys = []
    for task in tasks:
        head.update(task.dataset_id.encode())
        keys.append(head.copy().hexdigest()[:32])
    return keys
