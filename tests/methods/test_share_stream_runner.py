"""Share and one LoRA per task through the same tasks, heads and metrics, scored task-incrementally."""

import copy

import pytest
import torch

from pipeline.bench.continual import summarise
from pipeline.bench.report import markdown
from pipeline.learn.config import TrainConfig
from pipeline.methods import method_of
from pipeline.methods.share.model import ShareConfig, TaskSelectedModel
from pipeline.methods.share.runner import run_task_id_stream


def _run(method, tiny_bert, tokenizer, tasks):
    config = TrainConfig(epochs=1, batch_size=8, lr=5e-3, seed=0)
    plain = ShareConfig(
        lr=None, weight_decay=0.0, warmup=0.0
    )  # the training config's lr, as the other methods
    model = TaskSelectedModel(
        config, method_of(method).kind, plain, backbone=copy.deepcopy(tiny_bert), tokenizer=tokenizer
    )
    return run_task_id_stream(tasks, config, method, model=model), model


def test_one_lora_per_task_never_forgets_and_stores_one_lora_per_task(tiny_bert, tokenizer, wordnet_tasks):
    result, model = _run("lora-per-task", tiny_bert, tokenizer, wordnet_tasks)
    matrix = result.til.matrix()
    assert matrix[0][0] == matrix[0][1] == matrix[0][2]  # its factors and head are never touched again
    per_lora = sum(layer.rank * (layer.in_features + layer.out_features) for layer in model.layers.values())
    assert result.stored_params == 3 * per_lora


def test_share_rows_are_task_incremental_only_and_summarise_without_class_incremental_scores(
    tiny_bert, tokenizer, wordnet_tasks
):
    result, model = _run("share", tiny_bert, tokenizer, wordnet_tasks)
    row = {**result.row(), "ordering": 0}
    assert row["avg_accuracy"] is None and row["accuracy_matrix"] is None
    # The last stage's scores are the model's own task-selected predictions, and A is the mean over stages of
    # the accuracy on every task seen so far, pooled.
    predicted = [
        int((model.task_logits(task.test_inputs, j).argmax(1) == torch.tensor(task.test_labels)).sum())
        for j, task in enumerate(wordnet_tasks)
    ]
    assert result.til.correct[-1] == predicted and result.til.counts == [
        len(t.test_labels) for t in wordnet_tasks
    ]
    assert row["til_final_accuracy"] == sum(predicted) / sum(result.til.counts)
    pooled = [sum(result.til.correct[t]) / sum(result.til.counts[: t + 1]) for t in range(3)]
    assert row["til_avg_accuracy"] == pytest.approx(sum(pooled) / 3, rel=1e-12)
    assert [r[-1] for r in row["til_accuracy_matrix"]] == [
        c / n for c, n in zip(predicted, result.til.counts)
    ]
    assert [d.startswith("k=") for d in row["decisions"]] == [True] * 3
    assert len(row["reprojection_errors"]) == 3
    layers = list(model.layers.values())
    k = [(layer.basis_a.shape[1], layer.basis_b.shape[1]) for layer in layers]
    expected = sum(
        ka * layer.in_features + kb * layer.out_features + 3 * (ka + kb) * layer.rank
        for (ka, kb), layer in zip(k, layers, strict=True)
    )
    assert row["stored_params"] == expected
    summary = summarise([row])[0]
    assert summary["avg_accuracy"] is None and summary["til_avg_accuracy"] == row["til_avg_accuracy"]
    report = {
        "tier": "ci",
        "rows": [row],
        "summary": [summary],
        "config": {},
        "started": "now",
        "duration_s": 1.0,
        "environment": {"platform": "test", "device": "cpu", "cpu_count": 2, "packages": {}},
    }
    assert "| share | linear | 1 | — | — | — |" in markdown(report, "litelora bench")
