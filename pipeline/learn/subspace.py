"""How much the kept adapters overlap: principal angles between the column spaces of their updates.

For adapters i, j of one layer, col(ΔW_i) = col(B_i). With orthonormal bases Q_i, Q_j the cosines of the
principal angles are the singular values of Q_iᵀ Q_j; overlap = mean cos² ∈ [0, 1] (1 = same subspace).
"""

from __future__ import annotations

import torch


def column_basis(b: torch.Tensor) -> torch.Tensor:
    q, r = torch.linalg.qr(b.double())
    keep = r.diagonal().abs() > 1e-10 * r.diagonal().abs().max().clamp_min(1e-30)
    return q[:, keep]


def overlap(b_i: torch.Tensor, b_j: torch.Tensor) -> float:
    qi, qj = column_basis(b_i), column_basis(b_j)
    if qi.shape[1] == 0 or qj.shape[1] == 0:
        return 0.0
    cos = torch.linalg.svdvals(qi.T @ qj)
    return float((cos**2).sum() / min(qi.shape[1], qj.shape[1]))


def coverage(model) -> float | None:
    """How much of the adapter being trained lies in the span of the kept ones: per layer the mean cos² of the
    principal angles between col(B_t) and col([B_kept]), averaged over layers. None without both."""
    values = []
    for _, layer in model.adapters:
        if layer.lora_b is None or layer.num_frozen == 0:
            return None
        values.append(overlap(layer.lora_b.detach(), layer.frozen_b))
    return sum(values) / len(values) if values else None


def chance_coverage(model) -> float:
    """What `coverage` a random rank-r subspace would get against the kept span: dim(kept) / d, per layer."""
    values = [min(1.0, sum(layer.ranks) / layer.out_features) for _, layer in model.adapters]
    return sum(values) / len(values)


def overlap_matrices(model) -> dict[str, list[list[float]]]:
    """Per adapted layer, the K × K overlap between kept adapters (K = model.active_adapters)."""
    out = {}
    for name, layer in model.adapters:
        bs = [layer.frozen_factors(k)[1] for k in range(layer.num_frozen)]
        out[name] = [[overlap(bi, bj) for bj in bs] for bi in bs]
    return out


def mean_overlap(per_layer: dict[str, list[list[float]]]) -> list[list[float]]:
    mats = list(per_layer.values())
    if not mats or not mats[0]:
        return []
    k = len(mats[0])
    return [[sum(m[i][j] for m in mats) / len(mats) for j in range(k)] for i in range(k)]
