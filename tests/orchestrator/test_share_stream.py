"""A Share stream on in-memory stand-ins: drops naming `"method": "share"` train, register and promote like any
task, their versions load as Share sets, predictions name their task, and the stream keeps its method."""

import json
from dataclasses import replace

import pytest

from pipeline.adapters.adapter_set import TASK_SELECTED_FORMAT
from pipeline.learn.frozen import FeatureCache, frozen_reference
from pipeline.methods.share.model import TaskSelectedModel
from pipeline.registry.current import load_current
from pipeline.serving.predictor import BadRequest, Predictor
from tests.orchestrator.conftest import drop


def share_drop(files: dict, **fields) -> dict:
    return {**files, "task.json": json.dumps({"stream": "shared", **fields}).encode()}


def test_share_drops_register_versions_whose_sets_answer_for_a_named_task(
    registry, wordnet_files, datasets, make_watcher, config
):
    drop(registry.bucket, "s0", share_drop(wordnet_files[0], method="share"))
    drop(registry.bucket, "s1", share_drop(wordnet_files[1]))  # later drops may leave the method out
    drop(registry.bucket, "plain", wordnet_files[2])
    done = make_watcher().run(once=True)

    assert [d["state"] for d in done] == ["registered"] * 3
    shared = registry.for_stream("shared")
    versions = shared.lineage.versions()
    assert [(v.tags["task"], v.tags["decision"]) for v in versions] == [("s0", "store"), ("s1", "store")]
    assert versions[1].tags["parent_version"] == versions[0].version
    assert json.loads(versions[1].tags["config"])["method"] == "share"
    current = load_current(shared)
    assert isinstance(current.model, TaskSelectedModel) and current.manifest["format"] == TASK_SELECTED_FORMAT
    metrics = current.metrics
    # Task-incremental rows (the task is named), with the frozen encoder's beside them.
    assert metrics["correct"] == metrics["til_correct"] and len(metrics["til_correct"]) == 2
    tasks = [d.to_task() for d in datasets[:2]]
    reference = frozen_reference(
        replace(current.model.config, head="linear"), tasks, FeatureCache(config.backbone)
    )
    assert metrics["frozen_final_accuracy"] == pytest.approx(reference.til.final_accuracy)  # task-incremental
    known = set(datasets[0].classes()) | set(datasets[1].classes())
    assert set(metrics["classes"][-1]) == set(metrics["frozen_classes"][-1]) == known  # per class, both
    assert load_current(registry).model.config.method == "litelora", "the default stream is untouched"

    predictor = Predictor(current.model, current.version)
    texts = datasets[1].to_task().test_inputs[:4]
    with pytest.raises(BadRequest, match="name the task"):
        predictor.predict(texts)
    answer = predictor.predict(texts, task="s1")
    assert {p.label for p in answer} <= set(datasets[1].classes()) and {p.task for p in answer} == {"s1"}


def test_a_drop_naming_another_method_than_its_streams_is_quarantined_with_what_to_do(
    registry, wordnet_files, make_watcher
):
    drop(registry.bucket, "s0", share_drop(wordnet_files[0], method="share"))
    drop(registry.bucket, "plain", wordnet_files[1])
    drop(registry.bucket, "gated", share_drop(wordnet_files[2], method="litelora"))
    drop(registry.bucket, "shared-default", {**wordnet_files[3], "task.json": b'{"method": "share"}'})
    done = {d["task"]: d for d in make_watcher().run(once=True)}

    assert done["s0"]["state"] == done["plain"]["state"] == "registered"
    for name, runs in (("gated", "share"), ("shared-default", "litelora")):
        assert done[name]["state"] == "quarantined", name
        assert f"runs '{runs}'" in done[name]["reason"] and "another stream" in done[name]["reason"]
    assert [v.tags["task"] for v in registry.for_stream("shared").lineage.versions()] == ["s0"]
    assert [v.tags["task"] for v in registry.lineage.versions()] == ["plain"]


def test_a_search_is_refused_before_any_trial_on_a_share_stream_or_for_a_drop_its_stream_would_refuse(
    registry, wordnet_files, make_watcher, monkeypatch
):
    from pipeline.data.task_dataset import InvalidDataset, TaskDataset
    from pipeline.tuning import search

    def tune(stream: str, name: str, files: dict):
        monkeypatch.setattr(search.Registry, "connect", lambda conn: registry.for_stream(stream))
        return search.tune_task(TaskDataset.from_files(name, files), conn=None)

    refusal = "runs share: the search covers the LiteLoRA gate's knobs"
    with pytest.raises(search.NothingToTune, match=refusal):  # a new stream whose first drop names Share
        tune("shared", "s0", share_drop(wordnet_files[0], method="share"))
    drop(registry.bucket, "s0", share_drop(wordnet_files[0], method="share"))
    drop(registry.bucket, "plain", wordnet_files[1])
    make_watcher().run(once=True)
    with pytest.raises(search.NothingToTune, match=refusal):  # a Share stream with sets: its manifest says so
        tune("shared", "s1", share_drop(wordnet_files[2]))
    with pytest.raises(InvalidDataset, match="runs 'litelora'"):  # refused before the trials, not after them
        tune("default", "odd", {**wordnet_files[2], "task.json": b'{"method": "share"}'})


def test_a_gated_set_asked_for_a_named_task_answers_among_that_tasks_classes(
    registry, wordnet_files, datasets, make_watcher
):
    drop(registry.bucket, "a", wordnet_files[0])
    drop(registry.bucket, "b", wordnet_files[1])
    make_watcher().run(once=True)
    predictor = Predictor(load_current(registry).model, "2")
    texts = datasets[0].to_task().test_inputs[:6]
    everything = predictor.predict(texts, top=50)
    named = predictor.predict(texts, top=50, task="a")
    assert all(len(p.scores) == 8 for p in everything), "every class the set knows"
    assert all(set(p.scores) == set(datasets[0].classes()) and p.task == "a" for p in named)
    with pytest.raises(BadRequest, match="no task 'c' in v2; its tasks: a, b"):
        predictor.predict(texts, task="c")


def test_submit_starts_a_share_stream_from_a_folder_without_task_json(
    registry, wordnet_files, make_watcher, tmp_path
):
    from pipeline.orchestrator.watcher import submit_drop

    for name, data in wordnet_files[0].items():
        (tmp_path / name).write_bytes(data)
    submit_drop(registry.bucket, tmp_path, "topics", fields={"stream": "support", "method": "share"})
    assert [d["state"] for d in make_watcher().run(once=True)] == ["registered"]
    assert load_current(registry.for_stream("support")).model.config.method == "share"
