"""Which training rows a drop without `test.parquet` holds out, so every version scores the task on the same rows.

row-hash      a row is held out when a keyed hash of its input's bytes falls in one fifth of the range: decided
              by the row alone, so a Ray Data worker picks the same rows from its own shard, in any order,
              and an input repeated in the drop never sits on both sides
seeded        a seeded shuffle of all the training rows, cut at a fifth: what datasets stored before row-hash
              existed were scored with (kept for them), and the fallback for a drop so small that the hash
              would hold out no row or every row
test.parquet  the drop's own test rows; every training row trains
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from pipeline.learn.task import input_hashes

ROW_HASH, SEEDED, TEST_FILE = "row-hash", "seeded", "test.parquet"
ONE_IN = 5
"""One row in five is held out (20%, as the seeded split)."""
PERSON = b"litelora-held"
"""Keys the hash, so the split is independent of the ridge head's own one-in-five choice (ridge.held_out)."""


def row_keys(inputs: Iterable[str | bytes]) -> np.ndarray:
    """A 64-bit key per row from its input's bytes (uint64)."""
    return input_hashes(inputs, PERSON)


def is_held_out(keys: np.ndarray) -> np.ndarray:
    """Which rows (by `row_keys`) the row-hash rule holds out."""
    return keys % np.uint64(ONE_IN) == 0
