"""Null-space recruits on one layer: the basis of earlier inputs (GPM's energy criterion on Σ xxᵀ) and an adapter
that acts only outside it."""

import torch
from torch import nn

from pipeline.adapters import GateConfig, LiteLoRAGate, SDLoRALinear
from pipeline.adapters.null_space import extend_basis

D_IN, D_OUT = 16, 10


def _inputs_in(span: int, n: int, seed: int) -> torch.Tensor:
    """n inputs inside the first `span` coordinates, with decreasing scale per coordinate."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, D_IN, dtype=torch.float64)
    x[:, :span] = torch.randn(n, span, generator=g, dtype=torch.float64) * torch.linspace(3, 1, span).double()
    return x


def _captured(basis: torch.Tensor, gram: torch.Tensor) -> float:
    return float((basis.T @ gram @ basis).trace() / gram.trace())


def test_the_basis_is_the_fewest_directions_holding_the_energy_share_and_never_an_example():
    x = torch.randn(500, D_IN, dtype=torch.float64) * torch.logspace(0, -2, D_IN).double()
    gram = x.T @ x
    basis = extend_basis(torch.empty(D_IN, 0, dtype=torch.float64), gram, energy=0.99)
    k = basis.shape[1]
    # Statistics of 500 rows come out as at most d_in directions: no row of x is kept.
    assert 0 < k < D_IN
    assert torch.allclose(basis.T @ basis, torch.eye(k, dtype=torch.float64), atol=1e-10)
    assert _captured(basis, gram) >= 0.99
    assert _captured(basis[:, : k - 1], gram) < 0.99  # one direction fewer would not do


def test_a_task_whose_inputs_the_basis_already_holds_adds_no_direction():
    old = _inputs_in(4, 200, seed=0)
    basis = extend_basis(torch.empty(D_IN, 0, dtype=torch.float64), old.T @ old, energy=0.999)
    again = _inputs_in(4, 200, seed=1)
    assert extend_basis(basis, again.T @ again, energy=0.999).shape == basis.shape
    new = _inputs_in(8, 200, seed=2)
    grown = extend_basis(basis, new.T @ new, energy=0.999)
    assert basis.shape[1] < grown.shape[1] <= 8
    assert (basis - grown @ (grown.T @ basis)).abs().max() < 1e-10  # the earlier directions stay held


def _recruit(null_space: bool, basis: torch.Tensor) -> SDLoRALinear:
    torch.manual_seed(0)
    gate = LiteLoRAGate(GateConfig()).double()
    gate.begin_task(init_alpha=1.0)
    layer = SDLoRALinear(nn.Linear(D_IN, D_OUT).double(), gate)
    layer.input_basis = basis
    layer.new_adapter(4, null_space=null_space)
    with torch.no_grad():  # a trained adapter: B no longer zero
        layer.lora_b.copy_(torch.randn(D_OUT, 4, dtype=torch.float64))
    return layer


def test_a_null_space_recruit_leaves_earlier_inputs_alone_and_still_moves_new_ones():
    old, new = _inputs_in(6, 300, seed=0), torch.randn(50, D_IN, dtype=torch.float64)
    basis = extend_basis(torch.empty(D_IN, 0, dtype=torch.float64), old.T @ old, energy=0.9999)
    moved = {}
    for null_space in (False, True):
        layer = _recruit(null_space, basis)
        moved[null_space] = [(layer(x) - layer.base(x)).norm() / layer.base(x).norm() for x in (old, new)]
    (full_old, full_new), (null_old, null_new) = moved[False], moved[True]
    assert null_old < 1e-6 * full_old
    assert null_new > 0.3 * full_new


def test_the_kept_adapter_is_the_projected_one_so_merging_folds_it_exactly():
    old = _inputs_in(6, 300, seed=0)
    basis = extend_basis(torch.empty(D_IN, 0, dtype=torch.float64), old.T @ old, energy=0.9999)
    layer = _recruit(True, basis)
    x = torch.randn(20, D_IN, dtype=torch.float64)
    before = layer(x)
    layer.gate.close_task(keep=True)
    layer.freeze_adapter(slot=0)
    assert (layer.frozen_a @ basis).abs().max() < 1e-10
    assert torch.allclose(layer(x), before, atol=1e-12)
    layer.merge()
    assert torch.allclose(layer(x), before, atol=1e-10)
