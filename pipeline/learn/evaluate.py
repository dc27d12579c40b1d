"""Class-incremental (global argmax over every seen class) and task-incremental evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.learn.backbone import autocast
from pipeline.learn.task import Task


@dataclass
class StageScores:
    cil_correct: list[int]
    til_correct: list[int]
    counts: list[int]


@torch.no_grad()
def predict_logits(model, inputs: list[str], batch_size: int) -> torch.Tensor:
    """Logits over every class seen so far, on CPU in float32."""
    model.eval()
    device = model.gate.alpha.device
    out = []
    for start in range(0, len(inputs), batch_size):
        enc = model.encode(inputs[start : start + batch_size])
        with autocast(device):
            logits = model(enc["input_ids"].to(device), enc["attention_mask"].to(device))
        out.append(logits.float().cpu())
    return torch.cat(out)


def evaluate_stage(model, tasks: list[Task]) -> StageScores:
    """Score every task seen so far; `tasks[j]` must be the task that owns head j."""
    offsets, sizes = model.heads.offsets(), model.heads.sizes
    cil, til, counts = [], [], []
    for j, task in enumerate(tasks):
        logits = predict_logits(model, task.test_inputs, model.config.eval_batch_size)
        labels = torch.tensor(task.test_labels)
        cil.append(int((logits.argmax(1) == labels + offsets[j]).sum()))
        own = logits[:, offsets[j] : offsets[j] + sizes[j]]
        til.append(int((own.argmax(1) == labels).sum()))
        counts.append(len(task.test_labels))
    return StageScores(cil, til, counts)
