"""PEFT export: the files PEFT loads reproduce the adapter set's logits on the same backbone."""

import copy
import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from pipeline.learn.backbone import pool
from pipeline.learn.config import TrainConfig
from pipeline.learn.evaluate import predict_logits
from pipeline.learn.head_options import HEAD_OPTIONS
from pipeline.learn.model import ContinualModel
from pipeline.learn.peft_export import export_peft
from pipeline.learn.recipe import train_task
from tests.learn.small_config import small_config

TOLERANCE = 1e-5  # float32 on CPU; the export folds α/n into B, so only summation order differs


@pytest.mark.parametrize("head", HEAD_OPTIONS)
def test_peft_loads_the_combined_export_and_gives_the_sets_logits(
    tiny_bert, tokenizer, wordnet_tasks, tmp_path, head
):
    from peft import PeftModel

    fresh = copy.deepcopy(tiny_bert)
    config = small_config(head=head, align_steps=20)
    model = ContinualModel(
        replace(config, adapter=replace(config.adapter, rank=4)), backbone=tiny_bert, tokenizer=tokenizer
    )
    train_task(model, wordnet_tasks[0])
    model.reconfigure(model.config.with_overrides(rank=2))  # mixed ranks, as a tuned stream produces
    train_task(model, wordnet_tasks[1])
    assert model.adapter_ranks() == [4, 2]

    summary = export_peft(model, tmp_path)
    peft_model = PeftModel.from_pretrained(fresh, tmp_path / "combined").eval()
    texts = wordnet_tasks[0].test_inputs[:8] + wordnet_tasks[1].test_inputs[:8]
    enc = tokenizer(
        texts, padding=True, truncation=True, max_length=model.config.backbone.max_length, return_tensors="pt"
    )
    heads = load_file(tmp_path / "heads.safetensors")
    labels = json.loads((tmp_path / "labels.json").read_text())
    with torch.no_grad():
        hidden = peft_model(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
        ).last_hidden_state
        features = pool(hidden, enc["attention_mask"], summary["pooling"])
        if labels["normalize_features"]:
            features = F.normalize(features, dim=-1)
        theirs = features @ heads["weight"].T + heads["bias"]
    ours = predict_logits(model, texts)
    assert labels["head"] == head
    assert (theirs - ours).abs().max() < TOLERANCE
    assert labels["classes"] == model.classes and labels["adapters"] == [
        f"{i:02d}-{t.name}" for i, t in enumerate(wordnet_tasks[:2])
    ]
    assert (
        json.loads(
            (tmp_path / "adapters" / f"01-{wordnet_tasks[1].name}" / "adapter_config.json").read_text()
        )["r"]
        == 2
    )


def test_a_task_name_that_climbs_out_of_the_export_is_written_inside_it(
    tiny_bert, tokenizer, wordnet_tasks, tmp_path
):
    # A set registered before task names were checked may hold any name; the export names folders by index.
    config = TrainConfig(epochs=1, batch_size=8, phase2_batch_size=4, seed=0, first_examples=0, head="linear")
    model = ContinualModel(config, backbone=tiny_bert, tokenizer=tokenizer)
    train_task(model, replace(wordnet_tasks[0], name="../../../../victim/model"))
    out = tmp_path / "export" / "here"
    export_peft(model, out)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "adapter_model.safetensors" for p in written)
    assert all(p.is_relative_to(out) for p in written), [str(p) for p in written if not p.is_relative_to(out)]
    assert (out / "adapters" / "00-.._.._.._victim_model").is_dir() is False
    assert (out / "adapters" / "00-_.._.._.._victim_model").is_dir()
