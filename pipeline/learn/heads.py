"""Per-task linear classifier heads; class-incremental logits are the concatenation over all tasks.

The heads also carry what the `calibrated` and `aligned` head options fit after each task (head_options.py).
"""

from __future__ import annotations

import torch
from torch import nn


class TaskHeads(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.heads = nn.ModuleList()
        self.calibration = torch.zeros(0, 2)
        """[tasks, 2]: scale and bias of each head's logits (calibrated option)."""
        self.aligned_weight: torch.Tensor | None = None
        self.aligned_bias: torch.Tensor | None = None
        """One classifier over every class, re-fitted after each task (aligned option)."""

    def add_task(self, num_classes: int) -> nn.Linear:
        ref = next(iter(self.heads.parameters()), None)
        head = nn.Linear(self.dim, num_classes)
        # The method's head init: Kaiming-uniform with linear gain, bias 0.
        nn.init.kaiming_uniform_(head.weight, nonlinearity="linear")
        nn.init.zeros_(head.bias)
        if ref is not None:
            head.to(ref.device)
        for old in self.heads:
            old.requires_grad_(False)
        self.heads.append(head)
        return head

    @property
    def sizes(self) -> list[int]:
        return [h.out_features for h in self.heads]

    def offsets(self) -> list[int]:
        out, total = [], 0
        for n in self.sizes:
            out.append(total)
            total += n
        return out

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.cat([h(features) for h in self.heads], dim=-1)
