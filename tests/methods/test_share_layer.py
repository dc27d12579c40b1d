"""Share and one-LoRA-per-task on one linear layer: the basis, the re-projection and what trains."""

import pytest
import torch
from torch import nn

from pipeline.methods.share.layer import TaskLoRALinear, basis_of


def _layer(kind, d_in=12, d_out=10, rank=3):
    torch.manual_seed(0)
    return TaskLoRALinear(nn.Linear(d_in, d_out), kind, rank)


def _train(layer, scale=1.0):
    """Stand in for training: give every trainable tensor random values."""
    with torch.no_grad():
        for p in layer.train_params.values():
            p.copy_(scale * torch.randn_like(p))


def test_the_basis_is_orthonormal_and_sized_by_explained_variance():
    torch.manual_seed(0)
    columns = torch.randn(20, 3) @ torch.diag(torch.tensor([10.0, 3.0, 0.1])) @ torch.randn(3, 9)
    assert basis_of(columns, 0.5).shape[1] == 1
    assert basis_of(columns, 0.95).shape[1] == 2
    u = basis_of(columns, 8)  # more than the centred stack's rank (≤ 3): only informative directions
    assert u.shape[1] == 3
    assert torch.allclose(u.T @ u, torch.eye(3), atol=1e-5)


def test_lora_per_task_applies_exactly_the_selected_tasks_factors():
    layer = _layer("lora")
    trained = []
    for _ in range(2):
        layer.begin_task(expansion=2)
        _train(layer)
        trained.append((layer.train_params["a"].detach().clone(), layer.train_params["b"].detach().clone()))
        layer.end_task(basis_size=4)
    x = torch.randn(5, 12)
    for j, (a, b) in enumerate(trained):
        layer.task = j
        assert torch.allclose(layer(x), layer.base(x) + x @ a.T @ b.T, atol=1e-5)
    assert layer.stored_parameters() == 2 * 3 * (12 + 10)


def test_share_trains_only_coefficients_and_the_expansion_with_the_basis_frozen():
    layer = _layer("share")
    layer.begin_task(expansion=2)
    assert set(layer.train_params) == {"a", "b"}  # task 0 is a plain LoRA that seeds the basis
    _train(layer)
    layer.end_task(basis_size=4)
    basis = layer.basis_a.clone()
    layer.begin_task(expansion=2)
    assert set(layer.train_params) == {"coef_a", "coef_b", "pa", "qa", "pb", "qb"}
    assert layer.train_params["coef_a"].shape == (basis.shape[1], 3)
    assert not any(p is layer.basis_a for p in layer.parameters())
    a, b = layer._trained_factors()
    (a.sum() + b.sum()).backward()
    assert layer.basis_a.grad is None and torch.equal(layer.basis_a, basis)


def test_share_reprojects_every_earlier_task_onto_the_new_basis_and_reports_the_error():
    layer = _layer("share", d_in=16, d_out=16, rank=2)
    for _ in range(3):
        layer.begin_task(expansion=2)
        _train(layer, scale=0.3)
        layer.end_task(basis_size=0.999)
    k_a, k_b = layer.basis_a.shape[1], layer.basis_b.shape[1]
    for j in range(3):
        a, b = layer.stored_factors(j)
        assert a.shape == (16, 2) and b.shape == (16, 2)
        assert torch.allclose(layer.basis_a @ layer.basis_a.T @ a, a, atol=1e-5)  # lives in the basis
    assert layer.stored_parameters() == k_a * 16 + k_b * 16 + 3 * (k_a + k_b) * 2
    assert len(layer.reprojection_errors) == 3 and layer.reprojection_errors[0] == 0.0
    assert all(0.0 <= e < 1.0 for e in layer.reprojection_errors)


def test_an_unknown_storage_kind_is_refused():
    with pytest.raises(ValueError):
        TaskLoRALinear(nn.Linear(2, 2), "nope", 1)


def test_a_padded_fixed_k_keeps_k_orthonormal_columns_with_the_informative_directions_first():
    torch.manual_seed(0)
    columns = torch.randn(20, 4)  # centred rank ≤ 3: a basis from one rank-4 LoRA
    plain = basis_of(columns, 8)
    padded = basis_of(columns, 8, pad=torch.Generator().manual_seed(0))
    assert plain.shape[1] == 3 and padded.shape[1] == 8
    assert torch.allclose(padded.T @ padded, torch.eye(8), atol=1e-5)
    assert torch.allclose(padded[:, :3], plain, atol=1e-6)  # the padding never displaces what the stack holds
    assert basis_of(columns, 0.9, pad=torch.Generator()).shape[1] <= 3, "a k by variance is never padded"


def test_the_official_codes_choices_keep_only_u_l_and_re_project_only_the_previous_task():
    layer = _layer("share", d_in=16, d_out=16, rank=2)
    for _ in range(2):
        layer.begin_task(expansion=2)
        _train(layer, scale=0.3)
        layer.end_task(basis_size=6, fold_expansion=False, reproject="previous")
    oldest = [t.clone() for t in (layer.stored_a[0], layer.stored_b[0])]
    layer.begin_task(expansion=2)
    _train(layer, scale=0.3)
    coef_a = layer.train_params["coef_a"].detach().clone()
    basis_before = layer.basis_a.clone()
    layer.end_task(basis_size=6, fold_expansion=False, reproject="previous")
    # Task 0 keeps the coefficients of a basis that has since moved on; task 2 keeps U L, not U L + P Q.
    # Bit for bit: task 0's stored tensors must not be touched at all (nothing recomputes them).
    assert torch.equal(layer.stored_a[0], oldest[0]) and torch.equal(layer.stored_b[0], oldest[1])
    own = layer.basis_a @ layer.stored_a[2]
    assert torch.allclose(own, layer.basis_a @ layer.basis_a.T @ (basis_before @ coef_a), atol=1e-5)


def test_settings_that_would_break_earlier_tasks_are_refused():
    from pipeline.methods.share.model import ShareConfig

    assert ShareConfig.official(epochs=5).reproject == "previous"
    with pytest.raises(ValueError, match="needs a fixed k that is padded"):
        ShareConfig(basis=0.6, reproject="previous")  # k may change, and older coefficients would not fit
    with pytest.raises(ValueError, match="'all' or 'previous'"):
        ShareConfig(reproject="some")
