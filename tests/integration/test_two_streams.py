"""Streams on the real stack: an image folder copied with `aws s3 cp --recursive` into an image stream, a text drop
in the default stream and a text drop in a Share stream, trained by one watcher as 2-worker Ray Train jobs,
registered under their own MLflow models, and each stream's `current` predicting its own kind of input (what
`litelora predict --stream` and each served stream's replicas load)."""

import json
import os
import shutil
import subprocess
import time

import boto3
import pytest

from pipeline.data.fashion_mnist import split_fashion_mnist
from pipeline.data.image_folder import as_image_folder
from pipeline.orchestrator.ray_train import ScalingSpec, ray_fit
from pipeline.orchestrator.transaction import train_on_current
from pipeline.orchestrator.watcher import WatchConfig, Watcher, put_drop
from pipeline.registry.store import Registry
from pipeline.serving.predictor import BadRequest, Predictor

pytestmark = [pytest.mark.integration, pytest.mark.ray, pytest.mark.model]


def copy_folder(conn, folder, prefix: str) -> None:
    """`aws s3 cp --recursive`, as a user uploads an image folder (boto3 file by file where the CLI is absent)."""
    if shutil.which("aws"):
        subprocess.run(
            [
                "aws",
                "s3",
                "cp",
                "--recursive",
                "--only-show-errors",
                str(folder),
                f"s3://{conn.bucket}/{prefix}",
            ],
            check=True,
            env={**os.environ, "AWS_ENDPOINT_URL": conn.s3_endpoint},
        )
        return
    client = boto3.client("s3", endpoint_url=conn.s3_endpoint)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), conn.bucket, prefix + path.relative_to(folder).as_posix())


def test_an_image_folder_a_text_drop_and_a_share_drop_train_in_their_own_streams_and_predict_their_inputs(
    conn, ray_node, wordnet_drops, tmp_path
):
    task = split_fashion_mnist(1995, "ci")[0]  # sandals and bags: 16 training images each
    folder = tmp_path / "shoes"
    for rel, image in as_image_folder(task).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(image)
    (folder / "task.json").write_text(json.dumps({"stream": "images", "backbone": "efficientnet-lite0"}))
    copy_folder(conn, folder, "incoming/shoes/")  # no _READY marker: complete after the quiet period
    put_drop(Registry.connect(conn).bucket, "wn-t0", wordnet_drops[0].files)
    # Two Share drops: the second trains only its coefficients on the first's basis, under DDP.
    for i, fields in ((1, {"stream": "shared", "method": "share"}), (2, {"stream": "shared"})):
        files = {**wordnet_drops[i].files, "task.json": json.dumps(fields).encode()}
        put_drop(Registry.connect(conn).bucket, f"wn-s{i}", files)
    time.sleep(2.5)  # the quiet period (1 s) plus S3's whole-second LastModified

    fit = ray_fit(conn, ScalingSpec(num_workers=2))
    registry = Registry.connect(conn)
    # The stream's own defaults (EfficientNet-Lite0, rank 4 for images; MiniLM for text), one epoch each: the path
    # is this test's subject, not the defaults' accuracy.
    quick = {"epochs": 1, "first_examples": 0}
    watcher = Watcher(
        registry,
        WatchConfig(poll_s=0.2, quiet_period_s=1.0),
        trainer=lambda ds, reg: train_on_current(ds, reg, overrides=quick, fit=fit, max_accuracy_drop=1.0),
        log=lambda m: None,
    )
    done = {d["task"]: d for d in watcher.run(once=True)}

    assert {t: d["state"] for t, d in done.items()} == dict.fromkeys(
        ("shoes", "wn-t0", "wn-s1", "wn-s2"), "registered"
    )
    images, text = registry.for_stream("images"), registry.for_stream("default")
    assert images.lineage.name == f"{conn.registered_model}-images"
    assert [v.tags["task"] for v in images.lineage.versions()] == ["shoes"]
    assert [v.tags["task"] for v in text.lineage.versions()] == ["wn-t0"]
    assert json.loads(images.current().tags["config"])["backbone"]["name"] == "efficientnet-lite0"

    # Each stream's `current` answers its own kind of input, as `litelora predict --stream` and serving do.
    seen = Predictor.from_registry(conn.for_stream("images"))
    predictions = seen.predict(task.test_inputs, top=1)
    right = sum(p.label == task.classes[y] for p, y in zip(predictions, task.test_labels, strict=True))
    assert right / len(task.test_labels) > 0.75, "two distinct FashionMNIST classes through ImageNet features"
    with pytest.raises(BadRequest, match="reads images"):
        seen.predict(["a sentence"])
    read = Predictor.from_registry(conn.for_stream("default"))
    assert read.predict(["a domesticated animal kept as a pet"])[0].label in read.model.classes

    # The Share stream trained its tasks on the same two workers; its set answers for the task a request names.
    shared = Predictor.from_registry(conn.for_stream("shared"))
    assert shared.needs_task and shared.model.config.method == "share"
    assert [v.tags["decision"] for v in registry.for_stream("shared").lineage.versions()] == [
        "store",
        "store",
    ]
    for i in (1, 2):
        task = wordnet_drops[i].to_task()
        answer = shared.predict(task.test_inputs, task=f"wn-s{i}")
        # One epoch of a few dozen rows: the path is the subject here; benchmarks/share-*.md hold the accuracy.
        assert {p.label for p in answer} <= set(task.classes) and {p.task for p in answer} == {f"wn-s{i}"}
