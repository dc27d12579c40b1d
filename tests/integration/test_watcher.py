"""The orchestrator on the real stack: a drop put with plain S3 puts becomes the current version; `litelora submit`.
The same path as 2-worker Ray Train jobs, a drop on top of another, is tests/integration/test_demo.py's. The
watcher's logic (claims, duplicates, quarantine, order) is unit-tested on in-memory stand-ins in
tests/orchestrator/test_drops.py."""

import io
import json

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
from pipeline.orchestrator.transaction import train_on_current
from pipeline.orchestrator.watcher import READY_BODY, WatchConfig, Watcher
from pipeline.registry.bucket import Bucket
from pipeline.registry.lineage import Lineage
from pipeline.registry.store import Registry

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture
def s3(conn):
    """What `aws s3 cp` does: plain puts into the bucket."""
    client = boto3.client(
        "s3",
        endpoint_url=conn.s3_endpoint,
        aws_access_key_id=conn.access_key,
        aws_secret_access_key=conn.secret_key,
        region_name="us-east-1",
        config=Config(read_timeout=15, retries={"max_attempts": 2}),
    )
    return lambda key, data: client.put_object(Bucket=conn.bucket, Key=key, Body=data)


def _parquet(**columns) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def wordnet():
    tasks = split_wordnet20(1993, "ci")
    return [
        {
            "train.parquet": _parquet(
                text=t.train_inputs[::4], label=[t.classes[y] for y in t.train_labels[::4]]
            ),
            "test.parquet": _parquet(
                text=t.test_inputs[::4], label=[t.classes[y] for y in t.test_labels[::4]]
            ),
        }
        for t in tasks
    ]


def _drop(s3, task: str, files: dict, ready: bool = True) -> None:
    for name, data in files.items():
        s3(f"incoming/{task}/{name}", data)
    if ready:
        s3(f"incoming/{task}/_READY", READY_BODY)


@pytest.fixture
def watcher_factory(conn, tiny_backbone_dir):
    config = TrainConfig(
        backbone=BackboneConfig(name=str(tiny_backbone_dir)), epochs=1, batch_size=16, seed=0
    )

    def make(max_accuracy_drop=1.0, **kw):
        # The tiny random backbone forgets freely; the guard is off unless a test is about the guard.
        return Watcher(
            Registry.connect(conn),
            WatchConfig(poll_s=0.2, **kw),
            log=lambda m: None,
            trainer=lambda ds, _registry: train_on_current(
                ds, Registry.connect(conn), config, max_accuracy_drop=max_accuracy_drop
            ),
        )

    return make


def test_a_good_drop_becomes_the_current_version(conn, s3, wordnet, watcher_factory):
    _drop(s3, "animals", wordnet[0])
    done = watcher_factory().run(once=True)
    assert [d["state"] for d in done] == ["registered"]
    assert Lineage(conn).current().version == done[0]["version"]
    assert Bucket.connect(conn).list("incoming/") == []
    rows = json.loads(runner.invoke(app, ["status", "--json"]).stdout)["drops"]
    assert (
        rows[0]["state"] == "registered"
        and rows[0]["task"] == "animals"
        and rows[0]["version"] == done[0]["version"]
    )
    states = [s for s, _ in rows[0]["history"]]
    assert states == ["claimed", "validating", "training", "evaluating", "registered"]
    for key in ("detection_latency_s", "validation_s", "train_s", "evaluate_s", "register_s"):
        assert rows[0]["timings"][key] >= 0


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
