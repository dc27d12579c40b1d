"""The frozen reference: the same head on the bare backbone, from features cached by backbone and dataset."""

import copy
from dataclasses import replace

import torch

from pipeline.learn.backbone import BackboneConfig, TextBackbone, embed
from pipeline.learn.config import TrainConfig
from pipeline.learn.frozen import FeatureCache, frozen_reference
from pipeline.learn.model import ContinualModel
from pipeline.learn.recipe import train_task
from pipeline.learn.sequence import run_sequence


def _config(**changes):
    return TrainConfig(epochs=1, batch_size=8, phase2_batch_size=4, lr=5e-3, seed=0, head="ridge", **changes)


def test_the_frozen_method_trains_heads_only_and_keeps_the_bare_features(tiny_bert, tokenizer, wordnet_tasks):
    bare = TextBackbone(copy.deepcopy(tiny_bert), tokenizer, BackboneConfig())
    model = ContinualModel(_config(method="frozen"), backbone=tiny_bert, tokenizer=tokenizer)
    for task in wordnet_tasks[:2]:
        train_task(model, task)
    assert model.active_adapters == 0 and [t.decision for t in model.tasks] == ["none", "none"]
    assert model.stored_parameters() == 0
    inputs = wordnet_tasks[0].test_inputs
    # The wrapped layers add nothing: within float rounding of the bare encoder (other modules, same maths).
    torch.testing.assert_close(
        embed(model, inputs, 8, torch.device("cpu")),
        embed(bare, inputs, 8, torch.device("cpu")),
        rtol=1e-5,
        atol=1e-6,
    )


def test_the_frozen_reference_from_cached_features_matches_a_frozen_run(
    tiny_bert, tokenizer, wordnet_tasks, tmp_path
):
    config = _config()
    direct, _ = run_sequence(
        wordnet_tasks,
        config.with_overrides(method="frozen"),
        model=ContinualModel(
            config.with_overrides(method="frozen"), backbone=copy.deepcopy(tiny_bert), tokenizer=tokenizer
        ),
    )
    cache = FeatureCache(
        config.backbone, tmp_path, backbone=TextBackbone(tiny_bert, tokenizer, BackboneConfig())
    )
    ids = [copy.copy(t) for t in wordnet_tasks]
    for i, t in enumerate(ids):
        t.dataset_id = f"dataset{i}"
    reference = frozen_reference(config, ids, cache)
    assert (
        reference.cil.correct == direct["ridge"].cil.correct
        and reference.til.correct == direct["ridge"].til.correct
    )
    files = sorted(p.name for p in tmp_path.rglob("*.safetensors"))
    assert files == sorted(f"dataset{i}-{s}.safetensors" for i in range(3) for s in ("train", "test"))
    # A second reference reads the files: the backbone is never run again.
    cache.compute = lambda inputs: (_ for _ in ()).throw(AssertionError("recomputed cached features"))
    assert frozen_reference(config, ids, cache).cil.correct == reference.cil.correct


def test_a_kept_reference_continues_with_the_next_task_from_held_out_rows_alone(
    tiny_bert, tokenizer, wordnet_tasks, tmp_path
):
    config = _config()
    backbone = TextBackbone(tiny_bert, tokenizer, BackboneConfig())
    ids = [copy.copy(t) for t in wordnet_tasks]
    for i, t in enumerate(ids):
        t.dataset_id = f"dataset{i}"
    whole = frozen_reference(config, ids, FeatureCache(config.backbone, backbone=backbone))
    stages, cache = tmp_path / "stages", FeatureCache(config.backbone, tmp_path / "f", backbone=backbone)
    frozen_reference(config, ids[:2], cache, stages)
    held_only = [replace(t, train_inputs=[], train_labels=[]) for t in ids[:2]]

    def no_training_rows(task):
        raise AssertionError(f"read the training rows of {task.name}")

    continued = frozen_reference(config, [*held_only, ids[2]], cache, stages, rows=no_training_rows)
    # The same computation on the same features in the same order: the very same counts.
    assert continued.cil.correct == whole.cil.correct and continued.til.correct == whole.til.correct
    assert len(list(stages.iterdir())) == 3
    # A cold cache fits every task again, reading the training rows through `rows`.
    cold = frozen_reference(
        config, [*held_only, ids[2]], cache, tmp_path / "cold", rows=lambda t: ids[int(t.dataset_id[-1])]
    )
    assert cold.cil.correct == whole.cil.correct


def test_a_reference_whose_every_stage_is_kept_reads_them_without_loading_the_backbone(
    tiny_bert, tokenizer, wordnet_tasks, tmp_path
):
    config = _config()
    ids = [replace(copy.copy(t), dataset_id=f"dataset{i}") for i, t in enumerate(wordnet_tasks[:2])]
    backbone = TextBackbone(tiny_bert, tokenizer, BackboneConfig())
    stages = tmp_path / "stages"
    first = frozen_reference(
        config, ids, FeatureCache(config.backbone, tmp_path / "f", backbone=backbone), stages
    )

    class NoBackbone(FeatureCache):
        def backbone(self):
            raise AssertionError("loaded the backbone for a reference whose every stage is kept")

    # A retried drop: the same tasks again, with their held-out rows alone.
    held_only = [replace(t, train_inputs=[], train_labels=[]) for t in ids]
    again = frozen_reference(config, held_only, NoBackbone(config.backbone, tmp_path / "f"), stages)
    assert again.cil.correct == first.cil.correct and again.til.correct == first.til.correct
    assert again.classes == first.classes and again.til_classes == first.til_classes
