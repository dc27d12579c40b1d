"""Head options: fitted after training from class statistics, never from kept examples, and stored in the set."""

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from pipeline.adapters.adapter_set import set_files
from pipeline.learn.class_stats import ClassStatistics
from pipeline.learn.evaluate import predict_logits
from pipeline.learn.head_options import HEAD_OPTIONS, align_classifier, calibration_of
from pipeline.learn.model import ContinualModel
from pipeline.learn.recipe import train_task
from pipeline.learn.task import Task
from tests.learn.small_config import small_config


def _model(tiny_bert, tokenizer, head="linear", **changes):
    config = small_config(head=head, align_steps=20, **changes)
    return ContinualModel(config, backbone=tiny_bert, tokenizer=tokenizer)


def _first(task: Task, per_class: int) -> Task:
    """The task cut to its first `per_class` training examples of each class."""
    task = copy.copy(task)
    keep = [i for i, y in enumerate(task.train_labels) if task.train_labels[: i + 1].count(y) <= per_class]
    task.train_inputs = [task.train_inputs[i] for i in keep]
    task.train_labels = [task.train_labels[i] for i in keep]
    return task


@pytest.mark.parametrize("head", HEAD_OPTIONS)
def test_a_head_option_round_trips_through_save_and_load_with_identical_predictions(
    tiny_bert, tokenizer, wordnet_tasks, tmp_path, head
):
    fresh = copy.deepcopy(tiny_bert)
    model = _model(tiny_bert, tokenizer, head)
    for task in wordnet_tasks[:2]:
        train_task(model, task)
    model.save(tmp_path)
    loaded = ContinualModel.load(tmp_path, backbone=fresh, tokenizer=tokenizer)
    texts = wordnet_tasks[0].test_inputs + wordnet_tasks[1].test_inputs
    assert loaded.config.head == head
    # Bit for bit: the same tensors in the same shapes, the same batches, one process: the same computation.
    assert torch.equal(predict_logits(loaded, texts), predict_logits(model, texts))


@pytest.mark.parametrize(
    "head, kept", [("aligned", "scoring.stats.factors"), ("ridge", "scoring.ridge.fit.gram")]
)
def test_no_training_example_is_stored_in_an_adapter_set(
    tiny_bert, tokenizer, wordnet_tasks, tmp_path, head, kept
):
    # What a set stores must not grow with the training data: the same tasks with half the examples give the
    # same files with the same tensor shapes. And no training text appears anywhere in the set.
    shapes = []
    for per_class, backbone in ((2, copy.deepcopy(tiny_bert)), (6, tiny_bert)):
        model = _model(backbone, tokenizer, head)
        for task in wordnet_tasks[:2]:
            train_task(model, _first(task, per_class))
        directory = tmp_path / str(per_class)
        manifest = model.save(directory)
        tensors = {}
        for rel in set_files(manifest):
            kind = rel.split("/")[0]
            tensors |= {f"{kind}.{k}": tuple(v.shape) for k, v in load_file(directory / rel).items()}
        shapes.append(sorted(tensors.items()))
        everything = b"".join(p.read_bytes() for p in directory.rglob("*") if p.is_file())
        for text in (t for task in wordnet_tasks[:2] for t in task.train_inputs):
            assert text.encode() not in everything
    assert shapes[0] == shapes[1]
    assert any(name.startswith(kept) for name, _ in shapes[0])


def test_head_options_leave_training_untouched(tiny_bert, tokenizer, wordnet_tasks):
    # Why the bench may score every option on one run: fitting them changes no adapter, gate or linear head.
    plain, fitted = _model(copy.deepcopy(tiny_bert), tokenizer), _model(tiny_bert, tokenizer)
    for task in wordnet_tasks:
        train_task(plain, task)
        train_task(fitted, task, head_options=HEAD_OPTIONS)
    for (name, a), (_, b) in zip(plain.state_dict().items(), fitted.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_a_statistics_head_cannot_start_in_the_middle_of_a_lineage(tiny_bert, tokenizer, wordnet_tasks):
    model = _model(tiny_bert, tokenizer, "linear")
    train_task(model, wordnet_tasks[0])
    model.reconfigure(model.config.with_overrides(head="aligned"))
    with pytest.raises(ValueError, match="head option 'aligned' needs what it fits after every task"):
        train_task(model, wordnet_tasks[1])
    assert len(model.tasks) == 1


def test_manifest_names_the_head_option_and_its_scoring_file(tiny_bert, tokenizer, wordnet_tasks, tmp_path):
    model = _model(tiny_bert, tokenizer, "prototype")
    train_task(model, wordnet_tasks[0])
    model.save(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["config"]["head"] == "prototype"
    stored = load_file(tmp_path / manifest["scoring"])
    assert set(stored) == {"stats.means", "stats.counts"}  # a prototype head needs only the class means


# -- the maths, without a backbone ------------------------------------------------------------------------------


def test_full_rank_statistics_reproduce_the_class_covariance():
    torch.manual_seed(0)
    x = torch.randn(500, 6) @ torch.randn(6, 6) + 3.0
    stats = ClassStatistics.empty(6, rank=6)
    stats.add_classes(x, torch.zeros(500, dtype=torch.long), 1)
    f = stats.factors[0]
    cov = f @ f.T + stats.noise[0] * torch.eye(6)
    assert torch.allclose(stats.means[0], x.mean(0), atol=1e-5)
    assert torch.allclose(cov, torch.cov(x.T, correction=0), atol=1e-4)


def test_low_rank_statistics_keep_the_total_variance():
    torch.manual_seed(0)
    x = torch.randn(400, 12) * torch.linspace(3, 0.1, 12)
    stats = ClassStatistics.empty(12, rank=3)
    stats.add_classes(x, torch.zeros(400, dtype=torch.long), 1)
    total = stats.factors[0].square().sum() + 12 * stats.noise[0]
    assert torch.isclose(total, torch.cov(x.T, correction=0).trace(), rtol=1e-4)
    assert stats.factors.shape == (1, 12, 3) and stats.noise.shape == (1,)  # d·(k+1) + 2 numbers, not d²


def test_a_uniform_feature_drift_moves_every_stored_mean_by_it():
    torch.manual_seed(0)
    stats = ClassStatistics.empty(4, rank=2)
    stats.add_classes(torch.randn(40, 4), torch.arange(40) % 2, 2)
    means = stats.means.clone()
    before = torch.randn(30, 4)
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0])
    stats.compensate_drift(before, before + shift)
    assert torch.allclose(stats.means, means + shift, atol=1e-5)


def test_alignment_undoes_a_head_biased_towards_the_newest_task():
    torch.manual_seed(0)
    stats = ClassStatistics.empty(2, rank=2)
    centres = torch.tensor([[4.0, 0.0], [0.0, 4.0]])
    x = torch.cat([c + torch.randn(200, 2) for c in centres])
    y = torch.arange(2).repeat_interleave(200)
    stats.add_classes(x, y, 2)
    biased = torch.nn.Linear(2, 2)
    with torch.no_grad():
        biased.weight.copy_(torch.eye(2))
        biased.bias.copy_(torch.tensor([0.0, 10.0]))  # everything lands in class 1
    heads = type("Heads", (), {"heads": [biased]})()
    assert (biased(x).argmax(1) == y).float().mean() == 0.5
    weight, bias = align_classifier(heads, stats, steps=200, seed=0)
    assert ((x @ weight.T + bias).argmax(1) == y).float().mean() > 0.95


def test_calibration_standardises_a_heads_top_logit_on_its_own_task():
    torch.manual_seed(0)
    head, features = torch.nn.Linear(5, 3), torch.randn(100, 5)
    scale, shift = calibration_of(head, features)[0]
    top = ((head(features) - shift) / scale).max(1).values.detach()
    assert abs(float(top.mean())) < 1e-5 and abs(float(top.std()) - 1) < 1e-4
