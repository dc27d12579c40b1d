"""The task-dataset contract: valid drops become tasks; each invalid case gets a reason a user can act on."""

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.data.held_out import row_keys
from pipeline.data.task_dataset import DatasetLimits, InvalidDataset, TaskDataset, dataset_id, write_drop


def _parquet(**columns) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


GOOD = {
    "text": ["a cat", "a dog", "an oak", "a pine", "a rose"],
    "label": ["animal", "animal", "plant", "plant", "plant"],
}


def test_a_valid_drop_becomes_a_task_with_sorted_classes_and_rows_held_out_by_their_content():
    ds = TaskDataset.from_files("plants", {"train.parquet": _parquet(**GOOD)})
    task = ds.to_task()
    assert ds.split_rule == "row-hash" and task.classes == ["animal", "plant"]
    assert sorted(task.train_inputs + task.test_inputs) == sorted(GOOD["text"]) and task.test_inputs
    assert set(task.test_inputs) == {
        x for x, key in zip(GOOD["text"], row_keys(GOOD["text"])) if key % 5 == 0
    }
    # The same rows in another order, in another file, hold out the same rows.
    shuffled = {k: v[::-1] for k, v in GOOD.items()}
    again = TaskDataset.from_files("plants", {"train.parquet": _parquet(**shuffled)}).to_task()
    assert sorted(again.test_inputs) == sorted(task.test_inputs)


def test_a_drop_too_small_for_the_row_hash_and_a_stored_legacy_dataset_take_the_seeded_split():
    tiny = {"text": ["a cow", "an oak"], "label": ["animal", "plant"]}
    keys = row_keys(tiny["text"])
    assert not any(k % 5 == 0 for k in keys), "the fixture needs rows the hash keeps"
    ds = TaskDataset.from_files("tiny", {"train.parquet": _parquet(**tiny)})
    assert ds.split_rule == "seeded" and len(ds.to_task().test_inputs) == 1
    legacy = TaskDataset.from_files("plants", {"train.parquet": _parquet(**GOOD)})
    legacy.held_out_rule = "seeded"
    task = legacy.to_task(seed=0)
    assert len(task.train_inputs) == 4 and len(task.test_inputs) == 1
    assert task.meta["held_out"] == "seeded 20% split, seed 0"


def test_the_same_bytes_have_the_same_dataset_id_whatever_the_task_name():
    files = {"train.parquet": _parquet(**GOOD)}
    assert TaskDataset.from_files("a", files).dataset_id == TaskDataset.from_files("b", files).dataset_id
    changed = {"train.parquet": _parquet(text=GOOD["text"][::-1], label=GOOD["label"])}
    assert TaskDataset.from_files("a", changed).dataset_id != TaskDataset.from_files("a", files).dataset_id


def test_extra_columns_are_ignored_with_a_warning():
    with pytest.warns(UserWarning, match="ignoring extra columns"):
        TaskDataset.from_files("t", {"train.parquet": _parquet(**GOOD, source=["x"] * 5)})


@pytest.mark.parametrize(
    "files, reason",
    [
        ({}, "no train.parquet"),
        ({"train.parquet": b"PAR1 this is not parquet"}, "not a readable parquet"),
        ({"train.parquet": _parquet(**GOOD)[:-40]}, "not a readable parquet"),
        ({"train.parquet": _parquet(text=GOOD["text"])}, "no 'label' column"),
        ({"train.parquet": _parquet(label=GOOD["label"])}, "exactly one input column"),
        ({"train.parquet": _parquet(text=["a"], image=[b"x"], label=["l"])}, "exactly one input column"),
        (
            {"train.parquet": _parquet(text=pa.array([], pa.string()), label=pa.array([], pa.string()))},
            "is empty",
        ),
        ({"train.parquet": _parquet(text=["a", "b"], label=["x", "x"])}, "single class"),
        ({"train.parquet": _parquet(text=["a", "b"], label=["x", None])}, "null label"),
        ({"train.parquet": _parquet(text=["a", "b"], label=[0.5, 1.5])}, "integers or strings"),
        ({"train.parquet": _parquet(text=[1, 2], label=["x", "y"])}, "column 'text' has type"),
        (
            {"train.parquet": _parquet(**GOOD), "test.parquet": _parquet(text=["z"], label=["fungus"])},
            "never show",
        ),
        ({"train.parquet": _parquet(**GOOD), "task.json": b"{not json"}, "task.json is not valid JSON"),
        (
            {"train.parquet": _parquet(**GOOD), "task.json": b'{"input_column": "label"}'},
            "input_column must be one of",
        ),
        (
            {"train.parquet": _parquet(**GOOD), "task.json": b'{"name": ""}'},
            "task.json: name .*: 1-100 letters",
        ),
        # hostile shapes: nested values, float or struct labels, one enormous value
        ({"train.parquet": _parquet(text=[["a"], ["b"]], label=["x", "y"])}, "column 'text' has type list"),
        (
            {"train.parquet": _parquet(text=["a", "b"], label=[{"id": 1}, {"id": 2}])},
            "integers or strings, not struct",
        ),
        ({"train.parquet": _parquet(text=["a", "b"], label=[1.0, 2.0])}, "integers or strings, not double"),
        (
            {"train.parquet": _parquet(text=["a" * (2 * 1024**2), "b"], label=["x", "y"])},
            "over the 1,048,576-byte limit per row",
        ),
    ],
)
def test_an_invalid_drop_is_refused_with_a_reason(files, reason):
    with pytest.raises(InvalidDataset, match=reason):
        TaskDataset.from_files("t", files)


def test_a_drop_over_the_size_limit_is_refused():
    with pytest.raises(InvalidDataset, match="over the 100-byte limit"):
        TaskDataset.from_files("t", {"train.parquet": _parquet(**GOOD)}, DatasetLimits(max_bytes=100))


def test_millions_of_rows_in_a_small_file_are_refused_from_the_footer():
    # Two million identical rows compress to a few kilobytes: the byte limit alone would let them through.
    rows = 2_000_000
    data = _parquet(text=pa.repeat(pa.scalar("spam"), rows), label=pa.repeat(pa.scalar("x"), rows))
    assert len(data) < 100_000
    with pytest.raises(InvalidDataset, match="2,000,000 rows, over the 1,000,000-row limit"):
        TaskDataset.from_files("t", {"train.parquet": data})


def test_one_huge_value_repeated_through_the_dictionary_is_refused_without_decoding_it():
    # 200,000 references to one 512 KiB string: ~100 GB once decoded, well under a megabyte on disk.
    rows = 200_000
    bomb = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array(["w" * 512 * 1024]))
    data = _parquet(text=bomb, label=pa.array(["x", "y"] * (rows // 2)))
    assert len(data) < 1024**2
    with pytest.raises(
        InvalidDataset, match="decodes to more than .* bytes, over the 4,294,967,296-byte limit"
    ):
        TaskDataset.from_files("t", {"train.parquet": data})


def test_columns_besides_label_and_input_are_never_decoded():
    # A nested extra column that compresses 20 MB of values into a few kilobytes: ignored, never read.
    rows, width = 20, 1_000_000
    offsets = pa.array(range(0, (rows + 1) * width, width), pa.int32())
    bomb = pa.ListArray.from_arrays(offsets, pa.repeat(pa.scalar(0, pa.int8()), rows * width))
    buf = io.BytesIO()
    pq.write_table(
        pa.table({"text": [f"t{i}" for i in range(rows)], "label": ["x", "y"] * (rows // 2), "extra": bomb}),
        buf,
        compression="zstd",
    )
    assert buf.tell() < 200_000
    with pytest.warns(UserWarning, match="ignoring extra columns"):
        dataset = TaskDataset.from_files(
            "t", {"train.parquet": buf.getvalue()}, DatasetLimits(max_decoded_bytes=10**6)
        )
    assert dataset.train.column_names == ["label", "text"]


def test_a_file_that_decodes_past_the_limit_is_refused_before_decoding():
    with pytest.raises(InvalidDataset, match="decodes to .* over the 1,000-byte limit"):
        TaskDataset.from_files(
            "t",
            {"train.parquet": _parquet(text=["word"] * 500, label=["x", "y"] * 250)},
            DatasetLimits(max_decoded_bytes=1000),
        )


def test_a_struct_column_before_label_does_not_hide_the_input_from_the_footer_check(monkeypatch):
    # A footer counts leaf columns: struct<x,y> takes two, so field indices would count `label` and a leaf of
    # the struct instead of the text. The refusal must come from the footer, before any value is decoded.
    rows = 400
    meta = pa.array([{"x": 1, "y": 2}] * rows)
    data = _parquet(
        meta=meta, label=["x", "y"] * (rows // 2), text=[f"{i}" + "w" * 10_000 for i in range(rows)]
    )

    def decoded(*args, **kwargs):
        raise AssertionError("decoded a column of a drop its footer already refuses")

    monkeypatch.setattr(pq.ParquetFile, "read", decoded)
    monkeypatch.setattr(pq.ParquetFile, "iter_batches", decoded)
    with pytest.raises(InvalidDataset, match="decodes to 4,.* bytes, over the 1,000,000-byte limit"):
        TaskDataset.from_files("t", {"train.parquet": data}, DatasetLimits(max_decoded_bytes=10**6))


def test_values_a_footer_understates_are_refused_a_batch_at_a_time_before_all_are_decoded(monkeypatch):
    # Dictionary pages declare the few distinct values, not what their references expand to: the count of
    # decoded bytes runs batch by batch and stops at the limit, with most of the rows never decoded.
    rows = 100_000
    repeated = pa.DictionaryArray.from_arrays(pa.array([0] * rows, pa.int32()), pa.array(["w" * 1000]))
    data = _parquet(text=repeated, label=pa.array(["x", "y"] * (rows // 2)))
    seen = []
    batches = pq.ParquetFile.iter_batches

    def counted(self, *args, **kwargs):
        for batch in batches(self, *args, **kwargs):
            seen.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", counted)
    with pytest.raises(InvalidDataset, match="decodes to more than .* over the 10,000,000-byte limit"):
        TaskDataset.from_files("t", {"train.parquet": data}, DatasetLimits(max_decoded_bytes=10**7))
    assert 0 < sum(seen) < rows // 5


def test_a_written_drop_reads_back_as_the_same_task(tmp_path, wordnet_tasks):
    task = wordnet_tasks[0]
    back = TaskDataset.from_dir(write_drop(task, tmp_path / "t0")).to_task()
    assert back.classes == sorted(task.classes)
    assert [back.classes[y] for y in back.test_labels] == [task.classes[y] for y in task.test_labels]


def _parts(split: str, names: list[str], tables: list[dict]) -> dict[str, bytes]:
    return {f"{split}/{name}": _parquet(**table) for name, table in zip(names, tables, strict=True)}


HALVES = [
    {"text": GOOD["text"][:2], "label": GOOD["label"][:2]},
    {"text": GOOD["text"][2:], "label": GOOD["label"][2:]},
]


def test_a_split_of_many_parquet_files_reads_as_one_table_whatever_its_parts_are_called():
    spark = _parts("train", ["part-00000-a1.snappy.parquet", "part-00001-a1.snappy.parquet"], HALVES)
    spark |= {
        "train/_SUCCESS": b"",
        "train/.part-00000-a1.snappy.parquet.crc": b"crc",
    }  # a writer's leftovers
    renamed = _parts("train", ["part-1.parquet", "part-0.parquet"], HALVES)
    one, other = TaskDataset.from_files("t", spark), TaskDataset.from_files("t", renamed)
    assert one.dataset_id == other.dataset_id, "the id hashes the parts' contents, not their names"
    assert one.train.num_rows == 5 and one.train.to_pylist() == other.train.to_pylist()
    # Kept under content names: the same rows written again with fresh part names are the very same objects.
    assert one.files == other.files and len(one.files) == 2
    assert all(name.startswith("train/") and len(name) == len("train/.parquet") + 32 for name in one.files)
    assert one.to_task().classes == ["animal", "plant"]


def test_the_id_of_a_drop_of_single_files_never_changes():
    """Every registered version names its dataset by this id: a new release must compute the same one."""
    files = {"train.parquet": b"rows", "test.parquet": b"held out", "task.json": b"{}"}
    assert dataset_id(files) == "12d10a9ece06416b2234f6fdf38cd32079201bf59f5f5bc7c267c1871592b119"


def test_the_limits_hold_for_a_split_of_many_files_together():
    mixed = {"text": ["a cat", "an oak", "a rose"], "label": ["animal", "plant", "plant"]}
    parts = _parts("train", [f"p{i}.parquet" for i in range(4)], [mixed] * 4)  # 3 rows each, 12 in all
    with pytest.raises(InvalidDataset, match="12 rows in 4 files, over the 10-row limit"):
        TaskDataset.from_files("t", parts, DatasetLimits(max_rows=10))
    with pytest.raises(InvalidDataset, match="over the 3-file limit"):
        TaskDataset.from_files("t", parts, DatasetLimits(max_parts=3))
    meta = pq.ParquetFile(pa.BufferReader(parts["train/p0.parquet"])).metadata
    declared = sum(meta.row_group(0).column(i).total_uncompressed_size for i in range(meta.num_columns))
    limits = DatasetLimits(max_decoded_bytes=4 * declared - 1)  # one part decodes to at most 2 × declared
    assert (
        TaskDataset.from_files("t", {"train/p0.parquet": parts["train/p0.parquet"]}, limits).train.num_rows
        == 3
    )
    with pytest.raises(InvalidDataset, match="bytes left of the split's"):
        TaskDataset.from_files(
            "t", parts, limits
        )  # each part alone fits; together they decode past the limit


def test_identical_parts_are_all_kept():
    """A writer's empty partitions are byte for byte the same file: each still counts, and reads back."""
    empty = {"text": pa.array([], pa.string()), "label": pa.array([], pa.string())}
    files = _parts("train", ["a.parquet", "b.parquet", "c.parquet"], [GOOD, empty, empty])
    dataset = TaskDataset.from_files("t", files)
    assert len(dataset.files) == 3
    again = TaskDataset.from_files("t", dataset.files)  # what the registry reads back
    assert again.dataset_id == dataset.dataset_id and again.files == dataset.files


@pytest.mark.parametrize(
    "files, reason",
    [
        (
            {"train.parquet": _parquet(**GOOD)} | _parts("train", ["p.parquet"], [GOOD]),
            "both train.parquet and train/\\*.parquet",
        ),
        (
            _parts(
                "train", ["a.parquet", "b.parquet"], [GOOD, {"text": GOOD["text"], "label": [1, 2, 3, 4, 5]}]
            ),
            "every part of a split needs the same label and input types",
        ),
        (
            _parts("train", ["a.parquet"], [{"text": ["x", "y"], "label": ["l", None]}]),
            "train/a.parquet has 1 rows with a null",
        ),
        (
            _parts(
                "train",
                ["a.parquet"],
                [{"text": pa.array([], pa.string()), "label": pa.array([], pa.string())}],
            ),
            "is empty",
        ),
        (
            {"train/label=x/part-0.parquet": _parquet(**GOOD)},
            "partition folders such as label=x/ are not read",
        ),
    ],
)
def test_a_bad_split_of_many_files_names_the_part_or_the_fix(files, reason):
    with pytest.raises(InvalidDataset, match=reason):
        TaskDataset.from_files("t", files)


def test_a_local_folder_of_parts_is_a_drop(tmp_path):
    from pipeline.data.task_dataset import drop_files

    for name, data in _parts("train", ["part-0.parquet", "part-1.parquet"], HALVES).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    (tmp_path / "train" / "_SUCCESS").write_bytes(b"")
    assert sorted(drop_files(tmp_path)) == ["train/part-0.parquet", "train/part-1.parquet"]


@pytest.mark.parametrize("name", ["../../../../victim/model", "a/b", ".hidden", "x\x1b]0;t\x07", "ok\n", "é"])
def test_a_task_name_in_task_json_obeys_the_rule_of_the_key(name):
    files = {"train.parquet": _parquet(**GOOD), "task.json": json.dumps({"name": name}).encode()}
    with pytest.raises(InvalidDataset, match="task.json: name"):
        TaskDataset.from_files("plants", files)


def test_a_drop_of_more_classes_than_the_limit_is_refused_from_its_labels():
    rows = 200_000
    data = _parquet(text=[f"t{i}" for i in range(rows)], label=[f"class {i}" for i in range(rows)])
    with pytest.raises(InvalidDataset, match="200,000 classes, over the 10,000-class limit"):
        TaskDataset.from_files("t", {"train.parquet": data})


def test_a_class_name_longer_than_the_limit_is_refused():
    data = _parquet(text=["a", "b", "c"], label=["x", "y", "z" * 200_000])
    with pytest.raises(InvalidDataset, match="a label is 200,000 characters, over the 200-character limit"):
        TaskDataset.from_files("t", {"train.parquet": data})


def test_reading_many_distinct_values_holds_them_once_not_once_per_batch():
    # Batches read dictionary-encoded each carry a copy of their row group's dictionary: kept as they are,
    # 200,000 distinct labels and texts took 2.9 GB. Arrow's own peak allocation, counted by a pool of its own.
    rows = 200_000
    buf = io.BytesIO()
    pq.write_table(
        pa.table({"text": [f"t{i}" for i in range(rows)], "label": [f"c{i % 2}" for i in range(rows)]}), buf
    )
    default = pa.default_memory_pool()
    counted = pa.proxy_memory_pool(default)
    pa.set_memory_pool(counted)
    try:
        TaskDataset.from_files("t", {"train.parquet": buf.getvalue()})
    finally:
        pa.set_memory_pool(default)
    assert counted.max_memory() < 100 * 1024**2, counted.max_memory()
