"""The watcher and its ledger on in-memory stand-ins: each drop ends once, in arrival order; bad drops are
quarantined with a reason; claims expire, heartbeats keep them, duplicates are recorded once."""

import json
import threading
import time

import pyarrow as pa
import pytest

from pipeline.data.task_dataset import InvalidDataset, dataset_id
from pipeline.orchestrator.ledger import Ledger, LostClaim
from pipeline.orchestrator.requeue import RetryRefused, requeue
from pipeline.orchestrator.status import read_status
from pipeline.orchestrator.watcher import submit_drop
from pipeline.registry.lineage import parent_of
from tests.orchestrator.conftest import drop, parquet


def test_a_good_drop_becomes_the_current_version_and_the_ledger_tells_its_story(
    registry, wordnet_files, make_watcher
):
    drop(registry.bucket, "animals", wordnet_files[0])
    done = make_watcher().run(once=True)
    assert [d["state"] for d in done] == ["registered"]
    assert registry.lineage.current().version == done[0]["version"]
    assert registry.bucket.list("incoming/") == []
    row = read_status(registry, grace_s=3600).drops[0]
    assert (row["state"], row["task"], row["version"]) == ("registered", "animals", done[0]["version"])
    assert [s for s, _ in row["history"]] == ["claimed", "validating", "training", "evaluating", "registered"]
    for key in ("detection_latency_s", "validation_s", "train_s", "evaluate_s", "register_s"):
        assert row["timings"][key] >= 0


def test_a_half_upload_without_marker_waits_for_the_quiet_period(registry, wordnet_files, make_watcher):
    drop(registry.bucket, "partial", {"train.parquet": wordnet_files[0]["train.parquet"]}, ready=False)
    assert make_watcher(quiet_period_s=3600).run(once=True) == []
    assert registry.bucket.list("incoming/partial/") == ["incoming/partial/train.parquet"]
    registry.bucket.objects["incoming/partial/train.parquet"] = (
        wordnet_files[0]["train.parquet"],
        time.time() - 7200,
    )
    assert [d["state"] for d in make_watcher(quiet_period_s=3600).run(once=True)] == ["registered"]


BAD = {
    "not-parquet": ({"train.parquet": b"PAR1 garbage"}, "not a readable parquet"),
    "no-label": ({"train.parquet": parquet(text=["a", "b"])}, "no 'label' column"),
    "one-class": ({"train.parquet": parquet(text=["a", "b"], label=["x", "x"])}, "single class"),
    "null-label": ({"train.parquet": parquet(text=["a", "b"], label=["x", None])}, "null label"),
    "float-label": ({"train.parquet": parquet(text=["a", "b"], label=[0.1, 0.2])}, "integers or strings"),
    "empty": (
        {"train.parquet": parquet(text=pa.array([], pa.string()), label=pa.array([], pa.string()))},
        "is empty",
    ),
}


def test_each_bad_drop_is_quarantined_with_its_reason_and_the_next_good_drop_trains(
    registry, wordnet_files, make_watcher
):
    for task, (files, _) in BAD.items():
        drop(registry.bucket, task, files)
    drop(registry.bucket, "good", wordnet_files[0])
    done = {d["task"]: d for d in make_watcher().run(once=True)}
    assert done["good"]["state"] == "registered"
    for task, (_, reason) in BAD.items():
        assert done[task]["state"] == "quarantined" and reason in done[task]["reason"], task
        [key] = [k for k in registry.bucket.list(f"quarantine/{task}/") if k.endswith("reason.json")]
        assert reason in json.loads(registry.bucket.get(key))["reason"]
    assert registry.bucket.list("incoming/") == []


def test_the_same_bytes_dropped_twice_train_once(registry, wordnet_files, make_watcher):
    drop(registry.bucket, "first", wordnet_files[0])
    make_watcher().run(once=True)
    drop(registry.bucket, "again", wordnet_files[0])
    assert [d["state"] for d in make_watcher().run(once=True)] == ["duplicate"]
    assert len(registry.lineage.versions()) == 1


def test_two_watchers_started_together_train_each_drop_exactly_once_in_arrival_order(
    registry, wordnet_files, make_watcher
):
    for i in range(3):
        drop(registry.bucket, f"task{i}", wordnet_files[i])
        time.sleep(0.01)  # distinct arrival times
    watchers, results = [make_watcher(), make_watcher()], []
    threads = [
        threading.Thread(
            target=lambda w=w: results.extend(w.run(stop=lambda: not registry.bucket.list("incoming/")))
        )
        for w in watchers
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    versions = registry.lineage.versions()
    assert sorted(d["task"] for d in results) == ["task0", "task1", "task2"]
    assert len(versions) == 3 and len({v.tags["dataset_id"] for v in versions}) == 3
    by_task = {v.tags["task"]: v for v in versions}  # each version builds on the previous one
    assert [parent_of(by_task[f"task{i}"].tags) for i in range(3)] == [
        None,
        by_task["task0"].version,
        by_task["task1"].version,
    ]


def test_the_promotion_guard_registers_a_harmful_set_as_rejected_and_current_stays(
    registry, wordnet_files, make_watcher
):
    drop(registry.bucket, "first", wordnet_files[0])
    drop(registry.bucket, "second", wordnet_files[1])
    done = make_watcher(max_accuracy_drop=-1.0).run(once=True)  # a bound no set can meet
    assert [d["state"] for d in done] == ["registered", "rejected"]
    assert registry.lineage.current().version == done[0]["version"]
    rejected = registry.lineage.get(done[1]["version"])
    assert rejected.tags["promotion"] == "rejected" and "would drop" in rejected.tags["rejected_reason"]
    rows = {r["task"]: r for r in read_status(registry, 3600).drops}
    assert rows["second"]["state"] == "rejected" and "would drop" in rows["second"]["reason"]


def test_a_version_an_earlier_attempt_registered_is_finished_not_trained_again(
    registry, datasets, wordnet_files, config, make_watcher
):
    from pipeline.orchestrator.transaction import train_on_current

    def killed_before_the_alias_move(stage):
        if stage == "registered":
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        train_on_current(datasets[0], registry, config, at_stage=killed_before_the_alias_move)
    assert registry.lineage.current() is None and len(registry.lineage.versions()) == 1
    drop(registry.bucket, "wn-t0", wordnet_files[0])
    trained = []
    done = make_watcher(trainer=lambda ds, _registry: trained.append(ds)).run(once=True)
    assert trained == [] and done[0]["state"] == "registered"
    assert registry.lineage.current().version == "1" and len(registry.lineage.versions()) == 1


def test_an_expired_claim_is_taken_over_and_the_old_holder_stops(registry):
    first, second = Ledger(registry.bucket, "w1", lease_s=60), Ledger(registry.bucket, "w2", lease_s=60)
    entry = first.claim("abc", "t")
    assert entry is not None
    assert second.claim("abc", "t") is None, "a live claim is not taken over"
    taken = second.claim("abc", "t", now=entry.last_activity() + 61)
    assert taken is not None and taken.epoch == 1
    with pytest.raises(LostClaim):
        first.record(entry, "training", task="t")


def test_a_training_longer_than_the_lease_keeps_its_claim_through_heartbeats(
    registry, wordnet_files, make_watcher
):
    started, checked = threading.Event(), threading.Event()

    def slow_trainer(dataset, _registry):
        started.set()
        checked.wait(30)  # trains past the lease until the rival has tried
        raise RuntimeError("stopping here is enough for this test")

    # A lease ten heartbeats long, so a busy machine that delays a heartbeat does not lose the claim.
    watcher = make_watcher(trainer=slow_trainer, lease_s=1.0, heartbeat_s=0.1)
    drop(registry.bucket, "slow", wordnet_files[0])
    job = threading.Thread(target=lambda: watcher.run(once=True))
    job.start()
    assert started.wait(30)
    time.sleep(1.5)  # the claim itself is older than the lease by now; only heartbeats keep it
    rival = Ledger(registry.bucket, "rival", lease_s=1.0)
    assert rival.claim(dataset_id(wordnet_files[0]), "slow") is None, (
        "a heartbeating claim must not be taken over"
    )
    checked.set()
    job.join(30)
    assert rival.read(dataset_id(wordnet_files[0])).state == "failed"


def test_a_failed_drop_is_requeued_marker_last_and_other_drops_are_refused_with_a_reason(
    registry, wordnet_files, make_watcher
):
    drop(registry.bucket, "flaky", wordnet_files[0])

    def broken(dataset, _registry):
        raise RuntimeError("MLflow was down")

    assert make_watcher(trainer=broken).run(once=True)[0]["state"] == "failed"
    info = requeue(registry.bucket, Ledger(registry.bucket), "flaky")
    assert info["reason_it_failed"] == "RuntimeError: MLflow was down"
    assert Ledger(registry.bucket).read(dataset_id(wordnet_files[0])).state == "pending"
    assert {k.rsplit("/", 1)[1] for k in registry.bucket.list("incoming/flaky/")} == {
        "train.parquet",
        "test.parquet",
        "_READY",
    }
    assert [d["state"] for d in make_watcher().run(once=True)] == ["registered"]
    for name, reason in (
        ("flaky", "'flaky' is registered (v1); only a failed drop can be retried"),
        ("no-such-task", "no drop is named 'no-such-task'"),
    ):
        with pytest.raises(RetryRefused, match=reason.replace("(", r"\(").replace(")", r"\)")):
            requeue(registry.bucket, Ledger(registry.bucket), name)
    assert len(registry.lineage.versions()) == 1


def test_a_duplicate_drop_seen_by_two_watchers_is_recorded_once(registry):
    first, second = Ledger(registry.bucket, "w1"), Ledger(registry.bucket, "w2")
    assert first.record_duplicate("ds", "again", "incoming/again/", arrived=1700000000.0)
    assert not second.record_duplicate("ds", "again", "incoming/again/", arrived=1700000000.0)
    assert first.record_duplicate("ds", "again", "incoming/again/", arrived=1700000042.0), (
        "a later re-drop counts"
    )
    assert len(first.read("ds").duplicates) == 2


def test_a_claim_whose_first_event_is_not_written_yet_is_held(registry):
    registry.bucket.put_if_absent(
        "ledger/fresh/claims/000000.json",
        b'{"watcher": "A", "at": %f, "epoch": 0, "task": "t"}' % time.time(),
    )
    assert Ledger(registry.bucket, "rival", lease_s=60).claim("fresh", "t") is None


def test_a_claim_written_just_after_a_requeue_is_not_stolen(registry):
    first, rival = Ledger(registry.bucket, "first", lease_s=60), Ledger(registry.bucket, "rival", lease_s=60)
    entry = first.claim("ds1", "t")
    first.record(entry, "failed", task="t", reason="boom")
    first.requeue(first.read("ds1"), who="someone")
    # Watcher A has written its claim for the next epoch but not yet its "claimed" event.
    registry.bucket.put_if_absent(
        "ledger/ds1/claims/000001.json", b'{"watcher": "A", "at": %f, "epoch": 1, "task": "t"}' % time.time()
    )
    assert rival.claim("ds1", "t") is None


def test_submit_uploads_a_valid_folder_with_its_marker_and_refuses_an_invalid_one_before_any_put(
    registry, wordnet_files, tmp_path
):
    folder = tmp_path / "plants"
    folder.mkdir()
    for name, data in wordnet_files[0].items():
        (folder / name).write_bytes(data)
    prefix, files = submit_drop(registry.bucket, folder, "plants")
    assert prefix == "incoming/plants/" and sorted(files) == ["test.parquet", "train.parquet"]
    assert sorted(registry.bucket.list(prefix)) == [
        f"{prefix}{f}" for f in ("_READY", "test.parquet", "train.parquet")
    ]

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train.parquet").write_bytes(parquet(text=["a", "b"], label=["x", "x"]))
    with pytest.raises(InvalidDataset, match="single class.*--no-check"):
        submit_drop(registry.bucket, tmp_path / "bad", "bad")
    with pytest.raises(ValueError, match="task name"):
        submit_drop(registry.bucket, folder, "../escape")
    assert registry.bucket.list("incoming/bad/") == []


def test_taking_over_a_dead_watchers_drop_ends_its_run_killed_and_names_who_took_over(
    registry, wordnet_files, make_watcher
):
    drop(registry.bucket, "orphaned", wordnet_files[0])
    ds_id = dataset_id(wordnet_files[0])
    Ledger(registry.bucket, "w-dead").claim(ds_id, "orphaned")
    abandoned = registry.lineage.new_run("orphaned", {"dataset_id": ds_id})
    abandoned.status = "RUNNING"  # what a SIGKILLed attempt leaves in MLflow
    time.sleep(0.5)  # the dead watcher's lease runs out
    watcher = make_watcher(lease_s=0.3)
    done = watcher.run(once=True)
    assert [d["state"] for d in done] == ["registered"]
    assert abandoned.status == "KILLED" and abandoned.tags["taken_over_by"] == watcher.ledger.watcher
    assert ds_id not in registry.lineage.running_datasets(), "gc may treat it like any finished run"


def test_sigterm_mid_drop_hands_it_back_so_the_next_watcher_claims_it_at_once(
    registry, wordnet_files, make_watcher
):
    from pipeline.shutdown import Terminated

    def stopped(dataset, _registry):
        raise Terminated("stopped by SIGTERM")

    drop(registry.bucket, "stopped", wordnet_files[0])
    with pytest.raises(Terminated):
        make_watcher(trainer=stopped, lease_s=600).run(once=True)
    entry = Ledger(registry.bucket).read(dataset_id(wordnet_files[0]))
    assert entry.state == "pending" and "handed back" in entry.events[-1].reason
    done = make_watcher(lease_s=600).run(once=True)  # long before the first one's lease ends
    assert [d["state"] for d in done] == ["registered"]


def test_gc_collects_the_ray_train_checkpoints_of_ended_drops_after_the_grace_and_never_of_one_in_progress(
    registry, wordnet_files, make_watcher
):
    drop(registry.bucket, "ended", wordnet_files[0])
    assert [d["state"] for d in make_watcher().run(once=True)] == ["registered"]
    ended, running = dataset_id(wordnet_files[0]), dataset_id(wordnet_files[1])
    Ledger(registry.bucket, "w-busy").claim(running, "running")
    bucket = registry.bucket
    for ds, task in ((ended, "ended"), (running, "running")):
        bucket.put(f"checkpoints/{task}-{ds[:12]}/checkpoint_000000/progress.json", b"{}")
    assert not any(o.key.startswith("checkpoints/") for o in read_status(registry, grace_s=3600).orphans)
    for key in list(bucket.objects):
        bucket.objects[key] = (bucket.objects[key][0], 0.0)  # everything is ancient now
    found = [o for o in read_status(registry, grace_s=3600).orphans if o.key.startswith("checkpoints/")]
    assert [o.key for o in found] == [f"checkpoints/ended-{ended[:12]}/checkpoint_000000/progress.json"]
    assert "ended" in found[0].why


def test_a_drop_cleared_between_listing_and_reading_is_skipped_not_fatal(
    registry, wordnet_files, make_watcher, monkeypatch
):
    drop(registry.bucket, "gone", wordnet_files[0])
    bucket, read = registry.bucket, registry.bucket.get

    def cleared_meanwhile(key):  # another watcher finishes the drop and clears it just after our listing
        for listed in [k for k in bucket.objects if k.startswith("incoming/gone/")]:
            del bucket.objects[listed]
        return read(key)

    monkeypatch.setattr(bucket, "get", cleared_meanwhile)
    assert make_watcher().run(once=True) == []


def test_a_drop_written_as_many_parquet_files_is_trained_stored_and_read_back_by_later_tasks(
    registry, wordnet_files, make_watcher
):
    import io

    import pyarrow.parquet as pq

    rows = pq.read_table(io.BytesIO(wordnet_files[0]["train.parquet"])).to_pydict()
    parts = {  # what Spark writes: part files, a _SUCCESS marker and hidden checksums
        f"train/part-{i:05d}-8c1e.snappy.parquet": parquet(**{k: v[i::3] for k, v in rows.items()})
        for i in range(3)
    }
    extras = {"train/_SUCCESS": b"", "train/.part-00000-8c1e.snappy.parquet.crc": b"crc"}
    drop(registry.bucket, "spark", parts | extras | {"test.parquet": wordnet_files[0]["test.parquet"]})
    drop(registry.bucket, "next", wordnet_files[1])  # evaluates the first task from its stored parts
    done = make_watcher().run(once=True)
    assert [d["state"] for d in done] == ["registered", "registered"]
    # The same rows written again, the parts named afresh (as Spark does on every write): the same dataset.
    renamed = {name.replace("8c1e", "77aa"): data for name, data in parts.items()}
    drop(registry.bucket, "spark-again", renamed | {"test.parquet": wordnet_files[0]["test.parquet"]})
    again = make_watcher().run(once=True)
    assert [(d["state"], d["dataset_id"]) for d in again] == [("duplicate", done[0]["dataset_id"])]
    stored = registry.datasets.get(done[0]["dataset_id"], "spark")
    assert len(stored.files) == len(parts) + 1 and stored.train.num_rows == len(rows["label"])


def test_a_drop_that_kills_every_watcher_fails_as_poison_after_three_attempts_and_retry_queues_it_again(
    registry, wordnet_files, make_watcher
):
    drop(registry.bucket, "poison", wordnet_files[0])
    ds_id = dataset_id(wordnet_files[0])
    for attempt in range(3):  # each attempt's watcher dies (OOM, a native crash): its claim just expires
        assert Ledger(registry.bucket, f"dies-{attempt}", lease_s=0.2).claim(ds_id, "poison") is not None
        time.sleep(0.3)
    done = make_watcher(lease_s=0.2).run(once=True)
    assert [(d["state"], d["reason"][:23]) for d in done] == [("failed", "poison: 3 attempts died")]
    assert registry.bucket.list("incoming/poison/") == [] and registry.bucket.list("failed/poison/")
    assert registry.lineage.versions() == [], "the fourth attempt never trained"
    requeue(registry.bucket, Ledger(registry.bucket), "poison")
    assert [d["state"] for d in make_watcher(lease_s=0.2).run(once=True)] == ["registered"]


def test_a_drop_whose_watcher_died_twice_is_still_tried_a_third_time(registry, wordnet_files, make_watcher):
    drop(registry.bucket, "unlucky", wordnet_files[0])
    for attempt in range(2):
        Ledger(registry.bucket, f"dies-{attempt}", lease_s=0.2).claim(dataset_id(wordnet_files[0]), "unlucky")
        time.sleep(0.3)
    assert [d["state"] for d in make_watcher(lease_s=0.2).run(once=True)] == ["registered"]


class Died(BaseException):
    """A watcher killed where it stands (SIGKILL, OOM): nothing is handed back, nothing cleaned up."""


def test_files_uploaded_under_a_task_name_while_its_drop_trains_are_a_drop_of_their_own_never_deleted(
    registry, wordnet_files, make_watcher, config
):
    from pipeline.orchestrator.transaction import train_on_current

    drop(registry.bucket, "plants", wordnet_files[0])
    corrected = {
        "train.parquet": wordnet_files[1]["train.parquet"]
    }  # same task name, new bytes, no test rows

    def user_resubmits_meanwhile(dataset, reg):
        drop(registry.bucket, "plants", corrected)
        return train_on_current(dataset, reg, config, max_accuracy_drop=1.0)

    first = make_watcher(trainer=user_resubmits_meanwhile).run(once=True)
    assert [d["dataset_id"] for d in first] == [dataset_id(wordnet_files[0])]
    left = {k.rsplit("/", 1)[1]: registry.bucket.get(k) for k in registry.bucket.list("incoming/plants/")}
    assert set(left) == {"train.parquet", "_READY"} and left["train.parquet"] == corrected["train.parquet"]
    second = make_watcher().run(once=True)
    assert [(d["dataset_id"], d["state"]) for d in second] == [(dataset_id(corrected), "registered")]
    assert registry.bucket.list("incoming/") == [] and registry.bucket.list("processing/") == []


def test_a_drop_whose_watcher_died_after_claiming_it_is_taken_over_from_processing(
    registry, wordnet_files, make_watcher
):
    drop(registry.bucket, "orphaned", wordnet_files[0])

    def killed(dataset, _registry):
        raise Died

    with pytest.raises(Died):
        make_watcher(trainer=killed, lease_s=0.2).run(once=True)
    assert registry.bucket.list("incoming/") == [] and registry.bucket.list("processing/")
    time.sleep(0.3)  # its lease runs out
    assert [d["state"] for d in make_watcher(lease_s=0.2).run(once=True)] == ["registered"]
    assert registry.bucket.list("processing/") == []


def test_a_move_into_processing_cut_short_is_finished_by_the_next_watcher_and_its_leftovers_are_no_drop(
    registry, wordnet_files, make_watcher, monkeypatch
):
    drop(registry.bucket, "halfway", wordnet_files[0])
    copies = []
    copy = registry.bucket.copy

    def dies_after_one_copy(source, target):
        if copies:
            raise Died
        copies.append(target)
        copy(source, target)

    monkeypatch.setattr(registry.bucket, "copy", dies_after_one_copy)
    with pytest.raises(Died):
        make_watcher(lease_s=0.2).run(once=True)
    monkeypatch.setattr(registry.bucket, "copy", copy)
    assert len(registry.bucket.list("incoming/halfway/")) == 3, "nothing deleted before every copy exists"
    time.sleep(0.3)
    done = make_watcher(lease_s=0.2).run(once=True)
    assert [(d["dataset_id"], d["state"]) for d in done] == [(dataset_id(wordnet_files[0]), "registered")]
    assert registry.bucket.list("incoming/") == [] and registry.bucket.list("processing/") == []
    assert len(registry.lineage.versions()) == 1
