"""The ridge head: exact running sums, blind to task order on fixed features, λ chosen on held-out training rows."""

import copy

import pytest
import torch

from pipeline.learn.config import TrainConfig
from pipeline.learn.model import ContinualModel
from pipeline.learn.ridge import LAMBDAS, RidgeHead, held_out
from pipeline.learn.sequence import run_sequence


def _stream(seed=0, classes=(3, 2, 4), rows=40, dim=12):
    """Tasks of Gaussian class clusters: (features, task-local labels, row ids) per task."""
    generator = torch.Generator().manual_seed(seed)
    tasks = []
    for n in classes:
        centres = torch.randn(n, dim, generator=generator) * 2
        labels = torch.arange(n).repeat_interleave(rows)
        features = centres[labels] + torch.randn(len(labels), dim, generator=generator)
        tasks.append((features, labels, [f"row {len(tasks)}-{i}" for i in range(len(labels))]))
    return tasks


def _fit(tasks, order, dim=0):
    """A ridge head fed the tasks in `order`; returns {(task, local class): weight row}."""
    head, names = RidgeHead(dim=dim, seed=7), []
    for t in order:
        features, labels, rows = tasks[t]
        offset = len(names)
        names += [(t, int(c)) for c in labels.unique()]
        head.add(features, labels + offset, len(names), held_out(rows))
    head.fit()
    return head, {name: head.weight[i].double() for i, name in enumerate(names)}


@pytest.mark.parametrize("dim", [0, 64])
def test_the_ridge_head_gives_the_same_weights_whatever_the_task_order(dim):
    tasks = _stream()
    first, a = _fit(tasks, [0, 1, 2], dim)
    second, b = _fit(tasks, [2, 0, 1], dim)
    assert first.lam == second.lam
    for name in a:
        # Sums in another order round differently in the last bits: equal to float64 rounding, well inside 1e-6.
        assert (a[name] - b[name]).norm() <= 1e-6 * a[name].norm(), name


def test_lambda_minimises_the_squared_error_on_the_held_out_training_rows():
    tasks = _stream(classes=(3, 3))
    head, _ = _fit(tasks, [0, 1])
    # The validation error the head minimises is the plain mean squared error on the held-out rows themselves.
    phi = [head.features(f) for f, _, _ in tasks]
    held = [held_out(rows) for _, _, rows in tasks]
    fit_x = torch.cat([p[~h] for p, h in zip(phi, held)])
    fit_y = torch.cat(
        [torch.nn.functional.one_hot(l[~h] + 3 * i, 6) for i, ((_, l, _), h) in enumerate(zip(tasks, held))]
    )
    val_x = torch.cat([p[h] for p, h in zip(phi, held)])
    val_y = torch.cat(
        [torch.nn.functional.one_hot(l[h] + 3 * i, 6) for i, ((_, l, _), h) in enumerate(zip(tasks, held))]
    )
    for lam in (1e-2, 1.0, 100.0):
        w = torch.linalg.solve(
            fit_x.T @ fit_x + lam * torch.eye(fit_x.shape[1], dtype=torch.float64), fit_x.T @ fit_y.double()
        )
        direct = float(((val_x @ w - val_y) ** 2).sum(1).mean())
        assert head.validation_error(lam) == pytest.approx(direct, rel=1e-9)
    assert head.lam == min(LAMBDAS, key=head.validation_error)


def test_a_stream_with_poisoned_scored_rows_fits_the_same_ridge_sums_and_lambda(
    tiny_bert, tokenizer, wordnet_tasks
):
    """End to end through training, drift and scoring: the rows a stage is scored on (the test split) may be
    anything, the ridge head's sums and λ come out bit for bit the same, so no scored row can reach them."""
    config = TrainConfig(
        epochs=1, first_examples=None, batch_size=8, phase2_batch_size=4, lr=5e-3, seed=0, head="ridge"
    )
    clean = copy.deepcopy(wordnet_tasks[:2])
    for task in clean:  # a dozen training rows a task: a few of them choose λ
        task.train_inputs, task.train_labels = task.train_inputs[1::2], task.train_labels[1::2]
        assert held_out(task.train_inputs).any()
    poisoned = copy.deepcopy(clean)
    for task in poisoned:
        # Other texts (another task's training rows, which would move λ if they were held out) and other labels.
        task.test_inputs = [
            f"{text} {text}" for text in wordnet_tasks[2].train_inputs[: len(task.test_inputs)]
        ]
        task.test_labels = [(y + 1) % len(task.classes) for y in task.test_labels]
    fitted = []
    for tasks in (clean, poisoned):
        model = ContinualModel(config, backbone=copy.deepcopy(tiny_bert), tokenizer=tokenizer)
        results, model = run_sequence(tasks, config, model=model)
        fitted.append((model.ridge.tensors(), results["ridge"].cil.correct))
    (sums, correct), (poisoned_sums, poisoned_correct) = fitted
    assert correct != poisoned_correct, "the poisoned rows are scored: the stages see them"
    assert sums.keys() == poisoned_sums.keys()
    # Bit for bit on purpose: both runs do the same computation on the same training rows, and any tolerance
    # would let a small leak of scored rows into the sums pass.
    for name in sums:
        assert torch.equal(sums[name], poisoned_sums[name]), name


def test_held_out_rows_are_picked_by_content_about_one_in_five():
    rows = [f"text {i}" for i in range(2000)]
    held = held_out(rows)
    assert 0.17 < held.float().mean() < 0.23
    assert torch.equal(held_out(rows[::-1]), held.flip(0))  # the same rows, whatever their order


def test_the_stored_sums_do_not_grow_with_the_rows_and_reload_exactly():
    small, large = _stream(rows=10), _stream(rows=80)
    heads = [_fit(tasks, [0, 1, 2])[0] for tasks in (small, large)]
    shapes = [{k: tuple(v.shape) for k, v in h.tensors().items()} for h in heads]
    assert shapes[0] == shapes[1]
    loaded = RidgeHead.from_tensors(heads[1].tensors())
    x = torch.randn(20, 12)
    assert torch.equal(loaded.scores(x), heads[1].scores(x))
    # Continuing a reloaded lineage solves the same W: the sums are kept in float64.
    features, labels, rows = _stream(seed=3, classes=(2,))[0]
    for head in (heads[1], loaded):
        head.add(features, labels + 9, 11, held_out(rows))
        head.fit()
    assert torch.equal(loaded.weight, heads[1].weight)


def test_drift_compensation_moves_class_means_and_keeps_the_sums_exact():
    tasks = _stream(classes=(3,))
    head, _ = _fit(tasks, [0])
    features, labels, rows = tasks[0]
    shift = torch.full((12,), 0.3)
    # A uniform shift of every feature moves each (normalised) class mean the way its rows move, more or less;
    # the sums afterwards must equal the sums of rows moved by exactly the mean displacement.
    old_means = head.fit_rows.means().clone()
    head.compensate_drift(features, features + shift)
    moved = head.fit_rows
    expected_gram = torch.zeros_like(moved.gram)
    held = held_out(rows)
    phi = head.features(features[~held])
    for c in range(3):
        own = phi[labels[~held] == c]
        centred = own - own.mean(0)
        expected_gram += centred.T @ centred + len(own) * torch.outer(moved.means()[c], moved.means()[c])
    torch.testing.assert_close(moved.gram, expected_gram, rtol=1e-9, atol=1e-9)
    assert not torch.allclose(moved.means(), old_means)


def test_choosing_lambda_costs_memory_in_classes_never_in_classes_squared():
    # 200,000 classes (what an unchecked drop could declare): a C × C matrix would be 320 GB of float64.
    classes, dim = 200_000, 4
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2 * classes, dim, generator=generator)
    labels = torch.arange(classes).repeat(2)
    head = RidgeHead()
    head.add(features, labels, classes, torch.arange(2 * classes) % 2 == 0)
    error = head.validation_error(1.0)
    # The same number through the C × C traces, on a slice small enough to build them.
    small = RidgeHead()
    small.add(features[:40], labels[:40] % 10, 10, torch.arange(40) % 2 == 0)
    w = torch.linalg.solve(small.fit_rows.gram + torch.eye(dim, dtype=torch.float64), small.fit_rows.sums.T)
    held = small.held_rows
    expected = (
        float((torch.trace(w.T @ held.gram @ w) - 2 * torch.trace(w.T @ held.sums.T)) / held.counts.sum()) + 1
    )
    assert small.validation_error(1.0) == pytest.approx(expected, rel=1e-9)
    assert error > 0
