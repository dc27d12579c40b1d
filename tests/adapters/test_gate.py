"""The LiteLoRA gate: straight-through gradient, decision rule, noise placement, sparsity normalisation."""

import pytest
import torch

from pipeline.adapters import GateConfig, LiteLoRAGate
from pipeline.adapters import gate as gate_module


def _open_gate(**kw) -> LiteLoRAGate:
    gate = LiteLoRAGate(GateConfig(**kw))
    gate.begin_task()
    gate.current_logit.requires_grad_(True)
    return gate


def test_straight_through_gradient_reaches_the_gate_logit():
    gate = _open_gate(init_logit=0.5, temperature=2.0)
    beta = gate.current_beta()
    assert beta.item() == 1.0  # hard value in the forward pass
    (3.0 * beta).backward()
    s = torch.sigmoid(torch.tensor(0.5 / 2.0))
    assert torch.isclose(gate.current_logit.grad, 3.0 * s * (1 - s) / 2.0)


@pytest.mark.parametrize("logit, keep", [(0.3, True), (1e-7, True), (0.0, False), (-0.2, False)])
def test_task_is_kept_iff_its_logit_is_strictly_positive(logit, keep):
    gate = _open_gate()
    with torch.no_grad():
        gate.current_logit.fill_(logit)
    assert gate.current_beta().item() == float(logit > 0)
    decision = gate.close_task()
    assert decision.keep is keep and decision.decision == ("recruit" if keep else "reuse")
    assert gate.keep.tolist() == [keep] and not gate.task_open


def test_no_noise_outside_phase_two():
    gate = _open_gate(init_logit=0.01)
    assert all(gate.current_beta().item() == 1.0 for _ in range(200))
    assert gate.sparsity_penalty().item() == 0.0  # nothing recorded outside phase 2


def test_sparsity_term_is_the_mean_of_per_matrix_samples_and_only_on_samples_push_down(monkeypatch):
    noise = iter(torch.linspace(-1.0, 1.0, 24))  # 24 = 2L adapted matrices, one sample each
    monkeypatch.setattr(gate_module, "gate_noise", lambda shape, like, kind: next(noise).to(like))
    gate = _open_gate(init_logit=0.1, temperature=1.0)
    gate.sampling = True
    betas = torch.stack([gate.current_beta() for _ in range(24)])
    z = 0.1 + torch.linspace(-1.0, 1.0, 24)
    assert torch.equal(betas.detach(), (z > 0).float())
    penalty = gate.sparsity_penalty()
    assert torch.isclose(penalty, (z > 0).float().mean())
    penalty.backward()
    # d/dl (1/2L) Σ|β_i| = (1/2L) Σ_{on samples} σ'(z_i): an off sample is exactly 0, where |x| has zero subgradient.
    s = torch.sigmoid(z)
    expected = ((s * (1 - s)) * (z > 0)).sum() / 24
    assert torch.isclose(gate.current_logit.grad, expected)


def test_shared_sampling_draws_one_sample_per_step():
    torch.manual_seed(0)
    gate = _open_gate(init_logit=0.0 + 1e-3, sampling="shared")
    gate.sampling = True
    first = [gate.current_beta() for _ in range(10)]
    assert all(b is first[0] for b in first)
    gate.clear_samples()
    assert gate.sparsity_penalty().item() == 0.0


def test_gumbel_noise_is_biased_towards_on_as_in_the_reference_code():
    torch.manual_seed(0)
    gate = _open_gate(init_logit=1e-6)
    gate.sampling = True
    on = torch.stack([gate.current_beta().detach() for _ in range(20000)]).mean().item()
    assert (
        abs(on - (1 - torch.exp(-torch.exp(torch.tensor(1e-6)))).item()) < 0.015
    )  # P(on) = 1 − e^{−e^l} ≈ 0.63


def test_init_logit_must_be_positive():
    with pytest.raises(ValueError, match="init_logit"):
        GateConfig(init_logit=0.0)
