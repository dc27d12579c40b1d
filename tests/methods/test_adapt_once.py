"""adapt-once, the method added through the registry alone: the first task adapts, later tasks leave every feature
where it was and only add their classes to the head."""

import torch

from pipeline.learn.adapted_features import features_of
from pipeline.learn.config import TrainConfig
from pipeline.learn.model import ContinualModel
from pipeline.learn.recipe import train_task


def test_adapt_once_adapts_the_first_task_then_moves_no_feature_of_any_class(
    tiny_bert, tokenizer, wordnet_tasks
):
    config = TrainConfig(method="adapt-once", epochs=1, batch_size=8, lr=5e-3, seed=0, first_examples=0)
    model = ContinualModel(config, backbone=tiny_bert, tokenizer=tokenizer)
    first = train_task(model, wordnet_tasks[0])
    assert first.trainable_parameters > 0 and model.active_adapters == 1
    before = features_of(model, wordnet_tasks[0].test_inputs).clone()
    later = [train_task(model, task) for task in wordnet_tasks[1:]]
    assert [t.decision for t in model.tasks] == ["recruit", "reuse", "reuse"]
    assert model.active_adapters == 1
    head = sum(p.numel() for p in model.heads.heads[-1].parameters())
    assert [r.trainable_parameters for r in later] == [head, head], "later tasks train their head alone"
    # Bit for bit: the same weights run on the same batches, so any difference is a weight a later task moved.
    assert torch.equal(features_of(model, wordnet_tasks[0].test_inputs), before)
    assert model.classes == [c for t in wordnet_tasks for c in t.classes]
