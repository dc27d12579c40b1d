"""Hostile input on the real stack: object keys built to escape the drop prefix, manifests pointing outside the
bucket or the set, a pickle renamed .safetensors. Each is refused with a reason; nothing is unpickled, and
nothing is written outside the bucket's own prefixes and the state directory."""

import hashlib
import io
import json
import pickle
from pathlib import Path

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.data.task_dataset import TaskDataset, write_drop
from pipeline.data.wordnet import split_wordnet20
from pipeline.learn.backbone import BackboneConfig
from pipeline.learn.config import TrainConfig
from pipeline.orchestrator.transaction import train_on_current
from pipeline.orchestrator.watcher import WatchConfig, Watcher
from pipeline.registry.bucket import Bucket
from pipeline.registry.lineage import Lineage
from pipeline.registry.store import Registry

pytestmark = [pytest.mark.integration, pytest.mark.chaos]
runner = CliRunner()
OUR_PREFIXES = {
    "incoming",
    "quarantine",
    "failed",
    "ledger",
    "datasets",
    "adapter-sets",
    "checkpoints",
    "current-links",
    "mlflow",
}

HOSTILE_KEYS = [
    "incoming/t1/../escape/train.parquet",  # parent reference
    "incoming/../../etc/train.parquet",  # out of incoming/ altogether
    "/incoming/abs/train.parquet",  # absolute
    "incoming//double/train.parquet",  # empty segment
    "incoming/back\\slash/train.parquet",  # a Windows separator
    "incoming/" + "x" * 300 + "/train.parquet",  # one very long segment
    "incoming/" + "/".join(["y" * 50] * 22) + "/train.parquet",  # 1,100 characters
    "incoming/tâche-ünï/train.parquet",  # unicode task name
    "incoming/任务/train.parquet",
    "incoming/nested/deeper/train.parquet",  # the data file one level too deep
]


def _parquet(**columns) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


@pytest.fixture
def config(tiny_backbone_dir):
    return TrainConfig(backbone=BackboneConfig(name=str(tiny_backbone_dir)), epochs=1, batch_size=16, seed=0)


@pytest.fixture
def registered(conn, config, tmp_path):
    """One registered version, to tamper with copies of its set."""
    task = split_wordnet20(1993, "ci")[0]
    task.train_inputs, task.train_labels = task.train_inputs[::4], task.train_labels[::4]
    return train_on_current(
        TaskDataset.from_dir(write_drop(task, tmp_path / "t0"), name="t0"),
        Registry.connect(conn),
        config,
        max_accuracy_drop=1.0,
    )


def test_keys_that_escape_or_abuse_the_drop_prefix_are_refused_by_s3_or_quarantined(
    conn, config, chaos_report
):
    client = boto3.client(
        "s3",
        endpoint_url=conn.s3_endpoint,
        aws_access_key_id=conn.access_key,
        aws_secret_access_key=conn.secret_key,
        region_name="us-east-1",
    )
    body = _parquet(text=["a cat", "an oak", "a dog", "a pine"], label=["animal", "plant", "animal", "plant"])
    refused_by_s3 = {}
    for key in HOSTILE_KEYS:
        try:
            client.put_object(Bucket=conn.bucket, Key=key, Body=body)
        except ClientError as err:
            refused_by_s3[key] = err.response["Error"]["Code"]
    buckets_before = {b["Name"] for b in client.list_buckets()["Buckets"]}
    listed = [o["Key"] for o in client.list_objects_v2(Bucket=conn.bucket).get("Contents", [])]

    watcher = Watcher(
        Registry.connect(conn),
        WatchConfig(quiet_period_s=0, poll_s=0.2),
        log=lambda m: None,
        trainer=lambda ds, _registry: train_on_current(
            ds, Registry.connect(conn), config, max_accuracy_drop=1.0
        ),
    )
    done = {d["task"]: d for d in watcher.run(once=True)}

    bucket = Bucket.connect(conn)
    assert bucket.list("incoming/") == [], "every hostile drop was dealt with"
    for task in ("tâche-ünï", "任务"):
        assert done[task]["state"] == "quarantined" and "task name" in done[task]["reason"]
    assert done["nested"]["state"] == "quarantined" and "no train.parquet" in done["nested"]["reason"]
    for task, outcome in done.items():
        assert outcome["state"] in ("quarantined", "registered", "duplicate"), (task, outcome)
    # What S3 accepted was normalised inside incoming/ (abs, double): a plain drop there trains like any other
    # (every hostile key carries the same bytes, so the second such drop is a duplicate).
    registered = sorted(t for t, d in done.items() if d["state"] in ("registered", "duplicate"))
    quarantine = bucket.list("quarantine/")
    assert all(k.split("/")[1] in (*done, "invalid-task-name") for k in quarantine)
    assert {k.split("/")[0] for k in bucket.list("")} <= OUR_PREFIXES
    assert {b["Name"] for b in client.list_buckets()["Buckets"]} == buckets_before
    chaos_report(
        case="hostile object keys",
        expected="refused by S3, or quarantined with a reason; nothing outside the bucket's prefixes",
        observed=f"{len(refused_by_s3)} refused by SeaweedFS ({', '.join(sorted(set(refused_by_s3.values())))}); "
        f"{len(listed)} stored under normalised keys → {sum(d['state'] == 'quarantined' for d in done.values())} "
        f"quarantined, {len(registered)} plain drops trained or deduplicated ({', '.join(registered) or 'none'}); "
        "bucket prefixes and bucket list unchanged",
    )


def _register_tampered(conn, registered, tamper) -> str:
    """A copy of the registered set's manifest, changed by `tamper(manifest, bucket)`, stored content-addressed and
    registered as a new version. Returns the version."""
    bucket, lineage = Bucket.connect(conn), Lineage(conn)
    manifest = json.loads(bucket.get(registered.set_uri.split(f"{conn.bucket}/", 1)[1]))
    tamper(manifest, bucket)
    data = json.dumps(manifest).encode()
    key = f"adapter-sets/manifests/{hashlib.sha256(data).hexdigest()[:20]}.json"
    bucket.put(key, data)
    return lineage.register(bucket.uri(key), None, {"dataset_id": "tampered", "task": "tampered"}).version


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))  # unpickling this creates the marker file


def test_tampered_sets_are_refused_and_current_stays(conn, registered, tmp_path, chaos_report):
    marker = tmp_path / "unpickled"
    evil = pickle.dumps(_Payload(marker))

    def pickle_as_safetensors(manifest, bucket):
        rel = f"adapters/{hashlib.sha256(evil).hexdigest()}.safetensors"  # the hash matches: only the format lies
        bucket.put(f"adapter-sets/objects/{rel}", evil)
        manifest["adapters"][0]["file"] = rel

    def file_outside_the_set(manifest, bucket):
        manifest["adapters"][0]["file"] = "../../../../../../tmp/litelora-escape.safetensors"

    cases = {
        "pickle renamed .safetensors": (pickle_as_safetensors, "not a safetensors file"),
        "manifest file outside the set": (file_outside_the_set, "outside the set"),
    }
    lineage = Lineage(conn)
    for name, (tamper, reason) in cases.items():
        version = _register_tampered(conn, registered, tamper)
        result = runner.invoke(app, ["rollback", version])
        assert result.exit_code == 1 and reason in result.output, (name, result.output)
        assert lineage.current().version == registered.version

    foreign = lineage.register(
        "s3://some-other-bucket/adapter-sets/manifests/0123.json",
        None,
        {"dataset_id": "foreign", "task": "foreign"},
    ).version
    outside = runner.invoke(app, ["rollback", foreign])
    assert outside.exit_code == 1 and "is not an adapter-set manifest in bucket" in outside.output
    lineage.client.set_registered_model_alias(
        lineage.name, "current", foreign
    )  # as if moved in the MLflow UI
    predicted = runner.invoke(app, ["predict", "--text", "a small dog"])
    assert predicted.exit_code == 1 and "is not an adapter-set manifest in bucket" in predicted.output

    assert not marker.exists(), "the pickle was never loaded"
    assert not Path("/tmp/litelora-escape.safetensors").exists()
    chaos_report(
        case="tampered adapter sets (pickle renamed .safetensors, file outside the set, manifest in another bucket)",
        expected="each refused with its reason; current unchanged; nothing unpickled or written outside",
        observed="rollback and predict exit 1 with 'not a safetensors file' / 'outside the set' / 'not an adapter-set "
        "manifest in bucket'; current stayed; the pickle's payload never ran",
    )
