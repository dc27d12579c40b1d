"""The input subspace earlier tasks fed an adapted layer, and the projector that keeps a new adapter out of it.

After a task, a layer's inputs x (one row per token or pixel) give the uncentred second moment G = Σ xxᵀ (d_in ×
d_in: a statistic, never an example). The layer keeps an orthonormal basis U (d_in × k) of the directions that
carry the earlier tasks' input energy; a recruited adapter's down-projection is used as A_eff = A (I − U Uᵀ), so
ΔW x = B A_eff x ≈ 0 for every earlier input (GPM, Saha et al. 2021; InfLoRA, Liang & Li 2024).

The basis grows by GPM's energy criterion (its Eq. 9, which is Eq. 5 when U is empty): with P = I − U Uᵀ, the share
of the task's energy U already holds is 1 − tr(P G P) / tr(G); the top eigenvectors of P G P are added, fewest
first, until the held share reaches the threshold.
"""

from __future__ import annotations

import torch


def extend_basis(basis: torch.Tensor, gram: torch.Tensor, energy: float) -> torch.Tensor:
    """`basis` (d × k, orthonormal columns) grown by the fewest directions of `gram` (d × d, Σ xxᵀ of one task's
    inputs) outside it that bring the share of the task's input energy inside the basis to at least `energy`."""
    if not 0 < energy <= 1:
        raise ValueError(f"energy threshold must be in (0, 1] (got {energy})")
    gram = gram.double()
    u = basis.to(gram)
    total = gram.diagonal().sum()
    if total <= 0 or u.shape[1] >= gram.shape[0]:
        return basis
    projector = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device) - u @ u.T
    rest = projector @ gram @ projector
    values, vectors = torch.linalg.eigh((rest + rest.T) / 2)
    values, vectors = values.flip(0).clamp_min(0), vectors.flip(1)
    held = 1 - values.sum() / total
    if held >= energy:
        return basis
    reached = torch.nonzero(held + torch.cumsum(values, 0) / total >= energy - 1e-12)
    add = int(reached[0]) + 1 if reached.numel() else values.numel()
    # Never a direction without energy: those are U's own (zero outside it up to rounding) or unused ones.
    add = min(add, int((values > 1e-10 * total).sum()), gram.shape[0] - u.shape[1])
    if add == 0:
        return basis
    # Re-orthonormalised: the new eigenvectors are orthogonal to U only up to rounding.
    grown, _ = torch.linalg.qr(torch.cat([u, vectors[:, :add]], dim=1))
    return grown.to(basis)


def outside(a: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """A (I − U Uᵀ): the rows of a down-projection with every direction of the basis removed."""
    if basis.shape[1] == 0:
        return a
    u = basis.to(a)
    return a - (a @ u) @ u.T
