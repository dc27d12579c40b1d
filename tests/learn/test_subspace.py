"""Coverage: how much of a new adapter lies in the span of the adapters kept before it."""

import torch

from pipeline.adapters import GateConfig
from pipeline.learn.config import TrainConfig
from pipeline.learn.model import ContinualModel
from pipeline.learn.recipe import train_task
from pipeline.learn.subspace import chance_coverage, coverage


def test_coverage_is_one_inside_the_kept_span_and_zero_outside_it(tiny_bert, tokenizer, wordnet_tasks):
    config = TrainConfig(epochs=1, batch_size=8, phase2_batch_size=4, seed=0, gate=GateConfig(init_logit=5.0))
    model = ContinualModel(config, backbone=tiny_bert, tokenizer=tokenizer)
    train_task(model, wordnet_tasks[0])
    assert model.tasks[0].coverage is None  # nothing was kept before the first task
    model.begin_task(wordnet_tasks[1])
    with torch.no_grad():
        for _, layer in model.adapters:
            layer.lora_b.copy_(layer.frozen_b @ torch.randn(layer.frozen_b.shape[1], layer.lora_b.shape[1]))
    assert abs(coverage(model) - 1.0) < 1e-6
    with torch.no_grad():
        for _, layer in model.adapters:
            q, _ = torch.linalg.qr(layer.frozen_b)
            other = torch.randn_like(layer.lora_b)
            layer.lora_b.copy_(other - q @ (q.T @ other))
    assert coverage(model) < 1e-6
    assert chance_coverage(model) == sum(l.ranks[0] / l.out_features for _, l in model.adapters) / len(
        model.adapters
    )
    model.end_task(wordnet_tasks[1], keep=False)
    assert model.tasks[1].coverage < 1e-6 and model.tasks[1].decision == "reuse"  # recorded before the drop
