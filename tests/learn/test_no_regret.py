"""The no-regret rule: a recruit the gate asks for is weighed against a reuse on validation cuts of the training
rows of every task so far, and the set keeps whichever scores better."""

from dataclasses import replace

import pytest

from pipeline.learn import recipe
from pipeline.learn.evaluate import evaluate_heads
from pipeline.learn.model import ContinualModel
from pipeline.learn.no_regret import Weighing, validation_cut
from pipeline.learn.recipe import train_task
from pipeline.learn.ridge import held_out
from tests.learn.small_config import small_config


def _model(tiny_bert, tokenizer, no_regret=True):
    config = small_config(no_regret=no_regret)  # its gate asks for every recruit
    return ContinualModel(config, backbone=tiny_bert, tokenizer=tokenizer)


def test_a_cut_holds_only_training_rows_the_ridge_holds_out_at_most_per_class(wordnet_tasks):
    task = wordnet_tasks[0]
    cut = validation_cut(task, per_class=1)
    held = {x for x, h in zip(task.train_inputs, held_out(task.train_inputs).tolist(), strict=True) if h}
    assert cut.test_inputs and set(cut.test_inputs) <= held
    assert not set(cut.test_inputs) & set(task.test_inputs)
    assert len(cut.test_labels) == len(set(cut.test_labels))  # one row per class at most
    shuffled = replace(task, train_inputs=task.train_inputs[::-1], train_labels=task.train_labels[::-1])
    assert set(validation_cut(shuffled, per_class=1).test_inputs) <= held


def test_the_set_keeps_the_side_of_the_weighing_that_scored_better(tiny_bert, tokenizer, wordnet_tasks):
    model = _model(tiny_bert, tokenizer)
    train_task(model, wordnet_tasks[0])
    cuts = [validation_cut(wordnet_tasks[0])]
    train_task(model, wordnet_tasks[1], cuts=cuts)
    recruit, reuse = model.tasks[1].weighed
    assert model.tasks[1].decision == ("recruit" if recruit > reuse else "reuse")
    head = model.config.head
    scores = evaluate_heads(model, [*cuts, validation_cut(wordnet_tasks[1])], (head,))[head]
    assert sum(scores.cil_correct) / sum(scores.counts) == (max(reuse, recruit))


@pytest.mark.parametrize("no_regret", [True, False])
def test_a_recruit_that_scores_below_the_reuse_is_dropped_whatever_the_gate_says(
    tiny_bert, tokenizer, wordnet_tasks, monkeypatch, no_regret
):
    monkeypatch.setattr(recipe, "weigh_recruit", lambda *args: Weighing(recruit=0.5, reuse=0.6))
    model = _model(tiny_bert, tokenizer, no_regret)
    train_task(model, wordnet_tasks[0])
    train_task(model, wordnet_tasks[1], cuts=[validation_cut(wordnet_tasks[0])])
    assert model.tasks[1].logit > 0  # the gate asked for the recruit
    if no_regret:
        assert (model.tasks[1].decision, model.tasks[1].weighed, model.active_adapters) == (
            "reuse",
            [0.5, 0.6],
            1,
        )
    else:
        assert (model.tasks[1].decision, model.tasks[1].weighed, model.active_adapters) == (
            "recruit",
            None,
            2,
        )


def test_the_rule_never_weighs_a_recruit_on_the_new_task_alone(tiny_bert, tokenizer, wordnet_tasks):
    model = _model(tiny_bert, tokenizer)
    train_task(model, wordnet_tasks[0])  # nothing earlier to weigh against
    with pytest.raises(ValueError, match="every earlier task's validation cut"):
        train_task(model, wordnet_tasks[1])
