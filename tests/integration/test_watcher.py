"""The orchestrator on the real stack: drops become versions exactly once, bad drops are quarantined."""

import io
import json
import threading
import time

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.config import Config
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.data.wordnet import split_wordnet20
from pipeline.learn.backbone import BackboneConfig
from pipeline.learn.config import TrainConfig
from pipeline.orchestrator.ledger import Ledger, LostClaim
from pipeline.orchestrator.step import train_on_current
from pipeline.orchestrator.watcher import READY_BODY, WatchConfig, Watcher
from pipeline.registry.lineage import Lineage
from pipeline.registry.objects import Bucket

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture
def s3(conn):
    """What `aws s3 cp` does: plain puts into the bucket."""
    client = boto3.client("s3", endpoint_url=conn.s3_endpoint, aws_access_key_id=conn.access_key,
                          aws_secret_access_key=conn.secret_key, region_name="us-east-1",
                          config=Config(read_timeout=15, retries={"max_attempts": 2}))
    return lambda key, data: client.put_object(Bucket=conn.bucket, Key=key, Body=data)


def _parquet(**columns) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def wordnet():
    tasks = split_wordnet20(1993, "ci")
    return [{"train.parquet": _parquet(text=t.train_inputs[::4], label=[t.classes[y] for y in t.train_labels[::4]]),
             "test.parquet": _parquet(text=t.test_inputs[::4], label=[t.classes[y] for y in t.test_labels[::4]])}
            for t in tasks]


def _drop(s3, task: str, files: dict, ready: bool = True) -> None:
    for name, data in files.items():
        s3(f"incoming/{task}/{name}", data)
    if ready:
        s3(f"incoming/{task}/_READY", READY_BODY)


@pytest.fixture
def watcher_factory(conn, tiny_backbone_dir):
    config = TrainConfig(backbone=BackboneConfig(name=str(tiny_backbone_dir)), epochs=1, batch_size=16, seed=0)

    def make(max_accuracy_drop=1.0, **kw):
        # The tiny random backbone forgets freely; the guard is off unless a test is about the guard.
        return Watcher(conn, WatchConfig(poll_s=0.2, **kw), log=lambda m: None,
                       trainer=lambda ds: train_on_current(ds, conn, config, max_accuracy_drop=max_accuracy_drop))

    return make


def test_a_good_drop_becomes_the_current_version(conn, s3, wordnet, watcher_factory):
    _drop(s3, "animals", wordnet[0])
    done = watcher_factory().run(once=True)
    assert [d["state"] for d in done] == ["registered"]
    assert Lineage(conn).current().version == done[0]["version"]
    assert Bucket.connect(conn).list("incoming/") == []
    rows = json.loads(runner.invoke(app, ["status", "--json"]).stdout)["drops"]
    assert rows[0]["state"] == "registered" and rows[0]["task"] == "animals" and rows[0]["version"] == done[0]["version"]
    states = [s for s, _ in rows[0]["history"]]
    assert states == ["claimed", "validating", "training", "evaluating", "registered"]
    for key in ("detection_latency_s", "validation_s", "train_s", "evaluate_s", "register_s"):
        assert rows[0]["timings"][key] >= 0


def test_a_half_upload_without_marker_waits_for_the_quiet_period(conn, s3, wordnet, watcher_factory):
    _drop(s3, "partial", {"train.parquet": wordnet[0]["train.parquet"]}, ready=False)
    assert watcher_factory(quiet_period_s=3600).run(once=True) == []
    assert Bucket.connect(conn).list("incoming/partial/") == ["incoming/partial/train.parquet"]


BAD = {
    "not-parquet": ({"train.parquet": b"PAR1 garbage"}, "not a readable parquet"),
    "no-label": ({"train.parquet": _parquet(text=["a", "b"])}, "no 'label' column"),
    "one-class": ({"train.parquet": _parquet(text=["a", "b"], label=["x", "x"])}, "single class"),
    "null-label": ({"train.parquet": _parquet(text=["a", "b"], label=["x", None])}, "null label"),
    "float-label": ({"train.parquet": _parquet(text=["a", "b"], label=[0.1, 0.2])}, "integers or strings"),
    "empty": ({"train.parquet": _parquet(text=pa.array([], pa.string()), label=pa.array([], pa.string()))}, "is empty"),
}


def test_each_bad_drop_is_quarantined_with_its_reason_and_the_next_good_drop_trains(conn, s3, wordnet,
                                                                                     watcher_factory):
    for task, (files, _) in BAD.items():
        _drop(s3, task, files)
    _drop(s3, "good", wordnet[0])
    done = {d["task"]: d for d in watcher_factory().run(once=True)}
    assert done["good"]["state"] == "registered"
    bucket = Bucket.connect(conn)
    for task, (_, reason) in BAD.items():
        assert done[task]["state"] == "quarantined", task
        assert reason in done[task]["reason"], task
        reason_keys = [k for k in bucket.list(f"quarantine/{task}/") if k.endswith("reason.json")]
        assert reason in json.loads(bucket.get(reason_keys[0]))["reason"]
    assert bucket.list("incoming/") == []


def test_the_same_bytes_dropped_twice_train_once(conn, s3, wordnet, watcher_factory):
    _drop(s3, "first", wordnet[0])
    watcher_factory().run(once=True)
    _drop(s3, "again", wordnet[0])
    done = watcher_factory().run(once=True)
    assert [d["state"] for d in done] == ["duplicate"]
    assert len(Lineage(conn).versions()) == 1


def test_two_watchers_started_together_train_each_drop_exactly_once(conn, s3, wordnet, watcher_factory):
    for i in range(3):
        _drop(s3, f"task{i}", wordnet[i])
    bucket = Bucket.connect(conn)
    watchers = [watcher_factory(), watcher_factory()]
    results: list = []
    threads = [threading.Thread(target=lambda w=w: results.extend(w.run(stop=lambda: not bucket.list("incoming/"))))
               for w in watchers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    versions = Lineage(conn).versions()
    assert sorted(d["task"] for d in results) == ["task0", "task1", "task2"]
    assert len(versions) == 3
    assert len({v.tags["dataset_id"] for v in versions}) == 3
    # Arrival order holds across watchers: each version builds on the previous one.
    chain = {v.tags["task"]: v.tags["parent_version"] for v in versions}
    by_task = {v.tags["task"]: v.version for v in versions}
    assert chain == {"task0": "none", "task1": by_task["task0"], "task2": by_task["task1"]}


def test_the_promotion_guard_registers_a_harmful_set_as_rejected_and_current_stays(conn, s3, wordnet,
                                                                                   watcher_factory):
    _drop(s3, "first", wordnet[0])
    _drop(s3, "second", wordnet[1])
    done = watcher_factory(max_accuracy_drop=-1.0).run(once=True)  # a bound no set can meet
    assert [d["state"] for d in done] == ["registered", "rejected"]
    lineage = Lineage(conn)
    assert lineage.current().version == done[0]["version"]
    rejected = lineage.get(done[1]["version"])
    assert rejected.tags["promotion"] == "rejected" and "would drop" in rejected.tags["rejected_reason"]
    rows = {r["task"]: r for r in json.loads(runner.invoke(app, ["status", "--json"]).stdout)["drops"]}
    assert rows["second"]["state"] == "rejected" and "would drop" in rows["second"]["reason"]


def test_an_expired_claim_is_taken_over_and_the_old_holder_stops(conn):
    bucket = Bucket.connect(conn)
    first, second = Ledger(bucket, "w1", lease_s=60), Ledger(bucket, "w2", lease_s=60)
    entry = first.claim("abc", "t")
    assert entry is not None
    assert second.claim("abc", "t") is None, "a live claim is not taken over"
    taken = second.claim("abc", "t", now=entry.last_activity() + 61)
    assert taken is not None and taken.epoch == 1
    with pytest.raises(LostClaim):
        first.record(entry, "training", task="t")


@pytest.mark.ray
def test_a_drop_is_trained_by_a_two_worker_ray_train_job_and_registered(conn, s3, wordnet, tiny_backbone_dir,
                                                                         ray_node):
    from pipeline.orchestrator.ray_train import ScalingSpec, ray_fit

    config = TrainConfig(backbone=BackboneConfig(name=str(tiny_backbone_dir)), epochs=1, batch_size=16, seed=0)
    fit = ray_fit(conn, ScalingSpec(num_workers=2))
    watcher = Watcher(conn, WatchConfig(poll_s=0.2), log=lambda m: None,
                      trainer=lambda ds: train_on_current(ds, conn, config, fit=fit, max_accuracy_drop=1.0))
    _drop(s3, "ddp0", wordnet[0])
    _drop(s3, "ddp1", wordnet[1])
    done = watcher.run(once=True)
    assert [d["state"] for d in done] == ["registered", "registered"]
    versions = Lineage(conn).versions()
    assert [v.tags["parent_version"] for v in versions] == ["none", versions[0].version]
    assert Bucket.connect(conn).list("checkpoints/"), "Ray Train stores its checkpoints in the bucket"


def test_submit_uploads_a_valid_drop_and_refuses_an_invalid_one(conn, wordnet, tmp_path):
    folder = tmp_path / "plants"
    folder.mkdir()
    for name, data in wordnet[0].items():
        (folder / name).write_bytes(data)
    ok = runner.invoke(app, ["submit", str(folder), "--task", "plants"])
    assert ok.exit_code == 0, ok.output
    objects = Bucket.connect(conn).list_objects("incoming/plants/")
    keys = [o["Key"].rsplit("/", 1)[1] for o in sorted(objects, key=lambda o: o["LastModified"])]
    assert set(keys) == {"train.parquet", "test.parquet", "_READY"}

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train.parquet").write_bytes(_parquet(text=["a", "b"], label=["x", "x"]))
    bad = runner.invoke(app, ["submit", str(tmp_path / "bad"), "--task", "bad"])
    assert bad.exit_code == 1 and "single class" in bad.output
    assert Bucket.connect(conn).list("incoming/bad/") == []


def test_a_training_longer_than_the_lease_keeps_its_claim_through_heartbeats(conn, s3, wordnet):
    from pipeline.data.task_dataset import dataset_id

    started = threading.Event()

    def slow_trainer(dataset):
        started.set()
        time.sleep(7.0)  # far beyond the 3 s lease below
        raise RuntimeError("stopping here is enough for this test")

    watcher = Watcher(conn, WatchConfig(poll_s=0.2, lease_s=3.0, heartbeat_s=0.3), trainer=slow_trainer,
                      log=lambda m: None)
    _drop(s3, "slow", wordnet[0])
    job = threading.Thread(target=lambda: watcher.run(once=True))
    job.start()
    assert started.wait(60)
    time.sleep(4.5)  # the claim itself is older than the lease by now; only heartbeats keep it
    rival = Ledger(Bucket.connect(conn), "rival", lease_s=3.0)
    assert rival.claim(dataset_id(wordnet[0]), "slow") is None, "a heartbeating claim must not be taken over"
    job.join(30)
    assert rival.read(dataset_id(wordnet[0])).state == "failed"


def test_retry_refuses_a_drop_that_did_not_fail_with_one_line(conn, s3, wordnet, watcher_factory):
    _drop(s3, "fine", wordnet[0])
    watcher_factory().run(once=True)
    for name, reason in (("fine", "'fine' is registered (v1); only a failed drop can be retried"),
                         ("no-such-task", "no drop is named 'no-such-task'")):
        result = runner.invoke(app, ["retry", name])
        assert result.exit_code == 1 and reason in result.output
        assert len(result.output.strip().splitlines()) == 1
    assert len(Lineage(conn).versions()) == 1


def test_a_duplicate_drop_seen_by_two_watchers_is_recorded_once(conn):
    bucket = Bucket.connect(conn)
    first, second = Ledger(bucket, "w1"), Ledger(bucket, "w2")
    assert first.record_duplicate("ds", "again", "incoming/again/", arrived=1700000000.0)
    assert not second.record_duplicate("ds", "again", "incoming/again/", arrived=1700000000.0)
    assert first.record_duplicate("ds", "again", "incoming/again/", arrived=1700000042.0), "a later re-drop counts"
    assert len(first.read("ds").duplicates) == 2


def test_a_claim_whose_first_event_is_not_written_yet_is_held(conn):
    bucket = Bucket.connect(conn)
    bucket.put_if_absent("ledger/fresh/claims/000000.json", b'{"watcher": "A", "at": %f, "epoch": 0, "task": "t"}'
                         % time.time())
    assert Ledger(bucket, "rival", lease_s=60).claim("fresh", "t") is None
