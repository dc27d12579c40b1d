"""The task-dataset contract: valid drops become tasks; each invalid case gets a reason a user can act on."""

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.data.task_dataset import DatasetLimits, InvalidDataset, TaskDataset, write_drop


def _parquet(**columns) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


GOOD = {
    "text": ["a cat", "a dog", "an oak", "a pine", "a rose"],
    "label": ["animal", "animal", "plant", "plant", "plant"],
}


def test_a_valid_drop_becomes_a_task_with_sorted_classes_and_a_seeded_held_out_split():
    ds = TaskDataset.from_files("plants", {"train.parquet": _parquet(**GOOD)})
    task = ds.to_task(seed=0)
    assert task.classes == ["animal", "plant"]
    assert len(task.train_inputs) == 4 and len(task.test_inputs) == 1
    again = TaskDataset.from_files("plants", {"train.parquet": _parquet(**GOOD)}).to_task(seed=0)
    assert again.test_inputs == task.test_inputs


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
            "never shows",
        ),
        ({"train.parquet": _parquet(**GOOD), "task.json": b"{not json"}, "task.json is not valid JSON"),
        (
            {"train.parquet": _parquet(**GOOD), "task.json": b'{"input_column": "label"}'},
            "input_column must be one of",
        ),
        ({"train.parquet": _parquet(**GOOD), "task.json": b'{"name": ""}'}, "name must be a string"),
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
    with pytest.raises(InvalidDataset, match="decodes to 104,8.* bytes, over the 4,294,967,296-byte limit"):
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


def test_a_written_drop_reads_back_as_the_same_task(tmp_path, wordnet_tasks):
    task = wordnet_tasks[0]
    back = TaskDataset.from_dir(write_drop(task, tmp_path / "t0")).to_task()
    assert back.classes == sorted(task.classes)
    assert [back.classes[y] for y in back.test_labels] == [task.classes[y] for y in task.test_labels]
