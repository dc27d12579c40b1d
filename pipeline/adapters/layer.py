"""SD-LoRA on one nn.Linear: frozen directions stacked into one pair of matrices, plus the task being trained.

    h = W x + Σ_{kept i} α_i · B_i A_i x / n_i  +  β_t · α_t · B_t A_t x

A recruit confined to the null space (TrainConfig.recruit_space = "null") trains A_t but is used as
A_t (I − U Uᵀ), U the basis of the earlier tasks' inputs to this layer (null_space.py); that product is what it
keeps, so a kept adapter, a merge and an export are the same maths either way.

Routed recruits (TrainConfig.recruit_space = "routed", learn/routing.py) switch adapters per row: `row_mask`
[batch, kept + 1] holds, for every row, 1 for each kept adapter on the path of the expert the row was routed to
(the last column: the adapter being trained), so one forward serves rows of several experts.

The frozen factors of all kept adapters live in one (Σr × d_in) / (d_out × Σr) pair, so the cost of a
forward pass is one pair of matmuls whatever the number of adapters. The direction being trained is
unnormalised (B_t = 0 at init, its norm is 0), and so is the latest kept one until the next task starts.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.adapters.null_space import extend_basis, outside

if TYPE_CHECKING:
    from pipeline.adapters.gate import LiteLoRAGate


def direction_norm(a: torch.Tensor, b: torch.Tensor, mode: str, eps: float) -> torch.Tensor:
    """n = ‖B‖_F‖A‖_F ('factors', official code) or ‖BA‖_F ('product', paper) via r×r Gram matrices; 1 ('none':
    the adapter keeps the scale it was trained at)."""
    if mode == "none":
        return a.new_ones(())
    if mode == "factors":
        return b.norm() * a.norm() + eps
    # ‖BA‖_F² = tr(Aᵀ Bᵀ B A) = tr((BᵀB)(AAᵀ)): two r×r Grams, never the d_out×d_in product.
    return torch.sqrt(((b.T @ b) * (a @ a.T)).sum().clamp_min(0)) + eps


class SDLoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, gate: LiteLoRAGate, norm: str = "factors", norm_eps: float = 1e-8):
        super().__init__()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        # The gate is shared by every adapted layer and registered once on the model; registering it here
        # as well would copy its state into every layer's state_dict.
        object.__setattr__(self, "gate", gate)
        self.norm, self.norm_eps = norm, norm_eps
        d_out, d_in = base.weight.shape
        kw = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.register_buffer("frozen_a", torch.empty(0, d_in, **kw))
        self.register_buffer("frozen_b", torch.empty(d_out, 0, **kw))
        self.register_buffer("norms", torch.empty(0, **kw))
        self.register_buffer("slots", torch.empty(0, dtype=torch.long, device=base.weight.device))
        self.register_buffer("row_owner", torch.empty(0, dtype=torch.long, device=base.weight.device))
        self.register_buffer("input_basis", torch.empty(d_in, 0, **kw))
        self.in_null_space = False
        """Whether the trainable adapter's A acts only outside `input_basis`."""
        self.row_mask: torch.Tensor | None = None
        """Routed sets: which adapters act on each row of the next forward (None: all of them, on every row)."""
        self.ranks: list[int] = []
        self.latest_unnormalised = False
        self.lora_a: nn.Parameter | None = None
        self.lora_b: nn.Parameter | None = None
        self.merged = False

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    @property
    def num_frozen(self) -> int:
        return len(self.ranks)

    # -- lifecycle ---------------------------------------------------------------------------------
    def new_adapter(
        self, rank: int, init: tuple[torch.Tensor, torch.Tensor] | None = None, null_space: bool = False
    ) -> None:
        """Start the trainable adapter: A Kaiming-uniform(a=√5), B = 0 (an exact no-op), or given factors.
        `null_space`: A is used as A (I − U Uᵀ), blind to the earlier tasks' inputs."""
        self.in_null_space = null_space
        w = self.base.weight
        if init is None:
            a = torch.empty(rank, self.in_features, device=w.device, dtype=w.dtype)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            b = torch.zeros(self.out_features, rank, device=w.device, dtype=w.dtype)
        else:
            a, b = (t.detach().clone().to(w) for t in init)
        self.lora_a, self.lora_b = nn.Parameter(a), nn.Parameter(b)

    def trainable_a(self) -> torch.Tensor:
        """The trainable adapter's down-projection as it acts: A, or A (I − U Uᵀ) in the null space."""
        return outside(self.lora_a, self.input_basis) if self.in_null_space else self.lora_a

    def extend_input_basis(self, gram: torch.Tensor, energy: float) -> None:
        """Add the directions of a finished task's inputs (their Σ xxᵀ) that the basis misses (null_space.py)."""
        self.input_basis = extend_basis(self.input_basis, gram.to(self.input_basis), energy)

    def freeze_adapter(self, slot: int) -> None:
        """Append the trained adapter to the frozen stack; it stays unnormalised until normalise()."""
        a, b = self.trainable_a().detach(), self.lora_b.detach()
        self.push_frozen(a, b, slot)
        self.latest_unnormalised = True
        self.lora_a = self.lora_b = None

    def drop_adapter(self) -> None:
        self.lora_a = self.lora_b = None

    def push_frozen(self, a: torch.Tensor, b: torch.Tensor, slot: int) -> None:
        a, b = a.to(self.frozen_a), b.to(self.frozen_b)
        self.frozen_a = torch.cat([self.frozen_a, a])
        self.frozen_b = torch.cat([self.frozen_b, b], dim=1)
        n = direction_norm(a, b, self.norm, self.norm_eps).reshape(1).to(self.norms)
        self.norms = torch.cat([self.norms, n])
        self.slots = torch.cat([self.slots, self.slots.new_tensor([slot])])
        self.ranks.append(a.shape[0])
        self.row_owner = torch.repeat_interleave(
            torch.arange(len(self.ranks), device=self.slots.device),
            torch.tensor(self.ranks, device=self.slots.device),
        )

    def pop_frozen(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Remove and return the latest frozen factors (sequential LoRA keeps training one adapter)."""
        r = self.ranks.pop()
        a, b = self.frozen_a[-r:], self.frozen_b[:, -r:]
        self.frozen_a, self.frozen_b = self.frozen_a[:-r], self.frozen_b[:, :-r]
        self.norms, self.slots = self.norms[:-1], self.slots[:-1]
        self.row_owner = self.row_owner[: self.row_owner.numel() - r]
        self.latest_unnormalised = False
        return a, b

    def frozen_factors(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        start = sum(self.ranks[:index])
        stop = start + self.ranks[index]
        return self.frozen_a[start:stop], self.frozen_b[:, start:stop]

    # -- maths -------------------------------------------------------------------------------------
    def frozen_scales(self) -> torch.Tensor:
        """α_i / n_i per frozen adapter (the latest one divided by 1 while it is still unnormalised)."""
        inv = 1.0 / self.norms
        if self.latest_unnormalised and inv.numel():
            inv = torch.cat([inv[:-1], inv.new_ones(1)])
        return self.gate.alpha[self.slots].to(inv) * inv

    def delta_factors(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        """(A, s, B) with ΔW = B diag(s) A over every active direction, frozen and trainable."""
        parts_a, parts_s, parts_b = [], [], []
        if self.num_frozen:
            parts_a.append(self.frozen_a)
            parts_s.append(self.frozen_scales()[self.row_owner])
            parts_b.append(self.frozen_b)
        if self.lora_a is not None:
            slot = self.gate.current_task
            scale = self.gate.current_beta() * self.gate.alpha[slot]
            parts_a.append(self.trainable_a())
            parts_s.append(scale.to(self.lora_a).expand(self.lora_a.shape[0]))
            parts_b.append(self.lora_b)
        if not parts_a:
            return None
        if len(parts_a) == 1:
            return parts_a[0], parts_s[0], parts_b[0]
        return torch.cat(parts_a), torch.cat(parts_s), torch.cat(parts_b, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:
            return out
        factors = self.delta_factors()
        if factors is None:
            return out
        a, s, b = factors
        down = F.linear(x, a.to(x.dtype)) * s.to(x.dtype)
        if self.row_mask is not None:
            down = down * self.direction_mask(down.shape[-1]).to(x.dtype).view(
                x.shape[0], *([1] * (x.dim() - 2)), -1
            )
        return out + F.linear(down, b.to(x.dtype))

    def direction_mask(self, directions: int) -> torch.Tensor:
        """`row_mask` per direction: each kept adapter's column repeated over its rank, the trainable one's last."""
        mask = self.row_mask[:, self.row_owner]
        trainable = directions - mask.shape[1]
        return torch.cat([mask, self.row_mask[:, -1:].expand(-1, trainable)], dim=1) if trainable else mask

    @torch.no_grad()
    def merge(self) -> None:
        """Fold every active direction into W for inference (zero adapter overhead; cannot train after)."""
        if self.merged:
            return
        factors = self.delta_factors()
        if factors is not None:
            a, s, b = factors
            self.base.weight += ((b * s) @ a).to(self.base.weight.dtype)
        self.merged = True

    def extra_repr(self) -> str:
        return f"frozen_adapters={self.num_frozen}, ranks={self.ranks}, trainable={self.lora_a is not None}"
