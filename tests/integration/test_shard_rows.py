"""Ray Data streams a stored task's training rows to the Ray Train workers: exactly the rows the in-memory task
trains on, in equal shards, in an order of each epoch's own, with features that line up row by row from one pass
to the next."""

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from pipeline.data.held_out import row_keys
from pipeline.data.task_dataset import TaskDataset
from pipeline.data.wordnet import split_wordnet20
from pipeline.learn.adapted_features import features_of, reference_copy
from pipeline.learn.backbone import BackboneConfig, input_encoder
from pipeline.learn.config import TrainConfig
from pipeline.learn.model import ContinualModel
from pipeline.learn.ridge import held_out
from pipeline.orchestrator.shard_rows import ShardRows, rows_decided_alone, training_dataset
from pipeline.registry.store import Registry, held_out_record
from tests.orchestrator.conftest import parquet

pytestmark = [pytest.mark.integration, pytest.mark.ray]


@pytest.fixture
def stored(conn):
    """A drop without test rows (held out by row hash), stored as the orchestrator stores it."""
    source = split_wordnet20(1993, "ci")[0]
    texts, labels = source.train_inputs[:60], [source.classes[y] for y in source.train_labels[:60]]
    dataset = TaskDataset.from_files("wn", {"train.parquet": parquet(text=texts, label=labels)})
    Registry.connect(conn).datasets.put(dataset)
    record = held_out_record(conn, dataset.dataset_id)
    assert rows_decided_alone(record) and record["rule"] == "row-hash"
    return dataset, record


def _tokens(inputs: dict[str, torch.Tensor]) -> list[tuple[int, ...]]:
    """Each row's tokens without padding: what identifies a text row once it is encoded."""
    return [
        tuple(ids[mask.bool()].tolist()) for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"])
    ]


def test_ranks_stream_every_training_row_once_and_no_held_out_row_in_equal_steps(
    conn, ray_node, stored, tiny_backbone_dir
):
    dataset, record = stored
    backbone = BackboneConfig(name=str(tiny_backbone_dir))
    shards = training_dataset(conn, dataset.dataset_id, record, backbone, seed=0).streaming_split(
        2, equal=True
    )

    def epoch(shard):
        rows = ShardRows(shard, record["train_rows"], eval_batch_size=8)
        batches = list(rows.iterate(8, 1, torch.device("cpu"), world_size=2))
        return [list(zip(_tokens(inputs), labels.tolist(), strict=True)) for inputs, labels in batches]

    with ThreadPoolExecutor(2) as pool:  # the shards of a streaming split are consumed together
        first, second = pool.map(epoch, shards)
    assert len(first) == len(second), "every rank takes as many DDP steps"
    assert all(len(batch) <= 4 for batch in first + second), "each rank takes its share of the global batch"
    task = dataset.to_task()
    encode = input_encoder(backbone)
    train = Counter(zip(_tokens(encode(task.train_inputs)), task.train_labels, strict=True))
    held = set(_tokens(encode(task.test_inputs)))
    # An even number of training rows, so an equal split drops none: each is streamed exactly once.
    assert record["train_rows"] == sum(train.values()) and record["train_rows"] % 2 == 0 and held
    streamed = Counter(row for batch in first + second for row in batch)
    assert streamed == train
    assert not held & {tokens for tokens, _ in streamed}


def test_streamed_features_are_the_training_rows_in_key_order_on_every_pass(
    conn, ray_node, stored, tiny_backbone_dir, tiny_bert, tokenizer
):
    dataset, record = stored
    backbone = BackboneConfig(name=str(tiny_backbone_dir))
    (shard,) = training_dataset(conn, dataset.dataset_id, record, backbone, seed=0).streaming_split(1)
    model = ContinualModel(TrainConfig(backbone=backbone), backbone=tiny_bert, tokenizer=tokenizer)
    rows = ShardRows(shard, record["train_rows"], eval_batch_size=8)
    before, after = rows.features(model), rows.features(model)  # two passes, other batches
    paired = rows.features(model, reference_copy(model))  # as around a task: both models in one pass

    task = dataset.to_task()  # the held-out rows never reach a worker
    keys = row_keys(task.train_inputs).view("int64").tolist()
    order = sorted(range(len(keys)), key=lambda i: (keys[i], task.train_labels[i]))
    in_memory = features_of(model, task.train_inputs)[order]
    for streamed in (before, after):
        assert streamed.labels.tolist() == [task.train_labels[i] for i in order]
        # The ridge head's λ rows travel with their rows too (a boolean mask: exact, no rounding involved).
        assert torch.equal(streamed.ridge_held, held_out(task.train_inputs)[order])
        # Rows batched with other rows are padded to other widths: equal up to float rounding.
        torch.testing.assert_close(streamed.features, in_memory, rtol=1e-5, atol=1e-5)
    # The reference's features came with the same batches as the model's: the same weights give the same numbers.
    assert torch.equal(paired.before, paired.features) and not paired.shard
    torch.testing.assert_close(paired.features, in_memory, rtol=1e-5, atol=1e-5)


def _epoch_orders(conn, dataset, record, backbone, seed: int) -> list[list[tuple[int, ...]]]:
    """The rows of two epochs of one shard, in the order the dataset streams them (no local shuffle buffer)."""
    (shard,) = training_dataset(conn, dataset.dataset_id, record, backbone, seed=seed).streaming_split(1)
    rows = ShardRows(shard, record["train_rows"], eval_batch_size=8)
    return [
        [row for inputs, _ in rows.iterate(8, None, torch.device("cpu")) for row in _tokens(inputs)]
        for _epoch in range(2)
    ]


def test_each_epoch_streams_the_rows_in_an_order_of_its_own_and_the_same_seed_repeats_the_orders(
    conn, ray_node, stored, tiny_backbone_dir
):
    dataset, record = stored
    backbone = BackboneConfig(name=str(tiny_backbone_dir))
    first, second = _epoch_orders(conn, dataset, record, backbone, seed=3)
    assert sorted(first) == sorted(second) and len(first) == record["train_rows"]
    assert first != second, "epoch 1 is not epoch 0 again"
    assert _epoch_orders(conn, dataset, record, backbone, seed=3) == [first, second]
    assert _epoch_orders(conn, dataset, record, backbone, seed=4)[0] != first
