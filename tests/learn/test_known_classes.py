"""A later task may bring classes the model already knows: heads that keep one entry per class (ridge sums,
class statistics) absorb its rows; per-task heads refuse it."""

import copy
from dataclasses import replace

import pytest
import torch

from pipeline.learn.config import TrainConfig
from pipeline.learn.evaluate import evaluate_stage
from pipeline.learn.model import ContinualModel
from pipeline.learn.recipe import train_task


def split_rows(task):
    """The task's training rows in two tasks of the same classes (even and odd rows)."""
    return (
        replace(
            task,
            name=f"{task.name}-a",
            train_inputs=task.train_inputs[0::2],
            train_labels=task.train_labels[0::2],
        ),
        replace(
            task,
            name=f"{task.name}-b",
            train_inputs=task.train_inputs[1::2],
            train_labels=task.train_labels[1::2],
        ),
    )


def frozen_model(tiny_bert, tokenizer, head: str) -> ContinualModel:
    config = TrainConfig(method="frozen", head=head, epochs=1, batch_size=8, seed=0, align_steps=20)
    return ContinualModel(config, backbone=copy.deepcopy(tiny_bert), tokenizer=tokenizer)


def test_two_drops_of_the_same_classes_give_the_ridge_weights_of_one_drop_holding_all_their_rows(
    tiny_bert, tokenizer, wordnet_tasks
):
    whole, other = wordnet_tasks[0], wordnet_tasks[1]
    first, later = split_rows(whole)
    at_once = frozen_model(tiny_bert, tokenizer, "ridge")
    for task in (whole, other):
        train_task(at_once, task)
    in_two = frozen_model(tiny_bert, tokenizer, "ridge")
    for task in (first, other, later):  # the same classes again, two tasks later
        train_task(in_two, task)

    assert in_two.classes == at_once.classes
    assert in_two.ridge.lam == at_once.ridge.lam
    # The sums are the same rows added in another order: equal up to float rounding.
    torch.testing.assert_close(in_two.ridge.weight, at_once.ridge.weight, rtol=1e-6, atol=1e-9)


def test_class_statistics_pool_a_known_classs_rows_exactly_in_mean_and_count(
    tiny_bert, tokenizer, wordnet_tasks
):
    first, later = split_rows(wordnet_tasks[0])
    model = frozen_model(tiny_bert, tokenizer, "prototype")
    train_task(model, first)
    train_task(model, later)
    whole = frozen_model(tiny_bert, tokenizer, "prototype")
    train_task(whole, wordnet_tasks[0])
    assert model.class_stats.counts.tolist() == whole.class_stats.counts.tolist()
    torch.testing.assert_close(model.class_stats.means, whole.class_stats.means, rtol=1e-5, atol=1e-6)
    # The pooled covariance keeps its rank-k approximation: close, not equal, to the one of all rows.
    scores = evaluate_stage(model, [wordnet_tasks[0]])
    assert scores.cil_correct == evaluate_stage(whole, [wordnet_tasks[0]]).cil_correct


def test_an_aligned_head_scores_each_class_once_when_a_class_comes_back(tiny_bert, tokenizer, wordnet_tasks):
    first, later = split_rows(wordnet_tasks[0])
    model = frozen_model(tiny_bert, tokenizer, "aligned")
    for task in (first, wordnet_tasks[1], later):
        train_task(model, task)
    assert model.heads.aligned_weight.shape[0] == len(model.classes) == 8
    scores = evaluate_stage(model, [first, wordnet_tasks[1], later])
    assert len(scores.cil_correct) == 3 and all(
        0 <= c <= n for c, n in zip(scores.cil_correct, scores.counts)
    )


def test_per_task_heads_refuse_a_known_class_and_say_which_heads_take_it(tiny_bert, tokenizer, wordnet_tasks):
    first, later = split_rows(wordnet_tasks[0])
    model = frozen_model(tiny_bert, tokenizer, "linear")
    train_task(model, first)
    with pytest.raises(
        ValueError, match="ridge, prototype, aligned heads absorb more data for known classes"
    ):
        train_task(model, later)


def test_a_task_still_open_is_scored_on_its_own_linear_head_between_epochs(
    tiny_bert, tokenizer, wordnet_tasks
):
    """What a Ray Tune trial reports mid-task (tuning/trial.py): the open task has only its linear head so far."""
    from pipeline.tuning.trial import score_mid_task

    model = frozen_model(tiny_bert, tokenizer, "ridge")
    train_task(model, wordnet_tasks[0])
    seen = []
    model.begin_task(wordnet_tasks[1])
    seen.append(score_mid_task(model, wordnet_tasks[:2]))
    assert seen[0].counts == [len(t.test_labels) for t in wordnet_tasks[:2]]
    assert all(0 <= c <= n for c, n in zip(seen[0].cil_correct, seen[0].counts, strict=True))


def test_a_class_that_comes_back_is_scored_on_its_latest_held_out_rows(tiny_bert, tokenizer, wordnet_tasks):
    whole = wordnet_tasks[0]
    first, later = split_rows(whole)
    # The later drop brings its own held-out rows (none of class 0, one fewer of another): the classes it has rows
    # of are scored on those only; class 0 keeps its score on the earlier rows.
    keep = [i for i, y in enumerate(whole.test_labels) if y != 0][1:]
    later = replace(
        later,
        test_inputs=[whole.test_inputs[i] for i in keep],
        test_labels=[whole.test_labels[i] for i in keep],
    )
    model = frozen_model(tiny_bert, tokenizer, "ridge")
    for task in (first, wordnet_tasks[1], later):
        train_task(model, task)
    scores = evaluate_stage(model, [first, wordnet_tasks[1], later])
    assert list(scores.classes) == model.classes
    latest = [later.test_labels.count(k) or first.test_labels.count(k) for k in range(len(whole.classes))]
    assert [scores.classes[name][1] for name in whole.classes] == latest
    assert latest != [first.test_labels.count(k) for k in range(len(whole.classes))]
    for k, name in enumerate(wordnet_tasks[1].classes):
        assert scores.classes[name][1] == wordnet_tasks[1].test_labels.count(k)
    # Per task, the rows still add up as before: the per-class view is an extra, not a rewrite of the matrix.
    assert sum(c for c, _ in scores.classes.values()) <= sum(scores.cil_correct)
    assert scores.counts == [len(t.test_labels) for t in (first, wordnet_tasks[1], later)]
