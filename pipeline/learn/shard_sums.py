"""Statistics of rows spread over DDP ranks: each rank sums its own shard, and one all-reduce adds the ranks' sums.

A streamed task's rows are split between the Ray Train workers (orchestrator/shard_rows.py); what the heads fit on
is sums over rows (Σ φφᵀ, per-class Σ φ and counts, a drift map's moments), so every rank ends with the whole
task's statistics while no rank ever holds another's rows. `shard` says whether a rank's rows are its own share
(False: every rank holds every row, as an in-memory task does, and nothing is combined). Collectives run on
the device the process group reduces on (the GPU under NCCL, the CPU under gloo), in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

BISECTION_STEPS = 64
"""Rounds of a distributed order statistic: one per bit of a float64, so every rank takes as many whatever the
data (collectives must match)."""


def spread(shard: bool) -> bool:
    """Whether rows marked `shard` have siblings on other ranks to combine with."""
    return shard and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _device() -> torch.device:
    """NCCL reduces tensors on this process's GPU, gloo on the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def summed(tensors: Sequence[torch.Tensor], shard: bool) -> list[torch.Tensor]:
    """Every rank's `tensors` added up, in one all-reduce for all of them: float64 on the CPU, in their shapes."""
    tensors = [t.detach().double().cpu() for t in tensors]
    if not spread(shard):
        return tensors
    flat = torch.cat([t.reshape(-1) for t in tensors]).to(_device())
    dist.all_reduce(flat)
    parts = flat.cpu().split([t.numel() for t in tensors])
    return [part.reshape(t.shape) for part, t in zip(parts, tensors, strict=True)]


def maxed(values: torch.Tensor, shard: bool) -> torch.Tensor:
    """The elementwise maximum of every rank's `values` (float64, on the CPU)."""
    values = values.detach().double().cpu()
    if not spread(shard):
        return values
    out = values.to(_device())
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out.cpu()


def differs_anywhere(before: torch.Tensor, after: torch.Tensor, shard: bool) -> bool:
    """Whether the rows changed on any rank: every rank must take the same branch around a collective."""
    return bool(maxed(torch.tensor([float(not torch.equal(before, after))]), shard)[0])


def kth_smallest(values: torch.Tensor, k: int, shard: bool) -> torch.Tensor:
    """Per row of `values` [C, n] (non-negative float64), the (k+1)-th smallest of the row over every rank's columns:
    exact, by bisection on the float64 bit patterns (ordered as integers for non-negative numbers), with one
    all-reduce of C counts a round. Only counts travel, never a value of a row."""
    if not spread(shard):
        return values.kthvalue(k + 1, dim=1).values
    bits = values.abs().contiguous().view(torch.int64)  # abs: -0.0 would sort below every positive pattern
    lo = torch.zeros(len(values), dtype=torch.int64)
    hi = _exact_max_bits(bits, shard)
    for _ in range(BISECTION_STEPS):
        mid = lo + (hi - lo) // 2
        (below,) = summed([(bits <= mid[:, None]).sum(1)], shard)
        enough = below >= k + 1
        hi, lo = torch.where(enough, mid, hi), torch.where(enough, lo, mid + 1)
    return lo.view(torch.float64)


def _exact_max_bits(bits: torch.Tensor, shard: bool) -> torch.Tensor:
    """Per row, the largest bit pattern on any rank (as int64: a float64 round trip would lose low bits)."""
    local = bits.max(dim=1).values if bits.shape[1] else torch.zeros(len(bits), dtype=torch.int64)
    out = local.to(_device())
    dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out.cpu()
