"""Routed recruits (TrainConfig.recruit_space = "routed", learn/routing.py): a recruit acts only on the rows routed
to it, so the features of the classes before it never move; the routes travel with the set."""

import copy
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from pipeline.learn.adapted_features import features_of
from pipeline.learn.backbone import pool
from pipeline.learn.evaluate import predict_logits
from pipeline.learn.model import ContinualModel
from pipeline.learn.peft_export import export_peft
from pipeline.learn.recipe import train_task
from tests.learn.small_config import small_config


def _trained(template, tokenizer, tasks, space: str) -> tuple[ContinualModel, list[torch.Tensor]]:
    """A set that recruited for each of `tasks`, and task 0's test rows' features under its own expert after
    each task."""
    model = ContinualModel(
        small_config(recruit_space=space, epochs=2, lr=2e-2, first_examples=None),
        backbone=copy.deepcopy(template),
        tokenizer=tokenizer,
    )
    seen = []
    for task in tasks:
        train_task(model, task)
        seen.append(_first_task_features(model, tasks[0].test_inputs))
    assert [t.decision for t in model.tasks] == ["recruit"] * len(tasks)
    return model, seen


def _first_task_features(model: ContinualModel, inputs: list[str]) -> torch.Tensor:
    if model.routes is None:
        return features_of(model, inputs)
    with model.routes.forcing(model.routes.task_expert[0]):
        return features_of(model, inputs).chunk(2, dim=1)[0]


@pytest.fixture(scope="module")
def routed(_tiny_bert_template, tokenizer, wordnet_tasks):
    """Three tasks, each recruiting (trained once for the module: the tests below only read it)."""
    return _trained(_tiny_bert_template, tokenizer, wordnet_tasks, "routed")


def test_a_routed_recruit_leaves_the_features_of_earlier_classes_where_they_were(
    routed, _tiny_bert_template, tokenizer, wordnet_tasks
):
    _, (before, *after) = routed
    for later in after:  # equal up to rounding only: the recruits' directions enter the same matmuls, times 0
        assert torch.allclose(before, later, atol=1e-5)
    _, (full_before, full_after) = _trained(_tiny_bert_template, tokenizer, wordnet_tasks[:2], "full")
    assert (full_after - full_before).norm() > 100 * (after[0] - before).norm() + 1e-3


def test_a_task_routed_to_an_expert_trains_its_recruit_on_top_of_that_expert(routed, wordnet_tasks):
    model, _ = routed
    assert len(model.routes.experts) == 4  # the bare encoder and one expert a recruit
    for expert, path in enumerate(model.routes.experts[1:], start=1):
        assert path[:-1] in model.routes.experts[:expert]  # its parent's path, then its own adapter
        assert path[-1] == expert - 1
    owner = model.routes.class_expert
    for t, task in enumerate(wordnet_tasks):
        assert {owner[c] for c in model.class_index(task.classes).tolist()} == {model.routes.task_expert[t]}
    assert model.routes.task_expert == [1, 2, 3]


def test_a_routed_set_reloads_with_its_routes_and_predicts_the_same(
    routed, _tiny_bert_template, tokenizer, wordnet_tasks, tmp_path
):
    model, _ = routed
    model.save(tmp_path / "set")
    fresh = copy.deepcopy(_tiny_bert_template)
    loaded = ContinualModel.load(tmp_path / "set", backbone=fresh, tokenizer=tokenizer)
    assert loaded.routes.manifest() == model.routes.manifest()
    inputs = [x for task in wordnet_tasks for x in task.test_inputs]
    assert torch.allclose(predict_logits(loaded, inputs), predict_logits(model, inputs), atol=1e-5)


def test_a_routed_row_scores_only_the_classes_of_the_expert_it_was_routed_to(routed, wordnet_tasks):
    model, _ = routed
    inputs = [x for task in wordnet_tasks for x in task.test_inputs]
    features = features_of(model, inputs)
    experts = model.routes.route(features.chunk(2, dim=1)[1])
    scores = predict_logits(model, inputs)
    owner = torch.tensor(model.routes.class_expert)
    for row, expert in enumerate(experts.tolist()):
        assert scores[row, owner != expert].max() < scores[row, owner == expert].min()


def test_merging_a_routed_set_for_serving_changes_no_prediction(routed, wordnet_tasks):
    model = copy.deepcopy(routed[0])
    inputs = wordnet_tasks[1].test_inputs
    before = predict_logits(model, inputs)
    model.merge(unwrap=True)
    assert torch.equal(predict_logits(model, inputs), before)  # nothing merged: the same computation


@pytest.mark.parametrize(
    "changes",
    [
        {"method": "sdlora"},
        {"method": "seq-lora"},
        {"method": "frozen"},
        {"head": "linear"},
    ],
)
def test_routed_recruits_refuse_a_method_that_moves_kept_adapters_or_another_head(changes):
    with pytest.raises(ValueError, match="routed recruits need"):
        small_config(recruit_space="routed", **changes)


def test_a_routed_recruit_whose_classes_the_router_cannot_tell_from_its_parents_is_refused(
    _tiny_bert_template, tokenizer, wordnet_tasks
):
    # The second task's rows are the first task's, under new class names: as its own expert it would take every
    # row of both tasks that the router sends the wrong way, whatever it gains on its own.
    first = wordnet_tasks[0]
    twin = replace(first, name="twin", classes=[f"twin.{c}" for c in first.classes])
    model = ContinualModel(
        small_config(recruit_space="routed", no_regret=True, epochs=2, lr=2e-2, first_examples=None),
        backbone=copy.deepcopy(_tiny_bert_template),
        tokenizer=tokenizer,
    )
    for task in (first, twin):
        train_task(model, task)
    recruit, reuse = model.tasks[1].weighed
    assert recruit < reuse
    assert [t.decision for t in model.tasks] == ["recruit", "reuse"]
    assert model.routes.task_expert == [1, 1]


def test_peft_loads_each_exported_expert_and_the_router_and_heads_give_the_sets_predictions(
    routed, _tiny_bert_template, tokenizer, wordnet_tasks, tmp_path
):
    from peft import PeftModel

    model, _ = routed
    labels = export_peft(model, tmp_path)
    inputs = [x for task in wordnet_tasks for x in task.test_inputs]
    enc = tokenizer(inputs, padding=True, truncation=True, max_length=64, return_tensors="pt")

    def features(network) -> torch.Tensor:
        with torch.no_grad():
            hidden = network(
                input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
            ).last_hidden_state
        return F.normalize(pool(hidden, enc["attention_mask"], labels["pooling"]), dim=-1)

    router = load_file(tmp_path / "router.safetensors")["weight"]
    routed_to = torch.tensor(labels["class_expert"])[(features(_tiny_bert_template) @ router.T).argmax(1)]
    theirs = torch.full((len(inputs),), -1)
    for expert in routed_to.unique().tolist():
        network = PeftModel.from_pretrained(
            copy.deepcopy(_tiny_bert_template), tmp_path / "experts" / str(expert)
        )
        head = load_file(tmp_path / "heads" / f"{expert}.safetensors")["weight"]
        owned = (torch.tensor(labels["class_expert"]) == expert).nonzero().flatten()
        rows = routed_to == expert
        theirs[rows] = owned[(features(network.eval())[rows] @ head.T).argmax(1)]
    assert torch.equal(theirs, predict_logits(model, inputs).argmax(1))
    assert labels["experts"] == model.routes.experts and labels["adapters"] == [
        "experts/1",
        "experts/2",
        "experts/3",
    ]


def test_a_routed_sets_feature_fingerprint_changes_when_its_router_learns_new_classes(routed):
    from pipeline.learn.held_out_features import encoder_fingerprint

    model = copy.deepcopy(routed[0])
    before = encoder_fingerprint(model)
    # A reuse adds no adapter but refits the router: the same rows may now meet another expert.
    model.routes.router.weight = model.routes.router.weight + 1.0
    assert encoder_fingerprint(model) != before
