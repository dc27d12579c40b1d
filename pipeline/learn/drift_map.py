"""The drift a task causes as one affine map of the features, fitted on that task's own rows before and after it
trained (the linear drift compensation of LDC, Gomez-Villa et al., ECCV 2024, and DPCR, He et al., ICML 2025):

    after ≈ before · A + b,   A = I + Δ,   Δ = (Xᵀ X + γ I)⁻¹ Xᵀ R   (X, R: centred `before` and `after − before`)

Ridge towards the identity, not towards zero (DPCR's γ = 1e-9 shrinks to zero, safe only with more rows than
dimensions): a direction the task's rows never excite keeps the identity, so an earlier class lying there stays
where it was instead of collapsing. The intercept b is not penalised, so at large γ the map is a plain shift by
the mean drift. γ is chosen by generalised cross-validation (Golub, Heath & Wahba, 1979): the rotation-invariant
leave-one-out estimate of the error of predicting an unseen row's drift, which is what the map is for. γ = 0 is a
candidate when Xᵀ X has full rank, so an exactly linear drift is recovered to rounding.

Everything is computed from D × D sums a chunk of rows at a time (never the rows twice over in float64); the map
is used once and never stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from pipeline.learn.shard_sums import summed

CHUNK_ROWS = 4096
"""Rows of a task's features taken at a time where a fit converts them to float64."""
RELATIVE_GAMMAS: tuple[float, ...] = (0.0, *(10.0 ** (e / 2) for e in range(-12, 7)))
"""γ over the mean eigenvalue of Xᵀ X: 0, then 1e-6 … 1e3 half a decade apart."""
RANK_TOLERANCE = 1e-10
"""Xᵀ X counts as full rank when its smallest eigenvalue exceeds this fraction of its largest."""


@dataclass(frozen=True)
class DriftMap:
    linear: torch.Tensor  # [D, D] float64: A (rows map as x · A)
    shift: torch.Tensor  # [D] float64: b
    gamma: float
    """The γ generalised cross-validation chose (absolute)."""

    def apply(self, rows: torch.Tensor) -> torch.Tensor:
        return rows.double() @ self.linear + self.shift

    def move_moments(
        self, gram: torch.Tensor, sums: torch.Tensor, counts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Σ φφᵀ and per-class Σ φ of rows every one of which moved by the map, exactly:
        Σ (φA + b)ᵀ(φA + b) = Aᵀ G A + (sA)ᵀ b + bᵀ (sA) + n bᵀ b, with s = Σ φ over every row."""
        a, b = self.linear, self.shift
        total = sums.sum(0) @ a
        moved = (
            a.T @ gram @ a + torch.outer(total, b) + torch.outer(b, total) + counts.sum() * torch.outer(b, b)
        )
        return (moved + moved.T) / 2, sums @ a + counts[:, None] * b


def fit_drift_map(
    before: torch.Tensor,
    after: torch.Tensor,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    shard: bool = False,
) -> DriftMap:
    """The affine map from `before` to `after` (the same rows' features), after `transform` (e.g. the ridge
    head's φ), regularised towards the identity with γ chosen by generalised cross-validation. `shard`: the rows
    are this rank's share, and the sums are added over the ranks (shard_sums.py)."""
    transform = transform or (lambda x: x.double())
    xx = xr = None
    sx = sr = rr = 0.0
    for i in range(0, len(before), CHUNK_ROWS) or range(1):  # no rows: zero sums of the right shapes
        x = transform(before[i : i + CHUNK_ROWS])
        r = transform(after[i : i + CHUNK_ROWS]) - x
        xx = x.T @ x if xx is None else xx + x.T @ x
        xr = x.T @ r if xr is None else xr + x.T @ r
        sx, sr, rr = sx + x.sum(0), sr + r.sum(0), rr + r.square().sum()
    n, xx, xr, sx, sr, rr = summed([torch.tensor(float(len(before))), xx, xr, sx, sr, rr], shard)
    n, rr = float(n), float(rr)
    mean_x, mean_r = sx / n, sr / n
    cov = xx - n * torch.outer(mean_x, mean_x)  # centred: the intercept is not penalised
    cross = xr - n * torch.outer(mean_x, mean_r)
    residual_total = rr - n * float(mean_r.square().sum())
    eigvals, eigvecs = torch.linalg.eigh((cov + cov.T) / 2)
    eigvals = eigvals.clamp_min(0)
    rotated = eigvecs.T @ cross  # the cross moments along each eigenvector of Xᵀ X
    energy = rotated.square().sum(1)
    gamma = _gcv_gamma(eigvals, energy, residual_total, n - 1)
    delta = eigvecs @ (rotated / (eigvals + gamma).clamp_min(1e-300)[:, None])
    linear = torch.eye(len(eigvals), dtype=torch.float64) + delta
    return DriftMap(linear, (mean_x + mean_r) - mean_x @ linear, gamma)


def _gcv_gamma(eigvals: torch.Tensor, energy: torch.Tensor, residual_total: float, dof: int) -> float:
    """argmin over γ of n · ‖R − XΔ_γ‖² / (n − tr H_γ)² from the spectrum of Xᵀ X = V diag(s) Vᵀ alone:
    ‖R − XΔ_γ‖² = ‖R‖² − Σ_k (s_k + 2γ)/(s_k + γ)² · ‖(Vᵀ Xᵀ R)_k‖²,  tr H_γ = Σ_k s_k/(s_k + γ)."""
    scale = float(eigvals.mean())
    full_rank = float(eigvals.min()) > RANK_TOLERANCE * float(eigvals.max())
    best, best_score = None, float("inf")
    for relative in RELATIVE_GAMMAS:
        gamma = relative * scale
        if gamma == 0 and not full_rank:
            continue
        denom = eigvals + gamma
        live = denom > 0
        explained = float(((eigvals[live] + 2 * gamma) / denom[live].square() * energy[live]).sum())
        residual = max(residual_total - explained, 0.0)
        hat = float((eigvals[live] / denom[live]).sum())
        if hat >= dof:  # interpolates every row: no rows left to judge by
            continue
        score = dof * residual / (dof - hat) ** 2
        if score < best_score:
            best, best_score = gamma, score
    return best if best is not None else RELATIVE_GAMMAS[-1] * scale
