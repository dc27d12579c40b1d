"""Adapter sets in real SeaweedFS, lineage in a real MLflow server: register, roll back, branch, crash."""

import json
import os
import stat
import uuid

import boto3
import pytest
from botocore.exceptions import ClientError
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.learn.backbone import BackboneConfig
from pipeline.learn.config import TrainConfig
from pipeline.learn.evaluate import predict_logits
from pipeline.learn.frozen import FeatureCache, frozen_reference
from pipeline.orchestrator.transaction import train_on_current
from pipeline.registry.bucket import Bucket
from pipeline.registry.current import load_current
from pipeline.registry.lineage import Lineage
from pipeline.registry.store import Registry
from pipeline.settings import connection, load_settings
from pipeline.stack import embedded

pytestmark = pytest.mark.integration
GUARD_OFF = 1.0  # the tiny random backbone forgets freely; these tests are about lineage, not the guard
runner = CliRunner()


@pytest.fixture
def conn(stack_env, monkeypatch):
    # A registered model of its own per test, so tests do not see each other's versions.
    monkeypatch.setenv("LITELORA_REGISTERED_MODEL", f"test-{uuid.uuid4().hex[:8]}")
    return connection(load_settings())


@pytest.fixture
def drops(wordnet_drops):
    return wordnet_drops


@pytest.fixture
def config(tiny_backbone_dir):
    return TrainConfig(backbone=BackboneConfig(name=str(tiny_backbone_dir)), epochs=1, batch_size=16, seed=0)


def test_the_stack_binds_loopback_with_per_installation_keys(stack_home):
    creds = stack_home / "credentials.json"
    assert stat.S_IMODE(os.stat(creds).st_mode) == 0o600
    exports = embedded.env_exports(stack_home)
    assert exports["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    assert exports["MLFLOW_TRACKING_URI"].startswith("http://127.0.0.1:")
    state, started = embedded.up(stack_home)
    assert not started and state.alive(), "a second `up` must find the running stack"
    wrong = boto3.client(
        "s3",
        endpoint_url=exports["AWS_ENDPOINT_URL"],
        aws_access_key_id=exports["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key="wrong-secret",
        region_name="us-east-1",
    )
    with pytest.raises(ClientError):
        wrong.list_objects_v2(Bucket=exports["LITELORA_BUCKET"])


def test_env_prints_exports_a_shell_can_eval(stack_env):
    result = runner.invoke(app, ["env"])
    assert result.exit_code == 0
    exports = dict(line.removeprefix("export ").split("=", 1) for line in result.stdout.splitlines())
    assert set(exports) >= {
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "MLFLOW_TRACKING_URI",
        "LITELORA_BUCKET",
    }
    status = json.loads(runner.invoke(app, ["up", "--json"]).stdout)
    assert status["started"] is False and status["s3_endpoint"] == exports["AWS_ENDPOINT_URL"]


def test_register_three_roll_back_and_the_next_task_branches(conn, drops, config):
    v1 = train_on_current(drops[0], Registry.connect(conn), config, max_accuracy_drop=GUARD_OFF)
    v2 = train_on_current(drops[1], Registry.connect(conn), config, max_accuracy_drop=GUARD_OFF)
    v3 = train_on_current(drops[2], Registry.connect(conn), config, max_accuracy_drop=GUARD_OFF)
    assert (v1.parent, v2.parent, v3.parent) == (None, v1.version, v2.version)
    assert all(r.promoted for r in (v1, v2, v3))

    result = runner.invoke(app, ["rollback", v1.version, "--reason", "t2 regressed"])
    assert result.exit_code == 0, result.output
    v4 = train_on_current(drops[3], Registry.connect(conn), config, max_accuracy_drop=GUARD_OFF)
    assert v4.parent == v1.version and v4.promoted

    tree = json.loads(runner.invoke(app, ["lineage", "--json"]).stdout)
    parents = {v["version"]: v["parent"] for v in tree["versions"]}
    assert parents == {
        v1.version: None,
        v2.version: v1.version,
        v3.version: v2.version,
        v4.version: v1.version,
    }
    assert tree["current"] == v4.version
    assert [m["kind"] for m in tree["alias_moves"]] == ["promote"] * 3 + ["rollback", "promote"]
    assert tree["alias_moves"][3]["reason"] == "t2 regressed"
    # The branch evaluated both of its tasks; its matrix does not include the abandoned v2/v3 tasks.
    manifest = json.loads(Bucket.connect(conn).get(v4.set_uri.split(f"{conn.bucket}/", 1)[1]))
    assert len(manifest["metrics"]["correct"]) == 2 and [t["name"] for t in manifest["tasks"]] == [
        "wn-t0",
        "wn-t3",
    ]
    # Per class, along the same branch: the tasks it holds, each class from the version that brought it.
    classes = json.loads(runner.invoke(app, ["lineage", "--classes", "--json"]).stdout)
    assert classes["version"] == v4.version
    assert classes["stages"] == [f"v{v1.version} wn-t0", f"v{v4.version} wn-t3"]
    assert {len(r["accuracy"]) for r in classes["classes"]} == {2} and len(classes["classes"]) == 8
    assert sum(r["accuracy"][0] is None for r in classes["classes"]) == 4  # wn-t3's classes, unknown at v1
    table = runner.invoke(app, ["lineage", "--classes", "--version", f"v{v3.version}"])
    assert table.exit_code == 0, table.output
    header, *lines = table.output.splitlines()
    assert header.split()[1:] == [f"v{v1.version}", f"v{v2.version}", f"v{v3.version}", "frozen"]
    # A class of the third task: unknown at v1 and v2, then scored, beside the frozen encoder.
    late = next(line for line in lines if line.startswith(drops[2].classes()[0]))
    cells = late[len(drops[2].classes()[0]) :].split()
    assert cells[:2] == ["-", "-"] and len(cells) == 4
    # Its v3 cell is what v3 predicts on the class's held-out rows, among every class v3 knows.
    model = load_current(Registry.connect(conn), v3.version).model
    task = drops[2].to_task()
    rows = [i for i, y in enumerate(task.test_labels) if y == 0]
    predicted = predict_logits(model, [task.test_inputs[i] for i in rows]).argmax(1)
    right = int((predicted == model.class_index(task.classes)[0]).sum())
    assert float(cells[2]) == pytest.approx(100 * right / len(rows), abs=0.05)


def test_every_version_records_the_frozen_encoder_with_the_same_head_on_the_same_rows(
    conn, drops, config, tmp_path
):
    steps = [
        train_on_current(d, Registry.connect(conn), config, max_accuracy_drop=GUARD_OFF) for d in drops[:2]
    ]
    lineage = Lineage(conn)
    for step in steps:
        version = lineage.get(step.version)
        metrics = lineage.client.get_run(step.run_id).data.metrics
        assert float(version.tags["frozen_final_accuracy"]) == pytest.approx(
            step.frozen_final_accuracy, abs=1e-4
        )
        assert metrics["frozen_final_accuracy"] == pytest.approx(step.frozen_final_accuracy)
        assert metrics["frozen_avg_accuracy"] == pytest.approx(step.frozen_avg_accuracy)
        assert metrics["gain_over_frozen"] == pytest.approx(step.final_accuracy - step.frozen_final_accuracy)
    # The same head on the bare backbone, refitted here from the drops themselves, scores what was recorded.
    frozen = frozen_reference(
        config,
        [d.to_task() for d in drops[:2]],
        FeatureCache(config.backbone, tmp_path / "features"),
    )
    assert steps[-1].frozen_final_accuracy == pytest.approx(frozen.cil.final_accuracy, abs=1e-12)
    assert steps[-1].frozen_avg_accuracy == pytest.approx(frozen.cil.average_accuracy, abs=1e-12)
    # The bare backbone's features of each dataset were cached once, by backbone and dataset id.
    cached = {p.name for p in (conn.cache_dir / "features").rglob("*.safetensors")}
    assert {f"{d.dataset_id}-{split}.safetensors" for d in drops[:2] for split in ("train", "test")} <= cached


def test_a_crash_before_the_alias_move_leaves_current_on_the_last_complete_set(conn, drops, config):
    first = train_on_current(drops[0], Registry.connect(conn), config, max_accuracy_drop=GUARD_OFF)

    def crash(stage):
        if stage == "registered":
            raise KeyboardInterrupt("killed between registration and promotion")

    with pytest.raises(KeyboardInterrupt):
        train_on_current(
            drops[1], Registry.connect(conn), config, at_stage=crash, max_accuracy_drop=GUARD_OFF
        )
    lineage = Lineage(conn)
    assert lineage.current().version == first.version
    nxt = train_on_current(drops[1], Registry.connect(conn), config, max_accuracy_drop=GUARD_OFF)
    assert nxt.parent == first.version


def test_moving_the_alias_in_mlflow_is_a_rollback_too(conn, drops, config):
    v1 = train_on_current(drops[0], Registry.connect(conn), config, max_accuracy_drop=GUARD_OFF)
    train_on_current(drops[1], Registry.connect(conn), config, max_accuracy_drop=GUARD_OFF)
    lineage = Lineage(conn)
    lineage.client.set_registered_model_alias(lineage.name, "current", v1.version)  # what the UI does
    assert (
        train_on_current(drops[2], Registry.connect(conn), config, max_accuracy_drop=GUARD_OFF).parent
        == v1.version
    )


def test_rollback_to_a_missing_or_corrupt_set_is_refused_and_current_stays(conn, drops, config):
    v1 = train_on_current(drops[0], Registry.connect(conn), config, max_accuracy_drop=GUARD_OFF)
    v2 = train_on_current(drops[1], Registry.connect(conn), config, max_accuracy_drop=GUARD_OFF)
    bad = runner.invoke(app, ["rollback", "v999"])
    assert bad.exit_code == 1 and "does not exist" in bad.output and len(bad.output.strip().splitlines()) == 1

    bucket = Bucket.connect(conn)
    manifest = json.loads(bucket.get(v1.set_uri.split(f"{conn.bucket}/", 1)[1]))
    head_key = f"adapter-sets/objects/{manifest['tasks'][0]['head']}"
    original = bucket.get(head_key)
    bucket.client.put_object(Bucket=bucket.name, Key=head_key, Body=b"tampered")
    try:
        corrupt = runner.invoke(app, ["rollback", v1.version])
        assert corrupt.exit_code == 1 and "does not match its SHA-256" in corrupt.output
        assert Lineage(conn).current().version == v2.version
    finally:
        bucket.client.put_object(Bucket=bucket.name, Key=head_key, Body=original)


def test_an_unreachable_mlflow_is_one_clear_line_and_exit_1(stack_env, monkeypatch):
    from pipeline.stack.process import free_port

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    result = runner.invoke(app, ["lineage"])
    assert result.exit_code == 1
    assert "unreachable" in result.output or "cannot" in result.output


def test_rollback_to_a_rejected_version_needs_force_and_to_current_is_a_no_op(conn, drops, config):
    v1 = train_on_current(drops[0], Registry.connect(conn), config, max_accuracy_drop=GUARD_OFF)
    v2 = train_on_current(
        drops[1], Registry.connect(conn), config, max_accuracy_drop=-1.0
    )  # a bound no set can meet
    assert not v2.promoted and v2.rejected_reason
    same = runner.invoke(app, ["rollback", v1.version])
    assert same.exit_code == 0 and "already current" in same.output
    refused = runner.invoke(app, ["rollback", v2.version])
    assert refused.exit_code == 1 and "rejected by the promotion guard" in refused.output
    assert Lineage(conn).current().version == v1.version
    forced = runner.invoke(app, ["rollback", v2.version, "--force", "--reason", "accept the regression"])
    assert forced.exit_code == 0 and Lineage(conn).current().version == v2.version


def test_a_dataset_of_many_parquet_files_reads_back_through_pyarrows_s3_as_ray_workers_read_it(conn, drops):
    import io

    import pyarrow.parquet as pq

    from pipeline.data.task_dataset import TaskDataset
    from pipeline.registry.store import read_dataset

    table = pq.read_table(io.BytesIO(drops[0].files["train.parquet"]))
    parts = {}
    for i in range(3):
        buf = io.BytesIO()
        pq.write_table(table.slice(i * 10, 10 if i < 2 else None), buf)
        parts[f"train/part-{i:05d}.snappy.parquet"] = buf.getvalue()
    dataset = TaskDataset.from_files("parts", parts | {"train/_SUCCESS": b""})
    Registry.connect(conn).datasets.put(dataset)
    read = read_dataset(conn, dataset.dataset_id, "parts")  # lists the prefix recursively, checks the id
    assert read.dataset_id == dataset.dataset_id and read.train.to_pylist() == dataset.train.to_pylist()
