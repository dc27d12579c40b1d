"""Linear drift compensation: the head's sums and class statistics move with every row along one affine map
fitted on the new task's rows, exact when the drift is, and not at all when a task changed nothing."""

import pytest
import torch

from pipeline.learn.class_stats import ClassStatistics
from pipeline.learn.config import TrainConfig
from pipeline.learn.model import ContinualModel
from pipeline.learn.recipe import train_task
from pipeline.learn.ridge import RidgeHead, held_out
from tests.learn.small_config import small_config

DIM = 12


def _clusters(seed, classes, rows=40, dim=DIM, dtype=torch.float32):
    """Features of Gaussian class clusters (float64 where a test compares to float64 rounding)."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=generator, dtype=dtype) * 2
    labels = torch.arange(classes).repeat_interleave(rows)
    return centres[labels] + torch.randn(len(labels), dim, generator=generator, dtype=dtype), labels


def _rotation_and_scale(seed, dim=DIM):
    """A drift that is exactly linear in the ridge head's φ = h/‖h‖ too: a rotation (and a scale φ ignores)."""
    q, _ = torch.linalg.qr(
        torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    )
    return 1.7 * q


def _ridge(features, labels, classes):
    head = RidgeHead()
    head.add(features, labels, classes, held_out([f"old row {i}" for i in range(len(labels))]))
    return head


def test_linear_compensation_of_an_exactly_linear_drift_gives_the_sums_of_the_moved_rows():
    old, old_labels = _clusters(0, 3, dtype=torch.float64)
    new_task, _ = _clusters(
        1, 4, dtype=torch.float64
    )  # the recruiting task's rows: 160, more than 12 dimensions
    m = _rotation_and_scale(2)
    compensated, means_only = _ridge(old, old_labels, 3), _ridge(old, old_labels, 3)
    compensated.compensate_drift(new_task, new_task @ m.T, "linear")
    means_only.compensate_drift(new_task, new_task @ m.T, "means")
    oracle = _ridge(old @ m.T, old_labels, 3)  # the same rows, featurised again under the moved model
    for name in ("fit_rows", "held_rows"):
        got, want = getattr(compensated, name), getattr(oracle, name)
        torch.testing.assert_close(got.gram, want.gram, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(got.sums, want.sums, rtol=1e-10, atol=1e-10)
        assert torch.equal(got.counts, want.counts)  # row counts: whole numbers, exact in float64
    # Moving only the means keeps each class's spread as it was measured: not the moved rows' sums.
    assert not torch.allclose(means_only.fit_rows.gram, oracle.fit_rows.gram, rtol=1e-3, atol=1e-3)
    probe = _clusters(3, 3, dtype=torch.float64)[0] @ m.T
    for head in (compensated, means_only, oracle):
        head.fit()
    assert compensated.lam == oracle.lam
    torch.testing.assert_close(compensated.scores(probe), oracle.scores(probe), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(means_only.scores(probe), oracle.scores(probe), rtol=1e-3, atol=1e-3)


def test_a_task_that_changed_nothing_leaves_the_sums_and_statistics_bit_for_bit():
    old, old_labels = _clusters(0, 3)
    new_task, _ = _clusters(1, 4)
    head = _ridge(old, old_labels, 3)
    stats = ClassStatistics.empty(DIM, rank=2)
    stats.add_classes(old, old_labels, 3)
    kept_head = [t.clone() for t in head.tensors().values() if t is not None]
    kept_stats = [t.clone() for t in stats.tensors().values()]
    head.compensate_drift(new_task, new_task.clone(), "linear")
    stats.compensate_drift(new_task, new_task.clone(), "linear")
    # Exact on purpose: an unchanged task must compute nothing at all, not a map close to the identity.
    assert all(
        torch.equal(a, b) for a, b in zip(kept_head, [t for t in head.tensors().values() if t is not None])
    )
    assert all(torch.equal(a, b) for a, b in zip(kept_stats, stats.tensors().values()))


def test_a_linearly_compensated_head_round_trips_through_storage_to_the_same_weights():
    old, old_labels = _clusters(0, 3)
    new_task, _ = _clusters(1, 4)
    head = _ridge(old, old_labels, 3)
    # A drift no map fits exactly, so the moved G is whatever the rounding made it.
    head.compensate_drift(new_task, torch.tanh(new_task @ _rotation_and_scale(5).T.float()), "linear")
    head.fit()
    loaded = RidgeHead.from_tensors(head.tensors())
    loaded.fit()
    # Exact: the same float64 sums come back and the same solve runs on them in the same process.
    assert loaded.lam == head.lam and torch.equal(loaded.weight, head.weight)


def test_linear_compensation_moves_class_means_and_covariances_along_an_affine_drift():
    old, old_labels = _clusters(0, 2, rows=200)
    new_task, _ = _clusters(1, 4)
    generator = torch.Generator().manual_seed(4)
    a = torch.eye(DIM) + 0.3 * torch.randn(DIM, DIM, generator=generator)
    b = torch.randn(DIM, generator=generator)
    stats, means_only, oracle = (ClassStatistics.empty(DIM, rank=DIM) for _ in range(3))
    for s in (stats, means_only):
        s.add_classes(old, old_labels, 2)
    stats.compensate_drift(new_task, new_task @ a + b, "linear")
    means_only.compensate_drift(new_task, new_task @ a + b, "means")
    oracle.add_classes(old @ a + b, old_labels, 2)
    torch.testing.assert_close(stats.means, oracle.means, rtol=1e-4, atol=1e-4)
    for c in range(2):  # full rank: the factors carry the whole covariance, which moves as Aᵀ Σ A
        got, want = stats.factors[c], oracle.factors[c]
        torch.testing.assert_close(got @ got.T, want @ want.T, rtol=1e-3, atol=1e-3)
    # The kernel-weighted mean drift of rows elsewhere is not the drift of these classes.
    assert not torch.allclose(means_only.means, oracle.means, rtol=1e-2, atol=1e-2)


def test_the_configured_drift_compensation_reaches_the_ridge_head(
    tiny_bert, tokenizer, wordnet_tasks, monkeypatch
):
    seen = []
    real = RidgeHead.compensate_drift
    monkeypatch.setattr(
        RidgeHead,
        "compensate_drift",
        lambda self, before, after, how="means", shard=False: (
            seen.append(how) or real(self, before, after, how, shard)
        ),
    )
    config = small_config(drift="linear")
    model = ContinualModel(config, backbone=tiny_bert, tokenizer=tokenizer)
    for task in wordnet_tasks[:2]:
        train_task(model, task)
    assert seen == ["linear"]


def test_an_unknown_drift_compensation_is_refused_with_the_configuration():
    with pytest.raises(ValueError, match="unknown drift compensation 'affine'; choose one of means, linear"):
        TrainConfig(seed=0, drift="affine")
