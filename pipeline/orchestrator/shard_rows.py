"""A task's training rows streamed through Ray Data into Ray Train.

    the drop's row groups in a new order each epoch  →  read each from the bucket, its rows in a new order each
    epoch  →  drop held-out rows by their hash, label → index  →  blocks of 256 rows  →  decode images / tokenise
    texts  →  streaming_split, one shard a worker  →  a local shuffle buffer of 1,024 rows on each worker

Every step but the worker's own runs in Ray Data's tasks, and a worker iterates its shard a few blocks of 256 rows
at a time: its memory does not grow with the drop (benchmarks/reports/scale.md). No step waits for every row: the
shuffle permutes row groups (their names, not their rows), the rows inside each row group as it is read, and a
worker's next 1,024 rows, each from the job's seed and the epoch (Ray Data's execution count), so every epoch has
its own order and the same seed gives the same orders. Only rules a row decides alone can stream; a drop held out by
the seeded rule (tiny, or stored before row-hash) is read whole, as before.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator
from dataclasses import asdict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray.data
import torch
import torch.distributed as dist
from pyarrow import fs as pafs
from ray.data import RandomSeedConfig

from pipeline.data.held_out import ROW_HASH, TEST_FILE, is_held_out, row_keys
from pipeline.data.task_dataset import is_training_file
from pipeline.learn.adapted_features import RowFeatures, features_of_batches
from pipeline.learn.backbone import BackboneConfig, input_encoder
from pipeline.learn.ridge import held_out
from pipeline.learn.training_rows import Batch, trim_padding
from pipeline.orchestrator.worker_memory import large_blocks_mapped
from pipeline.registry.bucket import arrow_filesystem
from pipeline.settings import Connection

STREAMED_RULES = (ROW_HASH, TEST_FILE)
BLOCK_ROWS = 256
"""Rows per encoded block (64-pixel images as bytes: 3 MB)."""
SHUFFLE_BUFFER_ROWS = 1024
"""Rows each worker reshuffles every epoch (its seed has the epoch in it) on top of the dataset's row-group and
in-group orders: a fixed few megabytes."""
DATA_TASK_CPUS = 0.25
"""What each Ray Data task reserves: fractional, so reading, shuffling and encoding run beside the Train
workers on a small machine."""
ROW_COLUMNS = ("label", "key", "ridge_held")


def rows_decided_alone(record: dict) -> bool:
    """Whether a stored dataset (its held_out.json) can stream: its held-out rows are decided row by row."""
    return record.get("rule") in STREAMED_RULES


def training_dataset(
    conn: Connection, dataset_id: str, record: dict, backbone: BackboneConfig, seed: int
) -> ray.data.Dataset:
    """The stored dataset's training rows, encoded for `backbone`, in an order of their own each epoch (each
    execution of the dataset), drawn from `seed`.

    One read task per parquet row group, from a list the driver makes from the footers, rather than
    `read_parquet`: its file listing takes a whole CPU, which a cluster whose CPUs the Train workers hold never
    frees (Ray Data would wait for ever)."""
    root, filesystem = f"{conn.bucket}/datasets/{dataset_id}", arrow_filesystem(conn)
    paths = sorted(
        info.path
        for info in filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
        if info.type == pafs.FileType.File and is_training_file(info.path[len(root) + 1 :])
    )
    groups = [
        {"path": path, "row_group": group}
        for path in paths
        for group in range(pq.ParquetFile(filesystem.open_input_file(path)).num_row_groups)
    ]
    groups = [group | {"index": index} for index, group in enumerate(groups)]
    column = record["input_column"]
    read = functools.partial(
        read_training_rows,
        conn=conn,
        column=column,
        classes=record["classes"],
        hash_split=record["rule"] == ROW_HASH,
        seed=seed,
    )
    return (
        ray.data.from_items(groups, override_num_blocks=len(groups))
        # The one step that waits for all its input, which is the row groups' names: an all-to-all shuffle of
        # the rows would hold every row in the object store at once, each epoch.
        .randomize_block_order(seed=epoch_seed(seed))
        .map_batches(read, batch_size=1, batch_format="pyarrow", num_cpus=DATA_TASK_CPUS)
        # Encoded blocks of a few hundred rows: a worker fetches whole blocks, so their size, not the task's, is
        # what it holds (one block of a whole 12,000-image task took it from 1.0 to 2.8 GB).
        .repartition(target_num_rows_per_block=BLOCK_ROWS)
        .map_batches(
            functools.partial(encode_rows, backbone=json.dumps(asdict(backbone)), column=column),
            batch_size=BLOCK_ROWS,
            batch_format="numpy",
            num_cpus=DATA_TASK_CPUS,
        )
    )


def epoch_seed(seed: int) -> RandomSeedConfig:
    """`seed` combined with the epoch: Ray Data reseeds with its execution count, so each pass over the dataset
    draws another order, and the same seed the same sequence of orders."""
    return RandomSeedConfig(seed=seed, reseed_after_execution=True)


def read_training_rows(
    groups: pa.Table, conn: Connection, column: str, classes: list[str], hash_split: bool, seed: int
) -> pa.Table:
    """The training rows of the listed row groups (label and input columns only), in an order drawn from `seed`,
    the epoch and the groups: a drop of one row group is shuffled whole, as a global shuffle would."""
    filesystem = arrow_filesystem(conn)
    tables = [
        pq.ParquetFile(filesystem.open_input_file(path)).read_row_group(group, columns=["label", column])
        for path, group in zip(groups["path"].to_pylist(), groups["row_group"].to_pylist(), strict=True)
    ]
    rows = keep_training_rows(pa.concat_tables(tables), column, classes, hash_split)
    epoch = epoch_seed(seed).get_seed_tuple(data_context=ray.data.DataContext.get_current())
    generator = np.random.default_rng([*epoch.to_rng_args(0), *groups["index"].to_pylist()])
    return rows.take(generator.permutation(rows.num_rows))


def keep_training_rows(batch: pa.Table, column: str, classes: list[str], hash_split: bool) -> pa.Table:
    """The batch's training rows: input, class index, row key (to order features alike on every pass) and the
    ridge head's λ-row flag, both from the input's bytes."""
    inputs = batch[column].to_pylist()
    keys = row_keys(inputs)
    index = {c: i for i, c in enumerate(classes)}
    rows = pa.table(
        {
            column: batch[column],
            "label": np.array([index[str(y)] for y in batch["label"].to_pylist()], dtype=np.int64),
            "key": keys.view(np.int64),
            "ridge_held": held_out(inputs).numpy(),
        }
    )
    return rows.filter(pa.array(~is_held_out(keys))) if hash_split else rows


def encode_rows(batch: dict[str, np.ndarray], backbone: str, column: str) -> dict[str, np.ndarray]:
    """Decode images or tokenise texts in Ray Data, so workers receive the tensors the backbone reads."""
    encoded = _encoder(backbone)(list(batch.pop(column)))
    return batch | {name: tensor.numpy() for name, tensor in encoded.items()}


@functools.lru_cache(maxsize=4)
def _encoder(backbone: str):
    """One tokenizer per Ray worker process and backbone (`backbone`: its configuration as JSON), not one a batch.
    Tasks rather than an actor: an actor would hold its CPU share for the whole job."""
    return input_encoder(BackboneConfig(**json.loads(backbone)))


def _inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the backbone reads of a streamed batch, padding cut to its longest row."""
    return trim_padding({k: v for k, v in batch.items() if k not in ROW_COLUMNS})


class ShardRows:
    """This worker's shard (`ray.train.get_dataset_shard`) as the core's `TrainingRows`. Ray Train splits the
    stream into equal shards, so every rank takes the same number of batches, as DDP needs."""

    def __init__(self, shard, rows: int, eval_batch_size: int):
        """`rows`: the task's training rows, all shards together."""
        self.shard, self.rows, self.eval_batch_size = shard, rows, eval_batch_size

    def __len__(self) -> int:
        return self.rows

    def _batches(self, batch_size: int, seed: int | None) -> Iterator[dict[str, torch.Tensor]]:
        shuffle = (
            {}
            if seed is None
            else {"local_shuffle_buffer_size": SHUFFLE_BUFFER_ROWS, "local_shuffle_seed": seed}
        )
        yield from self.shard.iter_torch_batches(batch_size=batch_size, device="cpu", **shuffle)

    def iterate(
        self, batch_size: int, seed: int | None, device: torch.device, rank: int = 0, world_size: int = 1
    ) -> Iterator[Batch]:
        # `batch_size` is the global batch: each rank takes its share, as with in-memory rows.
        for batch in self._batches(math.ceil(batch_size / world_size), seed):
            yield {k: v.to(device) for k, v in _inputs(batch).items()}, batch["label"].to(device)

    def features(self, model, reference=None) -> RowFeatures:
        """This shard's rows' features (and, given `reference`, theirs under it, computed in the same pass: a pass
        may bring this rank other rows than the last), in the order of their keys. They never leave the worker:
        the heads sum them over the ranks (learn/shard_sums.py)."""
        parts: dict[str, list[torch.Tensor]] = {name: [] for name in ROW_COLUMNS}

        def inputs() -> Iterator[dict[str, torch.Tensor]]:
            for batch in self._batches(self.eval_batch_size, None):
                for name in ROW_COLUMNS:
                    parts[name].append(batch[name])
                yield _inputs(batch)

        models = [model] if reference is None else [model, reference]
        with large_blocks_mapped():  # eval batches are large: their blocks go back to the system
            features = features_of_batches(models, inputs())
        local = {name: torch.cat(tensors) for name, tensors in parts.items()}
        # Sorted by key, ties (the same input repeated) by label: identical inputs have identical features.
        order = torch.argsort(local["label"], stable=True)
        order = order[torch.argsort(local["key"][order], stable=True)]
        return RowFeatures(
            features[0][order],
            local["label"][order],
            local["ridge_held"][order].bool(),
            None if reference is None else features[1][order],
            shard=dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1,
        )
