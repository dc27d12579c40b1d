"""SD-LoRA layer maths: fused forward == naive per-adapter sum, Gram-matrix norms, merging."""

import pytest
import torch
from torch import nn

from pipeline.adapters import GateConfig, LiteLoRAGate, SDLoRALinear
from pipeline.adapters.layer import direction_norm


def _layer(norm="factors", d_in=12, d_out=10, ranks=(2, 3, 4), dtype=torch.float64):
    torch.manual_seed(0)
    gate = LiteLoRAGate(GateConfig()).to(dtype)
    for _ in ranks:
        gate.begin_task(init_alpha=0.0)
        gate.close_task(keep=True)
    with torch.no_grad():
        gate.alpha.copy_(torch.tensor([0.7, -1.3, 2.1], dtype=dtype))
    layer = SDLoRALinear(nn.Linear(d_in, d_out).to(dtype), gate, norm=norm)
    factors = []
    for slot, r in enumerate(ranks):
        a, b = torch.randn(r, d_in, dtype=dtype), torch.randn(d_out, r, dtype=dtype)
        layer.push_frozen(a, b, slot)
        factors.append((slot, a, b))
    return layer, gate, factors


def _naive(layer, gate, factors, x, latest_unnormalised=False):
    out = layer.base(x)
    for i, (slot, a, b) in enumerate(factors):
        n = direction_norm(a, b, layer.norm, layer.norm_eps)
        if latest_unnormalised and i == len(factors) - 1:
            n = 1.0
        out = out + gate.alpha[slot] * (x @ a.T @ b.T) / n
    return out


@pytest.mark.parametrize("norm", ["factors", "product"])
@pytest.mark.parametrize("latest_unnormalised", [False, True])
def test_fused_forward_matches_naive_sum_in_float64(norm, latest_unnormalised):
    layer, gate, factors = _layer(norm)
    layer.latest_unnormalised = latest_unnormalised
    x = torch.randn(5, 7, 12, dtype=torch.float64)
    fused, naive = layer(x), _naive(layer, gate, factors, x, latest_unnormalised)
    assert ((fused - naive).norm() / naive.norm()).item() < 1e-6


def test_fused_forward_includes_the_trainable_adapter_unnormalised():
    layer, gate, factors = _layer()
    gate.begin_task(init_alpha=0.5)
    layer.new_adapter(rank=3)
    with torch.no_grad():
        layer.lora_b.normal_()
    x = torch.randn(4, 12, dtype=torch.float64)
    expected = _naive(layer, gate, factors, x) + 0.5 * (x @ layer.lora_a.T @ layer.lora_b.T)
    assert torch.allclose(layer(x), expected, rtol=1e-10, atol=1e-10)


def test_new_adapter_adds_nothing_to_the_output():
    layer, gate, _ = _layer()
    x = torch.randn(4, 12, dtype=torch.float64)
    before = layer(x)
    gate.begin_task()
    layer.new_adapter(rank=4)
    # Equal in exact arithmetic (B = 0), not bit for bit: the new block widens the stacked matmuls from 9 to 13
    # inner terms, and a BLAS may sum another shape in another order, so the last bits can move. rtol=1e-12 is
    # ~4000 float64 ulps: rounding, never a real contribution (a rank-4 block with B ≠ 0 moves outputs by ~1).
    torch.testing.assert_close(layer(x), before, rtol=1e-12, atol=1e-12)


def test_product_norm_from_gram_matrices_equals_frobenius_norm_of_product():
    a, b = torch.randn(4, 30, dtype=torch.float64), torch.randn(20, 4, dtype=torch.float64)
    assert torch.isclose(direction_norm(a, b, "product", 0.0), (b @ a).norm(), rtol=1e-12)
    assert torch.isclose(direction_norm(a, b, "factors", 0.0), b.norm() * a.norm(), rtol=1e-12)


def test_merged_layer_gives_the_unmerged_output():
    layer, _, _ = _layer()
    x = torch.randn(6, 12, dtype=torch.float64)
    unmerged = layer(x)
    layer.merge()
    assert layer.merged
    assert torch.allclose(layer(x), unmerged, rtol=1e-10, atol=1e-12)


def test_pop_frozen_returns_the_latest_factors_and_shrinks_the_stack():
    layer, _, factors = _layer()
    a, b = layer.pop_frozen()
    assert torch.equal(a, factors[-1][1]) and torch.equal(b, factors[-1][2])
    assert layer.num_frozen == 2 and layer.frozen_a.shape[0] == 5 and layer.row_owner.numel() == 5
