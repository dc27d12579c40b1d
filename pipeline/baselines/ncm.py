"""The frozen-backbone nearest-class-mean reference: no adaptation, one mean feature per class.

A continual method is worth shipping only if it beats this, and the frozen encoder with its own head
(docs/method.md §5). Scored with the same class-incremental protocol and metrics as the adapter methods.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from pipeline.learn.backbone import BackboneConfig, embed, load_backbone, pick_device
from pipeline.learn.sequence import SequenceResult
from pipeline.learn.task import Task


def run_ncm(tasks: list[Task], config: BackboneConfig | None = None, device: str = "auto") -> SequenceResult:
    """Cosine nearest-class-mean over frozen features, evaluated after every task like the other methods."""
    config = config or BackboneConfig()
    start = time.perf_counter()
    backbone = load_backbone(config)
    device = pick_device(device)
    backbone.network.to(device)
    result = SequenceResult("ncm-frozen", "prototype")
    means: list[torch.Tensor] = []
    test_features = []
    for t, task in enumerate(tasks):
        task_start = time.perf_counter()
        feats = F.normalize(embed(backbone, task.train_inputs, 128, device), dim=1)
        labels = torch.tensor(task.train_labels)
        means.extend(F.normalize(feats[labels == c].mean(0), dim=0) for c in range(len(task.classes)))
        test_features.append(F.normalize(embed(backbone, task.test_inputs, 128, device), dim=1))
        centroids = torch.stack(means)
        offset, cil, til, counts = 0, [], [], []
        for j, seen in enumerate(tasks[: t + 1]):
            scores = test_features[j] @ centroids.T
            y = torch.tensor(seen.test_labels)
            n = len(seen.classes)
            cil.append(int((scores.argmax(1) == y + offset).sum()))
            til.append(int((scores[:, offset : offset + n].argmax(1) == y).sum()))
            counts.append(len(y))
            offset += n
        result.cil.add_stage(cil, counts)
        result.til.add_stage(til, counts)
        result.decisions.append("none")
        result.trainable_params.append(0)
        result.task_seconds.append(time.perf_counter() - task_start)
    result.head_params = sum(m.numel() for m in means)  # the class means are its only stored state
    result.wall_time = time.perf_counter() - start
    return result
