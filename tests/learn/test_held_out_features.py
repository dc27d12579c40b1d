"""Scoring every task after a drop reads earlier tasks' held-out features back where the encoder is unchanged."""

import copy
from dataclasses import replace

import pytest
import torch

from pipeline.adapters import GateConfig
from pipeline.learn import held_out_features
from pipeline.learn.config import TrainConfig
from pipeline.learn.evaluate import evaluate_stage
from pipeline.learn.methods import evaluate
from pipeline.learn.model import ContinualModel
from pipeline.learn.recipe import train_task


def _config(init_logit: float) -> TrainConfig:
    return TrainConfig(
        epochs=1, batch_size=8, phase2_batch_size=4, lr=5e-3, seed=0, gate=GateConfig(init_logit=init_logit)
    )


@pytest.fixture
def first_set(tiny_bert, tokenizer, wordnet_tasks, tmp_path):
    """A set that recruited on its first task, saved and loaded back as a later drop's parent would be."""
    fresh = copy.deepcopy(tiny_bert)
    tasks = [replace(task, dataset_id=f"dataset-{i}") for i, task in enumerate(wordnet_tasks)]
    model = ContinualModel(_config(5.0), backbone=tiny_bert, tokenizer=tokenizer)
    train_task(model, tasks[0])
    evaluate(model, tasks[:1], tmp_path / "features")
    model.save(tmp_path / "set")
    return ContinualModel.load(tmp_path / "set", backbone=fresh, tokenizer=tokenizer), tasks


def _embedded(monkeypatch) -> list[int]:
    calls = []
    real = held_out_features.features_of
    monkeypatch.setattr(
        held_out_features,
        "features_of",
        lambda model, inputs: calls.append(len(inputs)) or real(model, inputs),
    )
    return calls


def test_a_task_that_leaves_the_encoder_as_it_was_embeds_only_its_own_held_out_rows(
    first_set, tmp_path, monkeypatch
):
    model, tasks = first_set
    model.reconfigure(replace(model.config, gate=GateConfig(sparsity=50.0), phase2_lr=0.5))
    assert train_task(model, tasks[1]).decision.decision == "reuse"
    calls = _embedded(monkeypatch)
    scores = evaluate(model, tasks[:2], tmp_path / "features")
    assert calls == [len(tasks[1].test_inputs)]  # the earlier task's features were read back
    assert scores == evaluate_stage(model, tasks[:2])


def test_a_task_that_recruits_embeds_every_task_again(first_set, tmp_path, monkeypatch):
    model, tasks = first_set
    assert train_task(model, tasks[1]).decision.decision == "recruit"
    calls = _embedded(monkeypatch)
    scores = evaluate(model, tasks[:2], tmp_path / "features")
    assert calls == [len(tasks[0].test_inputs), len(tasks[1].test_inputs)]
    assert scores == evaluate_stage(model, tasks[:2])


def test_the_fingerprint_survives_saving_and_loading_and_names_every_adapted_weight(first_set, tmp_path):
    model, _ = first_set
    before = held_out_features.encoder_fingerprint(model)
    model.save(tmp_path / "again")
    assert held_out_features.encoder_fingerprint(model) == before
    _, layer = next(iter(model.adapters))
    with torch.no_grad():
        layer.frozen_b.add_(1e-3)
    assert held_out_features.encoder_fingerprint(model) != before
