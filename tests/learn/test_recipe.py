"""The continual-learning step on a tiny BERT with real WordNet tasks: what each phase may and may not touch."""

import copy
import math
from dataclasses import replace

import pytest
import torch

from pipeline.adapters import GateConfig
from pipeline.learn.adapted_features import features_of, reference_copy
from pipeline.learn.config import TrainConfig
from pipeline.learn.model import ContinualModel
from pipeline.learn.recipe import train_task
from pipeline.learn.task import Task
from pipeline.learn.training_rows import PADDED_TO, Batches, trim_padding


def _config(method="litelora", **gate):
    return TrainConfig(
        method=method, epochs=1, batch_size=8, phase2_batch_size=4, lr=5e-3, gate=GateConfig(**gate), seed=0
    )


def _model(tiny_bert, tokenizer, method="litelora", **gate):
    return ContinualModel(_config(method, **gate), backbone=tiny_bert, tokenizer=tokenizer)


def test_frozen_directions_are_bitwise_unchanged_by_later_tasks(tiny_bert, tokenizer, wordnet_tasks):
    model = _model(tiny_bert, tokenizer, init_logit=5.0)  # a large logit keeps every adapter
    train_task(model, wordnet_tasks[0])
    first = {name: (layer.frozen_a.clone(), layer.frozen_b.clone()) for name, layer in model.adapters}
    head0 = copy.deepcopy(model.heads.heads[0].state_dict())
    for task in wordnet_tasks[1:]:
        train_task(model, task)
    assert model.active_adapters == 3
    for name, layer in model.adapters:
        a, b = layer.frozen_factors(0)
        assert torch.equal(a, first[name][0]) and torch.equal(b, first[name][1])
    for key, value in model.heads.heads[0].state_dict().items():
        assert torch.equal(value, head0[key])


def test_phase_two_moves_only_the_current_gate_logit(tiny_bert, tokenizer, wordnet_tasks):
    model = _model(tiny_bert, tokenizer, init_logit=5.0, sparsity=0.5)
    train_task(model, wordnet_tasks[0])
    snapshot = {}

    def after_epoch(phase, epoch, loss):
        if phase == "phase1":
            layers = dict(model.adapters)
            snapshot["adapters"] = {
                n: (l.lora_a.detach().clone(), l.lora_b.detach().clone()) for n, l in layers.items()
            }
            snapshot["alpha"] = model.gate.alpha.detach().clone()
            snapshot["head"] = copy.deepcopy(model.heads.heads[-1].state_dict())
            snapshot["logit"] = model.gate.current_logit.detach().clone()

    result = train_task(model, wordnet_tasks[1], on_epoch=after_epoch)
    assert result.decision.keep
    assert result.decision.logit != snapshot["logit"].item(), "phase 2 should move l_t"
    assert torch.equal(model.gate.alpha, snapshot["alpha"])
    for name, layer in model.adapters:
        a, b = layer.frozen_factors(1)
        assert torch.equal(a, snapshot["adapters"][name][0]) and torch.equal(b, snapshot["adapters"][name][1])
    for key, value in model.heads.heads[-1].state_dict().items():
        assert torch.equal(value, snapshot["head"][key])


def test_a_pruned_adapter_is_neither_computed_nor_saved(tiny_bert, tokenizer, wordnet_tasks, tmp_path):
    model = _model(tiny_bert, tokenizer, sparsity=50.0)
    model.config = replace(model.config, phase2_lr=0.5)
    train_task(model, wordnet_tasks[0])
    result = train_task(model, wordnet_tasks[1])
    assert not result.decision.keep and result.decision.decision == "reuse"
    assert model.active_adapters == 1
    assert all(layer.lora_a is None and layer.num_frozen == 1 for _, layer in model.adapters)
    manifest = model.save(tmp_path / "set")
    assert len(manifest["adapters"]) == 1
    assert len(list((tmp_path / "set" / "adapters").iterdir())) == 1
    assert [t["decision"] for t in manifest["tasks"]] == ["recruit", "reuse"]
    assert manifest["gate"]["keep"] == [True, False]


def test_sdlora_restarts_every_magnitude_while_litelora_carries_them_over(
    tiny_bert, tokenizer, wordnet_tasks
):
    spare = copy.deepcopy(tiny_bert)
    sd = _model(tiny_bert, tokenizer, "sdlora")
    train_task(sd, wordnet_tasks[0])
    assert sd.gate.alpha[0].item() != 0.8, "SD-LoRA trains α_0 on task 0"
    sd.begin_task(wordnet_tasks[1])
    assert torch.equal(sd.gate.alpha.detach(), torch.full((2,), 0.8))

    lite = _model(spare, tokenizer, init_logit=5.0)
    train_task(lite, wordnet_tasks[0])
    assert lite.gate.alpha[0].item() == 1.0, "LiteLoRA keeps α_0 at init_alpha during task 0"
    train_task(lite, wordnet_tasks[1])
    learned = lite.gate.alpha.detach().clone()
    lite.begin_task(wordnet_tasks[2])
    assert torch.equal(lite.gate.alpha.detach()[:2], learned) and lite.gate.alpha[2].item() == 1.0


def test_with_fixed_magnitudes_a_reused_task_leaves_every_earlier_feature_exactly_as_it_was(
    tiny_bert, tokenizer, wordnet_tasks
):
    gate = {"init_logit": 0.1, "sparsity": 50.0}  # a heavy sparsity weight: the gate reuses
    spare = copy.deepcopy(tiny_bert)
    for relearn, backbone in ((False, tiny_bert), (True, spare)):
        model = ContinualModel(
            replace(_config(**gate), relearn_magnitudes=relearn), backbone=backbone, tokenizer=tokenizer
        )
        train_task(model, wordnet_tasks[0])
        before, alpha = features_of(model, wordnet_tasks[0].test_inputs), model.gate.alpha[0].item()
        assert train_task(model, wordnet_tasks[1]).decision.decision == "reuse"
        after = features_of(model, wordnet_tasks[0].test_inputs)
        if (
            relearn
        ):  # the paper: the earlier direction is normalised and its α re-learned, so the features move
            assert not torch.allclose(after, before) and model.gate.alpha[0].item() != alpha
        else:  # bit for bit: the model runs the very same computation as before the task
            assert torch.equal(after, before) and model.gate.alpha[0].item() == alpha


def test_the_first_task_trains_its_own_number_of_epochs(tiny_bert, tokenizer, wordnet_tasks):
    # 24 training rows: a budget of 60 examples is 3 epochs (whole epochs, rounded up), later tasks `epochs`.
    model = ContinualModel(
        replace(_config(init_logit=5.0), first_examples=60, epochs=2), backbone=tiny_bert, tokenizer=tokenizer
    )
    for task in wordnet_tasks[:2]:
        epochs = []
        train_task(model, task, on_epoch=lambda phase, epoch, loss, epochs=epochs: epochs.append(phase))
        assert epochs.count("phase1") == (3 if task is wordnet_tasks[0] else 2)
    assert model.config.task_epochs(0, 1000) == 2  # never fewer than `epochs`


def test_sequential_lora_keeps_training_one_adapter(tiny_bert, tokenizer, wordnet_tasks):
    model = _model(tiny_bert, tokenizer, "seq-lora")
    for task in wordnet_tasks:
        train_task(model, task)
    assert model.active_adapters == 1
    assert [t.decision for t in model.tasks] == ["recruit", "continue", "continue"]


def test_a_task_that_repeats_learned_classes_is_refused_by_per_task_heads(
    tiny_bert, tokenizer, wordnet_tasks
):
    model = ContinualModel(replace(_config(), head="linear"), backbone=tiny_bert, tokenizer=tokenizer)
    train_task(model, wordnet_tasks[0])
    with pytest.raises(ValueError, match="already learned"):
        train_task(model, wordnet_tasks[0])


def test_a_run_resumed_from_an_epoch_boundary_ends_where_the_uninterrupted_run_ends(
    tiny_bert, tokenizer, wordnet_tasks
):
    from pipeline.learn.recipe import capture_progress

    spare = copy.deepcopy(tiny_bert)
    config = replace(_config(init_logit=5.0), epochs=2, optimizer="sgd")
    full = ContinualModel(config, backbone=tiny_bert, tokenizer=tokenizer)
    train_task(full, wordnet_tasks[0])
    saved = {}
    train_task(
        full,
        wordnet_tasks[1],
        on_epoch=lambda p, e, _: saved.setdefault((p, e), capture_progress(full, p, e + 1)),
    )

    resumed = ContinualModel(config, backbone=spare, tokenizer=tokenizer)
    train_task(resumed, wordnet_tasks[0])
    train_task(
        resumed, wordnet_tasks[1], resume=saved[("phase1", 1)]
    )  # killed after phase 1, resumed in phase 2
    # Bit for bit: one process runs the very same phase-2 computation (same tensors, shapes, seeds, threads).
    for (name, a), (_, b) in zip(full.adapters, resumed.adapters, strict=True):
        assert torch.equal(a.frozen_a, b.frozen_a) and torch.equal(a.frozen_b, b.frozen_b), name
    assert torch.equal(full.heads.heads[-1].weight, resumed.heads.heads[-1].weight)


def test_overrides_reach_the_sub_config_that_owns_each_knob():
    config = TrainConfig().with_overrides(
        rank=4, sparsity=1.5, temperature=0.7, init_logit=1.0, lr=1e-3, epochs=None
    )
    assert (config.adapter.rank, config.gate.sparsity, config.gate.temperature, config.gate.init_logit) == (
        4,
        1.5,
        0.7,
        1.0,
    )
    assert config.lr == 1e-3 and config.epochs == TrainConfig().epochs
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig().with_overrides(ranks=4)


def test_subsample_is_seeded_stratified_and_keeps_every_class():
    task = Task("t", ["a", "b"], [str(i) for i in range(22)], [0] * 20 + [1] * 2, ["x"], [0])
    half = task.subsample(0.5, seed=3)
    assert half.train_labels.count(0) == 10 and half.train_labels.count(1) == 1
    assert half.train_inputs == task.subsample(0.5, seed=3).train_inputs
    assert half.test_inputs == task.test_inputs


def test_validation_rows_are_cut_from_training_rows_and_never_overlap_them():
    task = Task("t", ["a", "b"], [str(i) for i in range(20)], [0] * 10 + [1] * 10, ["held"], [0])
    rest, validation = task.split_validation(0.2, seed=1)
    assert validation.test_labels.count(0) == 2 and validation.test_labels.count(1) == 2
    assert not set(rest.train_inputs) & set(validation.test_inputs)
    assert len(rest.train_inputs) + len(validation.test_inputs) == 20
    assert "held" not in validation.test_inputs


@pytest.mark.parametrize(("rows", "batch", "workers"), [(64, 8, 2), (60, 8, 2), (61, 9, 3)])
def test_under_ddp_the_ranks_shares_of_each_step_make_up_the_global_batch(rows, batch, workers):
    data = Batches({"x": torch.arange(rows)[:, None]}, torch.arange(rows))
    single = [labels.tolist() for _, labels in data.iterate(batch, seed=3, device=torch.device("cpu"))]
    shares = [
        [labels.tolist() for _, labels in data.iterate(batch, 3, torch.device("cpu"), rank, workers)]
        for rank in range(workers)
    ]
    assert len({len(s) for s in shares}) == 1, "every rank takes the same number of steps (DDP is collective)"
    steps = [sorted(x for s in shares for x in s[k]) for k in range(len(shares[0]))]
    if rows % (batch * workers) == 0:  # nothing to pad: the very batches of one process
        assert steps == [sorted(b) for b in single]
    assert len(steps) == math.ceil(math.ceil(rows / workers) / math.ceil(batch / workers))
    assert {x for step in steps for x in step} == set(range(rows))


def test_trimmed_text_batches_keep_a_multiple_of_16_positions_within_their_padding():
    mask = torch.zeros(2, 128, dtype=torch.long)
    mask[0, :5], mask[1, :17] = 1, 1
    trimmed = trim_padding({"input_ids": torch.ones(2, 128, dtype=torch.long), "attention_mask": mask})
    assert {t.shape[1] for t in trimmed.values()} == {2 * PADDED_TO}
    mask[1, :] = 1  # the longest row fills the padding: nothing is added beyond it
    assert trim_padding({"attention_mask": mask})["attention_mask"].shape[1] == 128


@pytest.mark.parametrize("method", ["litelora", "seq-lora"])
def test_a_reference_copy_taken_before_a_task_gives_the_features_from_before_it_after_the_task(
    tiny_bert, tokenizer, wordnet_tasks, method
):
    """Drift is measured from the rows' features before and after a task, computed in one pass after it (a streamed
    shard may hold other rows on each pass): the copy must not see what the task trained, though it shares the
    pretrained weights (seq-lora trains one adapter on in place)."""
    model = _model(tiny_bert, tokenizer, method, init_logit=5.0)
    train_task(model, wordnet_tasks[0])
    inputs = wordnet_tasks[1].train_inputs[:16]
    before = features_of(model, inputs)
    reference = reference_copy(model)
    train_task(model, wordnet_tasks[1])
    assert not torch.equal(features_of(model, inputs), before)  # the task moved the features
    assert torch.equal(features_of(reference, inputs), before)  # the same weights, the same batches: exact
    shared = {id(p) for p in model.backbone.parameters()} & {id(p) for p in reference.backbone.parameters()}
    assert shared, "the pretrained weights are shared, not copied"
    assert reference.encoder.tokenizer is model.encoder.tokenizer, "and so is the tokenizer"


def test_a_ranks_own_rows_are_batched_alone_at_its_share_of_the_global_batch():
    """The frozen method trains its head on features; a streamed shard's features are that rank's rows alone."""
    rows = Batches({"x": torch.arange(12.0)[:, None]}, torch.arange(12), shard=True)
    for rank in range(2):
        batches = [labels.tolist() for _, labels in rows.iterate(8, 3, torch.device("cpu"), rank, 2)]
        assert [len(b) for b in batches] == [4, 4, 4]
        assert sorted(label for batch in batches for label in batch) == list(range(12))
