"""The LiteLoRA gate: one magnitude α_i and one logit l_i per task, shared by every adapted matrix.

While task t trains, old kept tasks have fixed logits > 0 (β = 1); the current task's β_t is a hard 0/1
value in the forward pass with a straight-through gradient to l_t (docs/method.md §3). Noise is added
only in phase 2 (`sampling = True`) and only to l_t. After phase 2, the task is kept iff l_t > 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from pipeline.adapters.config import GateConfig


@dataclass(frozen=True)
class GateDecision:
    task: int
    keep: bool
    logit: float

    @property
    def decision(self) -> str:
        """'recruit' keeps the task's new adapter; 'reuse' relies on the adapters that already exist."""
        return "recruit" if self.keep else "reuse"


def gate_noise(shape: torch.Size, like: torch.Tensor, kind: str) -> torch.Tensor:
    u = torch.rand(shape, device=like.device, dtype=like.dtype)
    if kind == "gumbel":  # what the official code draws: one standard Gumbel(0, 1) sample
        return -torch.log(-torch.log(u + 1e-20) + 1e-20)
    return torch.log(u + 1e-20) - torch.log1p(-u + 1e-20)  # logistic: difference of two Gumbels


def straight_through_gate(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hard 1[z > 0] forward, d/dz sigmoid(z/τ) backward."""
    soft = torch.sigmoid(z / temperature)
    hard = (z > 0).to(soft.dtype)
    return hard + (soft - soft.detach())  # bracketed so the forward value is exactly 0.0 or 1.0


class LiteLoRAGate(nn.Module):
    def __init__(self, config: GateConfig | None = None):
        super().__init__()
        self.config = config or GateConfig()
        self.alpha = nn.Parameter(torch.empty(0))
        self.register_buffer("logits", torch.empty(0))  # decided logits of closed tasks
        self.register_buffer("keep", torch.empty(0, dtype=torch.bool))
        self.current_logit = nn.Parameter(torch.tensor(self.config.init_logit), requires_grad=False)
        self.task_open = False
        self.sampling = False  # phase 2: noisy current logit, samples recorded for the sparsity term
        self._samples: list[torch.Tensor] = []
        self._shared_sample: torch.Tensor | None = None

    @property
    def num_tasks(self) -> int:
        return self.alpha.numel()

    @property
    def current_task(self) -> int:
        if not self.task_open:
            raise RuntimeError("no task is being trained: call begin_task() first")
        return self.num_tasks - 1

    def begin_task(self, init_alpha: float | None = None) -> int:
        init = self.config.init_alpha if init_alpha is None else init_alpha
        new = torch.full((1,), init, dtype=self.alpha.dtype, device=self.alpha.device)
        self.alpha = nn.Parameter(
            torch.cat([self.alpha.detach(), new]), requires_grad=self.alpha.requires_grad
        )
        with torch.no_grad():
            self.current_logit.fill_(self.config.init_logit)
        self.task_open = True
        return self.num_tasks - 1

    def reset_alpha(self, value: float) -> None:
        """SD-LoRA re-creates every magnitude at a fixed value at the start of each task."""
        with torch.no_grad():
            self.alpha.fill_(value)

    def current_beta(self) -> torch.Tensor:
        """β_t for one adapted matrix; in phase 2 each call is one independent sample (per-matrix mode)."""
        self.current_task  # noqa: B018 - raises when no task is open
        z = self.current_logit
        if not self.sampling:
            return straight_through_gate(z, self.config.temperature)
        if self.config.sampling == "shared" and self._shared_sample is not None:
            beta = self._shared_sample
        else:
            beta = straight_through_gate(
                z + gate_noise(z.shape, z, self.config.noise), self.config.temperature
            )
            self._shared_sample = beta
        self._samples.append(beta)
        return beta

    def sparsity_penalty(self) -> torch.Tensor:
        """R = mean over the adapted matrices of |β_t| (normalised by 2L so λ does not scale with depth)."""
        if not self._samples:
            return self.current_logit.new_zeros(())
        return torch.stack(self._samples).abs().mean()

    def clear_samples(self) -> None:
        """Call once per optimisation step: forgets the samples of the last forward pass."""
        self._samples.clear()
        self._shared_sample = None

    def close_task(self, keep: bool | None = None) -> GateDecision:
        """Freeze l_t and α_t; keep iff l_t > 0 unless the method forces the decision (task 0, SD-LoRA)."""
        task = self.current_task
        logit = float(self.current_logit.detach())
        keep = logit > 0 if keep is None else keep
        dev = self.logits.device
        self.logits = torch.cat([self.logits, torch.tensor([logit], dtype=self.logits.dtype, device=dev)])
        self.keep = torch.cat([self.keep, torch.tensor([keep], device=dev)])
        self.task_open = False
        self.sampling = False
        self.clear_samples()
        return GateDecision(task=task, keep=keep, logit=logit)

    def load_state(self, alpha: list[float], logits: list[float], keep: list[bool]) -> None:
        """Restore a closed gate (from an adapter-set manifest)."""
        dev = self.alpha.device
        self.alpha = nn.Parameter(torch.tensor(alpha, dtype=torch.float32, device=dev), requires_grad=False)
        self.logits = torch.tensor(logits, dtype=torch.float32, device=dev)
        self.keep = torch.tensor(keep, dtype=torch.bool, device=dev)
        self.task_open = False
