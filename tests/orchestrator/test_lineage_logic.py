"""The train → register → promote transaction, rollback and gc on in-memory stand-ins for S3 and MLflow."""

import json

import pytest

from pipeline.adapters.adapter_set import AdapterSetError
from pipeline.orchestrator.rollback import RollbackRefused, rollback
from pipeline.orchestrator.status import collect_garbage
from pipeline.orchestrator.transaction import train_on_current
from pipeline.registry.lineage import LineageError
from pipeline.registry.orphans import find_orphans

OFF = 1.0  # the tiny random backbone forgets freely: these tests are about lineage, not the guard


def test_a_version_records_its_lineage_and_the_frozen_encoder_with_the_same_head(registry, datasets, config):
    first = train_on_current(datasets[0], registry, config, max_accuracy_drop=OFF)
    second = train_on_current(datasets[1], registry, config, max_accuracy_drop=OFF)
    version = registry.lineage.get(second.version)
    assert version.tags["parent_version"] == first.version and version.tags["task"] == "wn-t1"
    assert float(version.tags["frozen_final_accuracy"]) == pytest.approx(
        second.frozen_final_accuracy, abs=1e-4
    )
    run = registry.lineage.run(second.run_id)
    assert run.status == "FINISHED" and run.tags["adapter_set_version"] == second.version
    assert run.metrics["gain_over_frozen"] == pytest.approx(
        second.final_accuracy - second.frozen_final_accuracy
    )
    assert run.params["head"] == "ridge" and run.datasets[0]["rows"] == datasets[1].train.num_rows
    assert {"plots/accuracy_matrix.png", "plots/lineage.png", "adapter_set/manifest.json"} <= set(
        run.artifacts
    )
    assert registry.lineage.current().version == second.version


def test_a_crash_before_the_alias_move_leaves_current_on_the_last_complete_set(registry, datasets, config):
    first = train_on_current(datasets[0], registry, config, max_accuracy_drop=OFF)

    def crash(stage):
        if stage == "registered":
            raise KeyboardInterrupt("killed between registration and promotion")

    with pytest.raises(KeyboardInterrupt):
        train_on_current(datasets[1], registry, config, at_stage=crash, max_accuracy_drop=OFF)
    assert registry.lineage.current().version == first.version
    assert [r.status for r in registry.lineage.runs.values()] == ["FINISHED", "KILLED"]


def test_a_set_whose_parent_is_no_longer_current_is_registered_and_marked_superseded(
    registry, datasets, config
):
    first = train_on_current(datasets[0], registry, config, max_accuracy_drop=OFF)

    def someone_else_promotes(stage):  # another job moves `current` while this one registers
        if stage == "published":
            train_on_current(datasets[2], registry, config, max_accuracy_drop=OFF)

    late = train_on_current(
        datasets[1], registry, config, at_stage=someone_else_promotes, max_accuracy_drop=OFF
    )
    assert not late.promoted and late.parent == first.version
    assert "not its parent" in registry.lineage.get(late.version).tags["superseded"]


def test_rollback_moves_current_back_needs_force_for_a_rejected_set_and_is_a_no_op_on_current(
    registry, datasets, config
):
    v1 = train_on_current(datasets[0], registry, config, max_accuracy_drop=OFF)
    v2 = train_on_current(datasets[1], registry, config, max_accuracy_drop=-1.0)  # a bound no set can meet
    assert not v2.promoted and v2.rejected_reason
    assert rollback(registry, v1.version) is None  # already current
    with pytest.raises(RollbackRefused, match="rejected by the promotion guard"):
        rollback(registry, v2.version)
    assert registry.lineage.current().version == v1.version
    move = rollback(registry, v2.version, reason="accept the regression", force=True)
    assert (move.from_version, move.to_version) == (v1.version, v2.version)
    assert registry.lineage.moves()[-1]["reason"] == "accept the regression"


def test_rollback_to_a_missing_or_corrupt_set_is_refused_and_current_stays(registry, datasets, config):
    v1 = train_on_current(datasets[0], registry, config, max_accuracy_drop=OFF)
    v2 = train_on_current(datasets[1], registry, config, max_accuracy_drop=OFF)
    with pytest.raises(LineageError, match="does not exist"):
        rollback(registry, "999")
    manifest = json.loads(registry.bucket.get(v1.set_uri.removeprefix(registry.bucket.uri(""))))
    registry.bucket.put(f"adapter-sets/objects/{manifest['tasks'][0]['head']}", b"tampered")
    with pytest.raises(AdapterSetError, match="does not match its SHA-256"):
        rollback(registry, v1.version)
    assert registry.lineage.current().version == v2.version


def test_gc_deletes_only_what_no_version_needs_after_the_grace_and_never_a_dataset_in_progress(
    registry, datasets, config
):
    kept = train_on_current(datasets[0], registry, config, max_accuracy_drop=OFF)
    bucket = registry.bucket
    bucket.put("adapter-sets/manifests/dead.json", b"{}")  # a job that died before MLflow
    bucket.put("datasets/gone/train.parquet", b"PAR1")  # a dataset nothing was trained on
    bucket.put("datasets/busy/train.parquet", b"PAR1")  # a drop a watcher is working on
    with registry.lineage.training_run("busy on v1", {"dataset_id": "running"}):
        bucket.put("datasets/running/train.parquet", b"PAR1")  # a training still RUNNING in MLflow
        assert find_orphans(bucket, [registry.lineage], grace_s=3600) == [], "young objects are spared"
        bucket.clock = lambda: 0.0  # everything written from now on is ancient
        for key in list(bucket.objects):
            bucket.objects[key] = (bucket.objects[key][0], 0.0)
        found = {o.key for o in find_orphans(bucket, [registry.lineage], grace_s=3600, busy={"busy"})}
        assert found == {"adapter-sets/manifests/dead.json", "datasets/gone/train.parquet"}
    deleted = collect_garbage(registry, grace_s=3600)
    assert {o.key for o in deleted} == found | {
        "datasets/busy/train.parquet",
        "datasets/running/train.parquet",
    }
    assert bucket.exists(kept.set_uri.removeprefix(bucket.uri(""))), "a registered set is never an orphan"
    assert rollback(registry, kept.version) is None  # and it still verifies


def test_a_set_on_a_parent_registered_before_per_class_accuracy_starts_its_class_history_blank(
    registry, datasets, config
):
    from pipeline.learn.recipe import train_task
    from pipeline.orchestrator.transaction import earlier_tasks, score, starting_model
    from pipeline.registry.current import load_current

    train_on_current(datasets[0], registry, config, max_accuracy_drop=OFF)
    parent = load_current(registry)
    for key in ("classes", "frozen_classes"):  # what a set of an earlier release carries
        del parent.manifest["metrics"][key]
    model = starting_model(parent, config, None)
    earlier, task = earlier_tasks(registry, model), datasets[1].to_task()
    train_task(model, task)
    scored = score(registry, model, [*earlier, task], parent)
    assert scored.classes.stages[0] == {} and len(scored.classes.stages[1]) == 8
    rows = {r["class"]: r for r in scored.classes.rows()}
    assert all(rows[name]["accuracy"][0] is None for name in model.classes)  # unknown, not zero
    assert len(scored.classes.frozen) == 2  # the reference is refitted on the whole chain every time


def test_a_ray_worker_or_tune_trial_loads_current_from_its_own_cache_with_the_configuration_it_trains_with(
    registry, datasets, config, tmp_path
):
    import torch

    from pipeline.registry.current import load_current, load_parent
    from pipeline.registry.store import AdapterSetStore

    train_on_current(datasets[0], registry, config, max_accuracy_drop=OFF)
    current = load_current(registry)
    sampled = current.model.config.with_overrides(lr=0.123, sparsity=0.25)  # what a trial or the driver sends
    own_cache = AdapterSetStore(registry.bucket, tmp_path / "rank1")
    loaded = load_parent(own_cache, current.set_id, config=sampled)
    assert (loaded.set_id, loaded.manifest) == (current.set_id, current.manifest)
    assert loaded.model.config == sampled and loaded.model.gate.config == sampled.gate
    # Both were read from the same safetensors files: equal bit for bit, or a different set was loaded.
    mine, theirs = loaded.model.state_dict(), current.model.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert (tmp_path / "rank1" / "sets" / current.set_id / "manifest.json").exists()
    assert (
        load_parent(own_cache, None, config=sampled).model is None
    )  # a lineage's first set: nothing to load
