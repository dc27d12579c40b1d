"""Task-selected LoRA on one nn.Linear: h = W x + B̂_j Â_j x, with j the task the caller names.

Two ways to store the per-task factors (docs/method.md §8):

    lora   one LoRA per task, kept as trained (the storage reference "per-task PEFT LoRA")
    share  one basis per side, U_A (d_in × k) and U_B (d_out × k), and per-task coefficients L (k × p):
           Â_j = (U_A L_A^j)ᵀ, B̂_j = U_B L_B^j. Task 0 trains a plain LoRA that seeds the basis; a later task
           trains only its coefficients plus a temporary rank-φ expansion (P Q) with the basis frozen; after the
           task the basis is recomputed from the centred stack of every task's factors and all tasks are
           re-projected onto it.

Both need the task id at inference, so they are scored task-incrementally only. A Share stream in the service
stores exactly `tensors()`: the basis and every task's coefficients.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def basis_of(columns: torch.Tensor, size: float, pad: torch.Generator | None = None) -> torch.Tensor:
    """Top left singular vectors of the row-centred `columns` (d × n): `size` of them if an int, else as many as
    reach that fraction of the variance. Only informative directions are kept, unless `pad` (a seeded generator)
    is given: then a fixed `size` is filled up with random directions orthogonal to them, as the official code's
    fixed k keeps k columns whatever the stack's rank (a basis from one rank-r LoRA has at most r − 1 informative
    directions; the others give the next task's coefficients room to move)."""
    centred = columns - columns.mean(dim=1, keepdim=True)
    u, s, _ = torch.linalg.svd(centred.double(), full_matrices=False)
    energy = s.square()
    # Rank as numpy's matrix_rank counts it, at the precision the factors were trained in.
    informative = int(
        (s > torch.finfo(columns.dtype).eps * max(columns.shape) * s.max().clamp_min(1e-30)).sum()
    )
    if isinstance(size, float):
        k = (
            int(
                torch.searchsorted(
                    energy.cumsum(0) / energy.sum().clamp_min(1e-30),
                    torch.tensor(size, dtype=energy.dtype, device=energy.device),
                )
            )
            + 1
        )
    else:
        k = size
    kept = u[:, : max(1, min(k, informative))]
    if pad is not None and isinstance(size, int) and kept.shape[1] < min(size, columns.shape[0]):
        # Drawn on the CPU (a seeded generator gives the same directions on any device), used where the basis is.
        extra = torch.randn(columns.shape[0], min(size, columns.shape[0]) - kept.shape[1], generator=pad)
        extra = extra.to(kept) - kept @ (kept.T @ extra.to(kept))  # orthogonal to the informative directions
        kept = torch.cat([kept, torch.linalg.qr(extra).Q], dim=1)
    return kept.to(columns.dtype)


class TaskLoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, kind: str, rank: int):
        super().__init__()
        if kind not in ("lora", "share"):
            raise ValueError(f"unknown kind {kind!r}")
        self.base, self.kind, self.rank = base, kind, rank
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.stored_a: list[torch.Tensor] = []  # lora: Aᵀ (d_in × p); share: L_A (k × p)
        self.stored_b: list[torch.Tensor] = []  # lora: B (d_out × p); share: L_B (k × p)
        self.basis_a: torch.Tensor | None = None
        self.basis_b: torch.Tensor | None = None
        self.train_params = nn.ParameterDict()
        self.task: int | None = None
        """The stored task applied at inference; None while a task trains (or before any)."""
        self.reprojection_errors: list[float] = []

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    # -- training ----------------------------------------------------------------------------------
    def begin_task(self, expansion: int) -> None:
        w = self.base.weight
        kw = {"device": w.device, "dtype": w.dtype}
        if self.kind == "lora" or self.basis_a is None:  # a plain LoRA: A Kaiming, B = 0
            a = torch.empty(self.rank, self.in_features, **kw)
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))
            params = {"a": a, "b": torch.zeros(self.out_features, self.rank, **kw)}
        else:  # coefficients from the previous task, plus the temporary expansion (none when φ = 0)
            u = lambda *shape: torch.empty(*shape, **kw).uniform_(-0.5, 0.5)
            params = {"coef_a": self.stored_a[-1].clone(), "coef_b": self.stored_b[-1].clone()}
            if expansion:
                params |= {
                    "pa": u(self.in_features, expansion),
                    "qa": u(expansion, self.rank),
                    "pb": u(self.rank, expansion),
                    "qb": u(expansion, self.out_features),
                }
        self.train_params = nn.ParameterDict({k: nn.Parameter(v) for k, v in params.items()})
        self.task = None

    def _trained_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The task being trained, tall: (Âᵀ d_in × p, B̂ d_out × p)."""
        p = self.train_params
        if "a" in p:
            return p["a"].T, p["b"]
        a, b = self.basis_a @ p["coef_a"], self.basis_b @ p["coef_b"]
        if "pa" in p:
            a, b = a + p["pa"] @ p["qa"], b + (p["pb"] @ p["qb"]).T
        return a, b

    @torch.no_grad()
    def end_task(
        self,
        basis_size: float,
        fold_expansion: bool = True,
        reproject: str = "all",
        pad: torch.Generator | None = None,
    ) -> None:
        """Store the trained task; Share re-computes its basis and re-projects tasks onto it.

        `fold_expansion`: the task keeps its whole trained factor U L + P Q (ours); False keeps only U L, as the
        official code does (P Q then shapes the new basis but not the task). `reproject`: "all" earlier tasks
        (ours, and the code's NLG pipeline) or only the "previous" one (the code's NLU script: older tasks keep
        coefficients of a basis that has moved on). `pad`: see `basis_of`."""
        a, b = (t.detach().clone() for t in self._trained_factors())
        own_a, own_b = a, b
        if self.kind == "share" and "coef_a" in self.train_params and not fold_expansion:
            p = self.train_params
            own_a, own_b = self.basis_a @ p["coef_a"].detach(), self.basis_b @ p["coef_b"].detach()
        self.train_params = nn.ParameterDict()
        if self.kind == "lora":
            self.stored_a.append(a)
            self.stored_b.append(b)
            return
        earlier = range(len(self.stored_a)) if reproject == "all" else range(len(self.stored_a))[-1:]
        old = [self.stored_factors(j) for j in earlier]
        # The new basis comes from the trained factors (expansion included); the task keeps `own`.
        self.basis_a = basis_of(torch.cat([x for x, _ in old] + [a], dim=1), basis_size, pad)
        self.basis_b = basis_of(torch.cat([y for _, y in old] + [b], dim=1), basis_size, pad)
        for j, (x, y) in zip(earlier, old, strict=True):
            self.stored_a[j], self.stored_b[j] = self.basis_a.T @ x, self.basis_b.T @ y
        self.stored_a.append(self.basis_a.T @ own_a)
        self.stored_b.append(self.basis_b.T @ own_b)
        errors = [
            float((r - basis @ basis.T @ r).norm() / r.norm().clamp_min(1e-12))
            for tall, basis in (([x for x, _ in old], self.basis_a), ([y for _, y in old], self.basis_b))
            for r in tall
        ]
        self.reprojection_errors.append(sum(errors) / len(errors) if errors else 0.0)

    # -- maths -------------------------------------------------------------------------------------
    def stored_factors(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Task j's factors, tall: (Âᵀ d_in × p, B̂ d_out × p)."""
        if self.kind == "lora":
            return self.stored_a[j], self.stored_b[j]
        return self.basis_a @ self.stored_a[j], self.basis_b @ self.stored_b[j]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.train_params:
            a, b = self._trained_factors()
        elif self.task is not None:
            a, b = self.stored_factors(self.task)
        else:
            return out
        return out + F.linear(F.linear(x, a.T.to(x.dtype)), b.to(x.dtype))

    def _apply(self, fn, recurse: bool = True):
        """`.to()`, `.double()` … also move the stored factors and the basis: plain tensors, not buffers (their
        number grows with the tasks)."""
        super()._apply(fn, recurse)
        self.stored_a = [fn(t) for t in self.stored_a]
        self.stored_b = [fn(t) for t in self.stored_b]
        if self.basis_a is not None:
            self.basis_a, self.basis_b = fn(self.basis_a), fn(self.basis_b)
        return self

    # -- storage -----------------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        """What a saved set keeps of this layer: `a`, `b` stacked over tasks [tasks, rows, p] (coefficients for
        Share, the factors themselves for one LoRA per task), and Share's `basis_a`, `basis_b`."""
        if self.train_params:
            raise RuntimeError("cannot store a layer while a task is being trained")
        out = {"a": torch.stack(self.stored_a), "b": torch.stack(self.stored_b)} if self.stored_a else {}
        if self.basis_a is not None:
            out |= {"basis_a": self.basis_a, "basis_b": self.basis_b}
        return out

    def load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        w = self.base.weight
        move = lambda t: t.to(device=w.device, dtype=w.dtype)
        self.stored_a = [move(t) for t in tensors["a"]] if "a" in tensors else []
        self.stored_b = [move(t) for t in tensors["b"]] if "b" in tensors else []
        self.basis_a = move(tensors["basis_a"]) if "basis_a" in tensors else None
        self.basis_b = move(tensors["basis_b"]) if "basis_b" in tensors else None

    def stored_parameters(self) -> int:
        stored = sum(t.numel() for t in self.stored_a + self.stored_b)
        if self.basis_a is not None:
            stored += self.basis_a.numel() + self.basis_b.numel()
        return stored

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.train_params.values())
