"""Streams on in-memory stand-ins: independent lineages in one bucket and one MLflow, their own arrival order,
a backbone fixed by the first drop, and drops a stream cannot read quarantined with what to do."""

import io
import json
from dataclasses import replace

import pyarrow.parquet as pq
import pytest

from pipeline.data.fashion_mnist import split_fashion_mnist
from pipeline.data.image_folder import as_image_folder
from pipeline.data.task_dataset import InvalidDataset, TaskDataset, dataset_id
from pipeline.orchestrator.ledger import Ledger
from pipeline.registry.streams import StreamError
from tests.orchestrator.conftest import drop, parquet


def task_json(**fields) -> bytes:
    return json.dumps(fields).encode()


@pytest.fixture(scope="module")
def image_files():
    """One real Split-FashionMNIST task (PNG bytes in an `image` column), cut small."""
    task = split_fashion_mnist(1993, "ci")[0]
    return {
        "train.parquet": parquet(
            image=task.train_inputs[::4], label=[task.classes[y] for y in task.train_labels[::4]]
        ),
        "test.parquet": parquet(
            image=task.test_inputs[::4], label=[task.classes[y] for y in task.test_labels[::4]]
        ),
    }


def test_two_streams_keep_their_own_versions_and_current_in_one_bucket(registry, wordnet_files, make_watcher):
    drop(registry.bucket, "a0", wordnet_files[0])
    drop(registry.bucket, "b0", {**wordnet_files[1], "task.json": task_json(stream="other")})
    drop(registry.bucket, "a1", wordnet_files[2])
    done = make_watcher().run(once=True)

    assert [d["state"] for d in done] == ["registered"] * 3
    other = registry.for_stream("other")
    assert other.lineage.name == f"{registry.lineage.name}-other"
    assert registry.for_stream("other") is other and other.for_stream("default") is registry
    assert [v.tags["task"] for v in registry.lineage.versions()] == ["a0", "a1"]
    assert [v.tags["task"] for v in other.lineage.versions()] == ["b0"]
    assert registry.current().tags["task"] == "a1" and other.current().tags["task"] == "b0"
    assert other.current().tags["parent_version"] == "none", "a stream's first set builds on nothing"
    assert registry.streams.names() == ["default", "other"]


def test_a_drop_held_by_another_watcher_holds_back_only_its_own_stream(registry, wordnet_files, make_watcher):
    held = {**wordnet_files[0], "task.json": task_json(stream="slow")}
    drop(registry.bucket, "held", held)
    drop(registry.bucket, "later-same-stream", {**wordnet_files[1], "task.json": task_json(stream="slow")})
    drop(registry.bucket, "other-stream", wordnet_files[2])
    assert Ledger(registry.bucket, "someone-else", lease_s=600).claim(dataset_id(held), "held") is not None

    done = make_watcher().run(once=True)

    assert [(d["task"], d["state"]) for d in done] == [("other-stream", "registered")]
    assert registry.for_stream("slow").lineage.versions() == []
    assert sorted(k.split("/")[1] for k in registry.bucket.list("incoming/") if k.endswith("_READY")) == [
        "held",
        "later-same-stream",
    ]


def test_a_watcher_for_one_stream_leaves_the_others_drops_alone(registry, wordnet_files, make_watcher):
    drop(registry.bucket, "mine", {**wordnet_files[0], "task.json": task_json(stream="mine")})
    drop(registry.bucket, "theirs", wordnet_files[1])
    done = make_watcher(streams=("mine",)).run(once=True)
    assert [d["task"] for d in done] == ["mine"]
    assert any(k.startswith("incoming/theirs/") for k in registry.bucket.list("incoming/"))


def test_images_dropped_into_a_text_stream_are_quarantined_with_the_stream_to_name(
    registry, wordnet_files, image_files, make_watcher
):
    drop(registry.bucket, "photos", image_files)
    done = make_watcher().run(once=True)
    assert done[0]["state"] == "quarantined"
    assert "holds images" in done[0]["reason"] and '"backbone": "efficientnet-lite0"' in done[0]["reason"]
    assert registry.streams.names() == ["default"], "a refused drop fixes no stream's backbone"


def test_a_new_stream_takes_the_backbone_its_first_drop_names_and_keeps_it(
    registry, image_files, wordnet_files
):
    record = registry.streams.admit("images", "efficientnet-lite0", reads_images=True)
    assert (record.stream, record.backbone, record.registered_model) == (
        "images",
        "efficientnet-lite0",
        f"{registry.lineage.name}-images",
    )
    assert registry.for_stream("images").backbone == "efficientnet-lite0"
    # Later drops may leave the backbone out; naming another one, or bringing text, is refused.
    assert registry.streams.admit("images", None, reads_images=True) == record
    with pytest.raises(StreamError, match="uses backbone 'efficientnet-lite0'"):
        registry.streams.admit("images", "sentence-transformers/all-MiniLM-L6-v2", reads_images=False)
    with pytest.raises(StreamError, match="holds text"):
        registry.streams.admit("images", None, reads_images=False)


def test_a_drop_naming_another_backbone_than_its_streams_is_quarantined(
    registry, image_files, wordnet_files, make_watcher
):
    registry.streams.admit("images", "efficientnet-lite0", reads_images=True)
    drop(
        registry.bucket,
        "wrong",
        {
            **wordnet_files[0],
            "task.json": task_json(stream="images", backbone="sentence-transformers/all-MiniLM-L6-v2"),
        },
    )
    done = make_watcher().run(once=True)
    assert done[0]["state"] == "quarantined" and "uses backbone 'efficientnet-lite0'" in done[0]["reason"]


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"stream": "Images"}, "stream name 'Images'"),
        ({"stream": "a/b"}, "stream name 'a/b'"),
        ({"stream": 3}, "stream name 3"),
        ({"backbone": "resnet-50"}, "backbone 'resnet-50': choose one of"),
        ({"method": "inflora"}, "method 'inflora': choose one of litelora"),
        # the joint ceiling is a benchmark's, never a stream's method
        ({"method": "joint"}, "method 'joint': choose one of"),
        ({"recruits": "shared"}, "recruits must be one of full, null, routed"),
    ],
)
def test_task_json_names_a_valid_stream_a_known_backbone_and_a_stream_method(wordnet_files, fields, message):
    with pytest.raises(InvalidDataset, match=message):
        TaskDataset.from_files("t", {**wordnet_files[0], "task.json": task_json(**fields)})


def test_a_streams_first_drop_sets_where_its_recruits_act_and_a_later_drop_asking_otherwise_is_quarantined(
    registry, wordnet_files, make_watcher
):
    from pipeline.registry.current import load_current

    drop(registry.bucket, "a0", {**wordnet_files[0], "task.json": task_json(recruits="routed")})
    drop(registry.bucket, "a1", wordnet_files[1])  # says nothing: trains as its stream does
    drop(registry.bucket, "a2", {**wordnet_files[2], "task.json": task_json(recruits="full")})
    done = make_watcher().run(once=True)
    assert [d["state"] for d in done] == ["registered", "registered", "quarantined"]
    assert "asks for 'full' recruits, and stream 'default' recruits 'routed'" in done[2]["reason"]
    current = load_current(registry)
    assert current.model.config.recruit_space == "routed" and current.manifest["routes"]["task_expert"]


def test_the_no_regret_rules_two_scores_are_tags_of_the_version_whose_recruit_it_weighed(
    registry, wordnet_files, make_watcher, config
):
    from pipeline.orchestrator.transaction import train_on_current

    # A high starting logit makes the gate ask for a recruit at the second task; the rule then weighs it.
    weighing = config.with_overrides(recruit_space="routed", no_regret=True, init_logit=5.0)
    watcher = make_watcher(trainer=lambda ds, reg: train_on_current(ds, reg, weighing, max_accuracy_drop=1.0))
    drop(registry.bucket, "a0", wordnet_files[0])
    drop(registry.bucket, "a1", wordnet_files[1])
    assert [d["state"] for d in watcher.run(once=True)] == ["registered", "registered"]
    first, second = sorted(registry.lineage.versions(), key=lambda v: int(v.version))
    assert "weighed_recruit" not in first.tags  # the first task always adapts: nothing to weigh
    recruit, reuse = float(second.tags["weighed_recruit"]), float(second.tags["weighed_reuse"])
    assert second.tags["decision"] == ("recruit" if recruit > reuse else "reuse")


def test_a_drop_without_task_json_belongs_to_the_default_stream(wordnet_files, image_files):
    assert TaskDataset.from_files("t", wordnet_files[0]).stream == "default"
    images = TaskDataset.from_files(
        "t", {**image_files, "task.json": task_json(stream="images", backbone="efficientnet-lite0")}
    )
    assert (images.stream, images.backbone, images.input_column) == ("images", "efficientnet-lite0", "image")
    task = images.to_task()
    assert isinstance(task.train_inputs[0], bytes) and task.train_inputs[0][:4] == b"\x89PNG"


def test_gc_keeps_the_sets_and_datasets_of_every_stream(registry, wordnet_files, make_watcher):
    from pipeline.orchestrator.status import collect_garbage

    drop(registry.bucket, "a0", wordnet_files[0])
    drop(registry.bucket, "b0", {**wordnet_files[1], "task.json": task_json(stream="other")})
    assert [d["state"] for d in make_watcher().run(once=True)] == ["registered", "registered"]
    collect_garbage(registry, grace_s=0)
    for stream in ("default", "other"):
        lineage = registry.for_stream(stream)
        lineage.sets.verify(lineage.sets.set_id_from_uri(lineage.current().source))  # every file still there
        for version in lineage.lineage.versions():
            assert registry.datasets.get(version.tags["dataset_id"], version.tags["task"])


def test_submit_writes_the_stream_and_backbone_into_the_drops_task_json(registry, image_files, tmp_path):
    from pipeline.orchestrator.watcher import submit_drop

    for name, data in image_files.items():
        (tmp_path / name).write_bytes(data)
    prefix, _ = submit_drop(
        registry.bucket, tmp_path, "shoes", fields={"stream": "images", "backbone": "efficientnet-lite0"}
    )
    written = json.loads(registry.bucket.get(f"{prefix}task.json"))
    assert written == {"stream": "images", "backbone": "efficientnet-lite0"}
    with pytest.raises(InvalidDataset, match="backbone 'vit'"):
        submit_drop(registry.bucket, tmp_path, "bad", fields={"backbone": "vit"})


@pytest.mark.parametrize("hostile", ["truncated", "text", "100-megapixel-header", "decompression-bomb"])
def test_an_image_drop_with_a_hostile_image_is_quarantined_with_the_reason(
    registry, image_files, make_watcher, hostile
):
    import pyarrow.parquet as pq
    from PIL import Image

    from tests.data.test_images import encoded, png_declaring

    bad = {
        "truncated": encoded(Image.new("RGB", (32, 32)))[:60],
        "text": b"just some text",
        "100-megapixel-header": png_declaring(10_000, 10_000),
        "decompression-bomb": encoded(Image.new("1", (12_000, 12_000))),
    }[hostile]
    table = pq.read_table(io.BytesIO(image_files["train.parquet"])).to_pydict()
    images = [*table["image"][:-1], bad]
    files = {
        **image_files,
        "train.parquet": parquet(image=images, label=table["label"]),
        "task.json": task_json(stream="images", backbone="efficientnet-lite0"),
    }
    drop(registry.bucket, "hostile", files)
    done = make_watcher().run(once=True)
    assert done[0]["state"] == "quarantined"
    assert f"the image in row {len(images) - 1}" in done[0]["reason"]
    reason = json.loads(
        registry.bucket.get(next(k for k in registry.bucket.list("quarantine/") if k.endswith("reason.json")))
    )
    assert reason["reason"] == done[0]["reason"]


def image_folder(task, every: int = 4) -> dict[str, bytes]:
    """Every `every`-th image of a task as image-folder files."""
    return as_image_folder(
        replace(
            task,
            train_inputs=task.train_inputs[::every],
            train_labels=task.train_labels[::every],
            test_inputs=task.test_inputs[::every],
            test_labels=task.test_labels[::every],
        )
    )


def test_an_image_folder_dropped_file_by_file_is_validated_as_its_parquet_equivalent(registry, make_watcher):
    task = split_fashion_mnist(1993, "ci")[0]
    folder = image_folder(task) | {
        "task.json": task_json(stream="images", backbone="efficientnet-lite0"),
        ".DS_Store": b"\0",
    }
    drop(registry.bucket, "shoes", folder)  # what `aws s3 cp --recursive` uploads, the marker last

    trained = []

    def look(dataset, stream_registry):  # what training would receive; training itself is not this test's
        trained.append((dataset, stream_registry))
        raise RuntimeError("looked, not trained")

    done = make_watcher(trainer=look).run(once=True)

    dataset, stream_registry = trained[0]
    assert done[0]["reason"] == "RuntimeError: looked, not trained"
    assert stream_registry.stream == "images" and dataset.input_column == "image"
    assert dataset.train.num_rows == len(task.train_inputs[::4]) and dataset.test is not None
    assert sorted(set(dataset.train["label"].to_pylist())) == sorted(task.classes)
    # The same folder gives the same parquet bytes, so the same dataset id, wherever it is converted.
    from pipeline.data.task_dataset import contract_files

    assert dataset.dataset_id == dataset_id(contract_files(folder))


def test_an_image_folder_with_stray_files_is_quarantined_naming_them(registry, make_watcher):
    task = split_fashion_mnist(1993, "ci")[0]
    drop(registry.bucket, "messy", image_folder(task) | {"train/notes.txt": b"hello", "README": b"x"})
    done = make_watcher().run(once=True)
    assert done[0]["state"] == "quarantined"
    assert "README, train/notes.txt: an image folder holds only" in done[0]["reason"]


def test_a_local_image_folder_submits_as_parquet_files(registry, tmp_path):
    from pipeline.orchestrator.watcher import submit_drop

    task = split_fashion_mnist(1993, "ci")[0]
    for rel, data in image_folder(task).items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    _, names = submit_drop(
        registry.bucket, tmp_path, "shoes", fields={"stream": "images", "backbone": "efficientnet-lite0"}
    )
    assert sorted(names) == ["task.json", "test.parquet", "train.parquet"]
    dataset = TaskDataset.from_dir(tmp_path)
    assert dataset.input_column == "image" and dataset.train.num_rows == len(task.train_inputs[::4])


def test_the_demos_image_drops_are_image_folders_of_the_images_stream():
    from pipeline.data.task_dataset import contract_files
    from pipeline.demo import image_drops

    drops = image_drops("ci", 2)
    assert [name for name, _, _ in drops] == ["fashion-0", "fashion-1"]
    for _, files, _ in drops:
        dataset = TaskDataset.from_files("t", contract_files(files))
        assert (dataset.stream, dataset.backbone, dataset.input_column) == (
            "images",
            "efficientnet-lite0",
            "image",
        )
        assert dataset.test is not None and dataset.train.num_rows == 32


def halves(files: dict) -> tuple[dict, dict]:
    """A drop's training rows split in two drops of the same classes (the test rows go with each)."""
    table = pq.read_table(io.BytesIO(files["train.parquet"])).to_pydict()
    first = {k: v[0::2] for k, v in table.items()}
    second = {k: v[1::2] for k, v in table.items()}
    return (
        {**files, "train.parquet": parquet(**first)},
        {**files, "train.parquet": parquet(**second), "task.json": task_json(name="more")},
    )


def test_more_data_for_known_classes_trains_and_registers_on_a_ridge_stream(
    registry, wordnet_files, make_watcher
):
    first, more = halves(wordnet_files[0])
    drop(registry.bucket, "first", first)
    drop(registry.bucket, "new-classes", wordnet_files[1])
    drop(registry.bucket, "more", more)  # the first task's classes again, fresh rows
    done = make_watcher().run(once=True)
    assert [d["state"] for d in done] == ["registered"] * 3
    from pipeline.registry.current import load_current

    model = load_current(registry).model
    assert len(model.classes) == len(set(model.classes)) == 8, "a class seen twice is one class"
    assert model.introduced_by() == ["first"] * 4 + ["new-classes"] * 4
    assert int(model.ridge.fit_rows.counts.sum() + model.ridge.held_rows.counts.sum()) == sum(
        pq.read_metadata(io.BytesIO(f["train.parquet"])).num_rows for f in (first, wordnet_files[1], more)
    ), "every training row of both drops is in the ridge sums"

    from pipeline.registry.current import class_report

    report = class_report(registry)
    assert report.stages == [f"v{d['version']} {d['task']}" for d in done]
    rows = {r["class"]: r for r in report.history.rows()}
    assert set(rows) == set(model.classes)
    for name in model.classes:  # known from the drop that brought it on, and beside the frozen encoder
        known_from = 0 if model.introduced_by()[model.classes.index(name)] == "first" else 1
        assert [a is not None for a in rows[name]["accuracy"]] == [i >= known_from for i in range(3)]
        assert rows[name]["frozen_accuracy"] is not None
    run = registry.lineage.run(registry.lineage.get(done[-1]["version"]).run_id)
    assert {f"class_accuracy/{name}" for name in model.classes} <= set(run.metrics)
    assert "plots/class_accuracy.png" in run.artifacts


def test_known_classes_on_a_stream_with_per_task_heads_are_quarantined_saying_what_to_do(
    registry, wordnet_files, make_watcher, config
):
    from pipeline.orchestrator.transaction import train_on_current

    linear = replace(config, head="linear")
    first, more = halves(wordnet_files[0])
    drop(registry.bucket, "first", first)
    drop(registry.bucket, "more", more)
    trainer = lambda ds, reg: train_on_current(ds, reg, linear, max_accuracy_drop=1.0)
    done = make_watcher(trainer=trainer).run(once=True)
    assert [d["state"] for d in done] == ["registered", "quarantined"]
    assert "already knows" in done[1]["reason"] and "keeps one head per task" in done[1]["reason"]
    assert registry.current().version == done[0]["version"] and len(registry.lineage.versions()) == 1
