"""Average anytime accuracy, final accuracy and forgetting exactly as docs/method.md §6 defines them."""

import pytest

from pipeline.learn.metrics import AccuracyMatrix


def _matrix() -> AccuracyMatrix:
    m = AccuracyMatrix()
    m.add_stage([8], [10, 20, 10])
    m.add_stage([5, 18], [10, 20, 10])
    m.add_stage([9, 10, 10], [10, 20, 10])  # task 0 recovers above its first score at the last stage
    return m


def test_accuracy_matrix_is_indexed_by_task_then_stage_with_zeros_above_the_diagonal():
    assert _matrix().matrix() == [[0.8, 0.5, 0.9], [0.0, 0.9, 0.5], [0.0, 0.0, 1.0]]


def test_stage_accuracy_pools_samples_rather_than_averaging_tasks():
    m = _matrix()
    assert m.stage_accuracy(1) == pytest.approx(23 / 30)  # not (0.5 + 0.9) / 2
    assert m.final_accuracy == pytest.approx(29 / 40)


def test_average_accuracy_is_the_mean_of_stage_accuracies_not_the_final_one():
    assert _matrix().average_accuracy == pytest.approx((8 / 10 + 23 / 30 + 29 / 40) / 3)


def test_forgetting_takes_the_max_over_all_stages_including_the_last_and_skips_the_last_task():
    # task 0: max(0.8, 0.5, 0.9) − 0.9 = 0 (no negative forgetting); task 1: 0.9 − 0.5 = 0.4
    assert _matrix().forgetting == pytest.approx((0.0 + 0.4) / 2)


def test_a_stage_must_report_every_task_seen_so_far():
    m = AccuracyMatrix()
    with pytest.raises(ValueError):
        m.add_stage([1, 2], [4, 4])
