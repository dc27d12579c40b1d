"""Stored datasets keep their held-out rows apart, under the rule they were first scored with."""

from pipeline.data.task_dataset import TaskDataset
from pipeline.data.wordnet import split_wordnet20
from pipeline.registry.store import DatasetStore
from tests.fakes import MemoryBucket
from tests.orchestrator.conftest import parquet


def _drop(rows: int = 40) -> TaskDataset:
    task = split_wordnet20(1993, "ci")[0]
    texts, labels = task.train_inputs[:rows], [task.classes[y] for y in task.train_labels[:rows]]
    return TaskDataset.from_files("wn", {"train.parquet": parquet(text=texts, label=labels)})


def test_a_stored_drop_is_scored_from_its_held_out_rows_alone():
    bucket, dataset = MemoryBucket(), _drop()
    store = DatasetStore(bucket)
    store.put(dataset)
    full = dataset.to_task()
    held = store.held_out(dataset.dataset_id, "wn")
    assert dataset.split_rule == "row-hash" and held.train_inputs == []
    assert (held.classes, held.test_inputs, held.test_labels) == (
        full.classes,
        full.test_inputs,
        full.test_labels,
    )
    assert store.get(dataset.dataset_id, "wn").to_task().test_inputs == full.test_inputs


def test_a_dataset_stored_by_an_earlier_release_keeps_its_seeded_held_out_rows():
    bucket, dataset = MemoryBucket(), _drop()
    for name, data in dataset.files.items():  # what a release before held_out.json stored
        bucket.put_immutable(f"datasets/{dataset.dataset_id}/{name}", data)
    store = DatasetStore(bucket)
    legacy = store.get(dataset.dataset_id, "wn").to_task()
    assert legacy.meta["held_out"].startswith("seeded")
    assert store.held_out(dataset.dataset_id, "wn").test_inputs == legacy.test_inputs
    again = _drop()  # the same drop trained again (after a rollback): the rows it was scored on stay
    store.put(again)
    assert again.split_rule == "seeded" and again.to_task().test_inputs == legacy.test_inputs
    assert store.held_out(dataset.dataset_id, "wn").test_inputs == legacy.test_inputs
