"""A Share set as the service keeps it: trained task by task, saved as format 2, loaded back, predicting for a
named task, and exported as one PEFT LoRA per task."""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from pipeline.adapters.adapter_set import TASK_SELECTED_FORMAT, verify_adapter_set
from pipeline.learn.backbone import pool
from pipeline.learn.config import TrainConfig
from pipeline.learn.methods import continuing, load_model
from pipeline.learn.model import ContinualModel
from pipeline.learn.peft_export import export_peft
from pipeline.methods.share.model import TaskSelectedModel, evaluate_selected, train_selected_task
from pipeline.serving.predictor import BadRequest, Predictor

CONFIG = TrainConfig(method="share", epochs=1, batch_size=8, seed=0, head="linear")


@pytest.fixture
def share_model(tiny_bert, tokenizer, wordnet_tasks):
    """Two tasks of Share (k = 4, φ = 0, the service's settings) on a copy of the tiny BERT (`tiny_bert` stays
    bare)."""
    model = TaskSelectedModel(CONFIG, backbone=copy.deepcopy(tiny_bert), tokenizer=tokenizer)
    for task in wordnet_tasks[:2]:
        train_selected_task(model, task)
    return model


def test_a_share_set_round_trips_through_format_2_and_gives_each_task_its_logits(
    share_model, tiny_bert, tokenizer, wordnet_tasks, tmp_path
):
    manifest = share_model.save(tmp_path / "set", extra={"parent_version": None})
    assert manifest["format"] == TASK_SELECTED_FORMAT and manifest["method"] == "share"
    assert verify_adapter_set(tmp_path / "set")["deltas"] == manifest["deltas"]  # hashed like every file
    deltas = load_file(tmp_path / "set" / manifest["deltas"])
    layer = next(iter(share_model.layers))
    assert deltas[f"{layer}.a"].shape == (2, 4, CONFIG.adapter.rank)  # tasks × k × p: coefficients, not LoRAs
    assert deltas[f"{layer}.basis_a"].shape[1] == 4

    loaded = load_model(tmp_path / "set", backbone=copy.deepcopy(tiny_bert), tokenizer=tokenizer)
    assert isinstance(loaded, TaskSelectedModel) and loaded.share == share_model.share
    assert [t.name for t in loaded.tasks] == [t.name for t in wordnet_tasks[:2]]
    for j, task in enumerate(wordnet_tasks[:2]):
        # Same weights, same inputs, same code on this machine: equal up to float32 rounding.
        torch.testing.assert_close(
            loaded.task_logits(task.test_inputs, j), share_model.task_logits(task.test_inputs, j)
        )


def test_the_next_task_trains_on_the_loaded_set_and_leaves_the_earlier_tasks_answers_as_they_were(
    share_model, tiny_bert, tokenizer, wordnet_tasks, tmp_path
):
    share_model.save(tmp_path / "set")
    parent = load_model(tmp_path / "set", backbone=copy.deepcopy(tiny_bert), tokenizer=tokenizer)
    before = [parent.task_logits(t.test_inputs, j) for j, t in enumerate(wordnet_tasks[:2])]
    model = continuing(parent, CONFIG, {"epochs": 2})
    assert model is parent and model.config.epochs == 2
    train_selected_task(model, wordnet_tasks[2])
    # φ = 0: the new task's factors lie in the basis, so re-projecting the earlier tasks loses nothing but rounding.
    assert model.reprojection_error() < 1e-4
    for j, task in enumerate(wordnet_tasks[:2]):
        torch.testing.assert_close(model.task_logits(task.test_inputs, j), before[j], rtol=1e-4, atol=1e-4)
    scores = evaluate_selected(model, wordnet_tasks)
    assert scores.counts == [8, 8, 8] and set(scores.classes) == {c for t in wordnet_tasks for c in t.classes}
    assert model.active_adapters == 1  # one basis, whatever the number of tasks


def test_moving_a_share_model_moves_its_basis_and_coefficients_too(share_model, wordnet_tasks):
    texts = wordnet_tasks[0].test_inputs
    before = share_model.task_logits(texts, 0)
    layer = next(iter(share_model.layers.values()))

    def stored_dtypes() -> set:
        return {t.dtype for t in [layer.basis_a, layer.basis_b, *layer.stored_a, *layer.stored_b]}

    share_model.double()  # what `.to(device)` does under Ray Train, on the CPU: the stored tensors follow
    assert stored_dtypes() == {torch.float64}
    share_model.float()
    assert stored_dtypes() == {torch.float32}
    # float32 → float64 → float32 gives back the very same values: the same computation as before.
    torch.testing.assert_close(share_model.task_logits(texts, 0), before)


def test_a_new_lineage_running_share_gets_a_task_selected_model_and_a_gated_model_refuses_share(
    tiny_backbone_dir,
):
    config = TrainConfig.for_backbone(str(tiny_backbone_dir), "share")
    assert (config.method, config.epochs, config.head) == ("share", 5, "linear")
    # A configuration switched to Share keeps what it set and takes Share's defaults for the rest.
    mine = TrainConfig(epochs=1, seed=7).running("share")
    assert (mine.method, mine.epochs, mine.seed, mine.head) == ("share", 1, 7, "linear")
    assert isinstance(continuing(None, config), TaskSelectedModel)
    with pytest.raises(ValueError, match="TaskSelectedModel"):
        ContinualModel(config)


def test_a_share_prediction_names_its_task_and_answers_with_that_tasks_classes(share_model, wordnet_tasks):
    predictor = Predictor(share_model, version="1")
    texts = wordnet_tasks[1].test_inputs[:3]
    with pytest.raises(BadRequest, match="name the task"):
        predictor.predict(texts)
    with pytest.raises(BadRequest, match="no task 'nope'"):
        predictor.predict(texts, task="nope")
    answer = predictor.predict(texts, top=2, task=wordnet_tasks[1].name)
    expected = share_model.task_logits(texts, 1).softmax(-1)
    for p, row in zip(answer, expected, strict=True):
        assert p.task == wordnet_tasks[1].name and set(p.scores) <= set(wordnet_tasks[1].classes)
        assert p.label == wordnet_tasks[1].classes[int(row.argmax())]


def test_peft_loads_each_tasks_export_and_gives_that_tasks_logits(
    share_model, tiny_bert, tokenizer, wordnet_tasks, tmp_path
):
    from peft import PeftModel

    summary = export_peft(share_model, tmp_path)
    assert [t["task"] for t in summary["tasks"]] == [t.name for t in wordnet_tasks[:2]]
    assert summary["adapters"] == [f"{j:02d}-{t.name}" for j, t in enumerate(wordnet_tasks[:2])]
    for j, task in enumerate(wordnet_tasks[:2]):
        entry = summary["tasks"][j]
        network = PeftModel.from_pretrained(copy.deepcopy(tiny_bert), tmp_path / entry["adapter"]).eval()
        enc = tokenizer(
            task.test_inputs,
            padding=True,
            truncation=True,
            max_length=share_model.config.backbone.max_length,
            return_tensors="pt",
        )
        head = load_file(tmp_path / entry["head"])
        with torch.no_grad():
            hidden = network(
                input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
            ).last_hidden_state
            theirs = pool(hidden, enc["attention_mask"], summary["pooling"]) @ head["weight"].T + head["bias"]
        # The export multiplies basis and coefficients out once; the layer does it per forward: rounding only.
        assert (theirs - share_model.task_logits(task.test_inputs, j)).abs().max() < 1e-5
        config = json.loads((tmp_path / entry["adapter"] / "adapter_config.json").read_text())
        assert config["r"] == config["lora_alpha"] == CONFIG.adapter.rank


def test_an_export_never_mixes_with_an_earlier_one_in_the_same_directory(share_model, tmp_path):
    export_peft(share_model, tmp_path)
    (tmp_path / "adapters" / "99-stale").mkdir()  # what an export of another version would have left
    with pytest.raises(ValueError, match="holds an earlier export"):
        export_peft(share_model, tmp_path)
    export_peft(share_model, tmp_path, replace=True)
    assert sorted(p.name for p in (tmp_path / "adapters").iterdir()) == [
        t["adapter"].split("/")[-1] for t in json.loads((tmp_path / "labels.json").read_text())["tasks"]
    ]
