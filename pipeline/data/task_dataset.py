"""A task dataset drop (docs/architecture.md §3): `train.parquet`, optional `test.parquet` and `task.json`, validated.

A split may also come as many files, `train/*.parquet` and `test/*.parquet` (what Spark, Glue, Athena and Ray Data
write, e.g. `train/part-00000-….snappy.parquet`); markers and checksums beside them (`_SUCCESS`, `.crc`) are
ignored. Each file is validated on its own; the parts are taken in the order of their content hashes, so a split's
rows and its dataset id do not depend on the names a writer gave the parts.

Every problem is reported as an `InvalidDataset` whose message says what to fix, so a drop can be
quarantined with a reason a user can act on.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import random
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.data.held_out import ROW_HASH, SEEDED, TEST_FILE, is_held_out, row_keys
from pipeline.data.image_folder import (
    NotAnImageFolder,
    image_folder_files,
    is_image_folder,
    read_image_folder,
)
from pipeline.data.images import checked_image
from pipeline.data.stream_names import DEFAULT_STREAM, StreamError, check_stream_name
from pipeline.errors import UserError
from pipeline.learn.backbone import UnknownBackbone, check_backbone_name
from pipeline.learn.config import check_recruit_space
from pipeline.learn.task import Task
from pipeline.methods import UnknownMethod, check_stream_method

INPUT_COLUMNS = ("text", "image")
DATA_FILES = ("train.parquet", "test.parquet", "task.json")
PARQUET_PART = re.compile(r"^(train|test)/([^/.][^/]*\.parquet)$")
"""A part of a split written as many files: `train/<name>.parquet` (hidden files are a writer's leftovers)."""
NESTED_PART = re.compile(r"^(train|test)/[^/]+/.*\.parquet$")
"""Parquet files in folders below a split (Hive-style partitions): refused, never silently dropped."""
MAX_BYTES = 2 * 1024**3
DECODE_BATCH_ROWS = 8192
"""Rows read at a time while the decoded bytes are counted (a batch is counted before it is decoded)."""
HELD_OUT_FRACTION = 0.2
HELD_OUT_SEED = 0
"""The same seed on every read, so a task's held-out split never changes between training and evaluation."""


TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")
"""A task's name, from its key or its task.json: it becomes part of bucket keys, export folders, Ray run and
Tune folder names, and is echoed to terminals, so it may not hold '/', '..' leading dots or control characters."""


class InvalidDataset(ValueError, UserError):
    """The drop breaks the dataset contract; the message names the problem and the fix."""


def check_task_name(name: object, where: str = "task name") -> str:
    if not isinstance(name, str) or not TASK_NAME.match(name):
        shown = repr(name)[:60] + ("…" if len(repr(name)) > 60 else "")
        raise InvalidDataset(
            f"{where} {shown}: 1-100 letters, digits, '.', '_' or '-', starting with one of the first two"
        )
    return name


@dataclass(frozen=True)
class DatasetLimits:
    """What a drop may cost to read. Checked from sizes and parquet footers before any column is decoded, so a
    small file that would expand into gigabytes (millions of repeated rows) is refused without expanding it."""

    max_bytes: int = MAX_BYTES
    """All files of the drop, as stored."""
    max_rows: int = 1_000_000
    """Per split (its one file, or all its parts together)."""
    max_decoded_bytes: int = 4 * 1024**3
    """Per split, uncompressed, as the footers declare (and dictionaries expand)."""
    max_parts: int = 10_000
    """Files of one split."""
    max_text_bytes: int = 1024**2
    """One `text` value (the tokenizer keeps a few hundred tokens of it anyway)."""
    max_image_bytes: int = 16 * 1024**2
    """One encoded `image` value."""
    max_image_pixels: int = 25_000_000
    """One image, width × height as its header declares (checked before decoding)."""
    max_split_pixels: int = 2_000_000_000
    """All images of a split together, as their headers declare (checked before any is decoded): 20,000 photos
    of 10 MP, or 2.5 million 28×28 digits."""
    max_classes: int = 10_000
    """Classes of one drop: heads and class statistics grow with them."""
    max_label_chars: int = 200
    """One class name (it is stored in every later set's manifest and shown in every lineage)."""


def is_data_file(name: str) -> bool:
    """A file the contract reads: train.parquet, test.parquet, task.json, or a part `train|test/<name>.parquet`
    (and parquet files below those folders, so that validation can refuse them with a reason)."""
    return name in DATA_FILES or PARQUET_PART.match(name) is not None or NESTED_PART.match(name) is not None


def is_training_file(name: str) -> bool:
    """`train.parquet`, or a part `train/<name>.parquet`."""
    return name == "train.parquet" or (
        (part := PARQUET_PART.match(name)) is not None and part.group(1) == "train"
    )


def split_parts(files: dict[str, bytes], split: str) -> list[tuple[str, bytes]]:
    """The files of `split` ("train" or "test"): its one parquet file, or its parts in content-hash order."""
    nested = sorted(n for n in files if NESTED_PART.match(n) and n.startswith(f"{split}/"))
    if nested:
        raise InvalidDataset(
            f"{nested[0]}: a split's parquet files sit directly in {split}/ (partition folders such as "
            "label=x/ are not read, and their column would be lost): write the split without partitionBy"
        )
    parts = [(n, d) for n, d in files.items() if (m := PARQUET_PART.match(n)) and m.group(1) == split]
    if parts and f"{split}.parquet" in files:
        raise InvalidDataset(f"both {split}.parquet and {split}/*.parquet: drop one or the other")
    if parts:
        return sorted(parts, key=lambda part: hashlib.sha256(part[1]).digest())
    return [(f"{split}.parquet", files[f"{split}.parquet"])] if f"{split}.parquet" in files else []


def stored_files(files: dict[str, bytes]) -> dict[str, bytes]:
    """The contract's files under the names they are kept by: a part is named by its content (and, for identical
    parts, such as a writer's empty partitions, by its place among them), so the same rows written again by a
    writer that names its parts afresh (Spark's UUIDs) land on the same objects, not beside them."""
    out, seen = {}, {}
    for name, data in sorted(files.items(), key=lambda item: hashlib.sha256(item[1]).digest()):
        part = PARQUET_PART.match(name)
        if not part:
            out[name] = data
            continue
        digest = hashlib.sha256(data).hexdigest()[:32]
        n = seen[(part.group(1), digest)] = seen.get((part.group(1), digest), -1) + 1
        out[f"{part.group(1)}/{digest}{f'-{n}' if n else ''}.parquet"] = data
    return out


def dataset_id(files: dict[str, bytes]) -> str:
    """Content hash of a drop: the same bytes always give the same id, whatever the task name (and whatever the
    parts of a split are called)."""
    entries = []
    for name, data in files.items():
        part = PARQUET_PART.match(name)
        entries.append(((f"{part.group(1)}/*" if part else name).encode(), hashlib.sha256(data).digest()))
    h = hashlib.sha256()
    for name, digest in sorted(entries):
        h.update(name + b"\0" + digest)
    return h.hexdigest()


@contextlib.contextmanager
def _unreadable(name: str) -> Iterator[None]:
    try:
        yield
    except (pa.ArrowException, OSError) as err:
        raise InvalidDataset(
            f"{name} is not a readable parquet file (truncated or another format): {err}"
        ) from err


def _footer(name: str, data: bytes) -> pq.FileMetaData:
    with _unreadable(name):
        return pq.ParquetFile(pa.BufferReader(data)).metadata


def _read_parquet(
    name: str,
    data: bytes,
    limits: DatasetLimits,
    input_column: str | None,
    budget: int | None = None,
    meta: pq.FileMetaData | None = None,
) -> tuple[pa.Table, str, int]:
    """Read the label and input columns of a parquet file, never holding more than the limits allow in memory.

    Everything that can be checked on the footer is checked before any value is decoded: row count, column
    names and types (a nested or fixed-size column can expand a tiny file into gigabytes), declared sizes of
    the two columns' leaves. Other columns are never read. What the footer declares may understate: the values
    are then decoded a batch at a time against the same limit (`_decode_within`). `budget`: the
    decoded bytes left for this file when it is one part of a split; `meta`: its footer, if already read.
    Returns (table with `label` and the input column, the input column's name, its decoded bytes)."""
    meta = meta or _footer(name, data)
    schema = meta.schema.to_arrow_schema()
    if meta.num_rows > limits.max_rows:
        raise InvalidDataset(f"{name} has {meta.num_rows:,} rows, over the {limits.max_rows:,}-row limit")
    column = _check_schema(name, schema, input_column)
    wanted = ["label", column]
    leaves = _leaf_indices(name, meta, wanted)
    declared = sum(
        meta.row_group(g).column(i).total_uncompressed_size
        for g in range(meta.num_row_groups)
        for i in leaves
    )
    allowed = limits.max_decoded_bytes if budget is None else budget
    limit = (
        f"the {allowed:,}-byte limit"
        if budget is None
        else f"the {allowed:,} bytes left of the split's {limits.max_decoded_bytes:,}-byte limit"
    )
    if declared > allowed:
        raise InvalidDataset(f"{name} decodes to {declared:,} bytes, over {limit}")
    variable = [c for c in wanted if _variable_width(schema.field(c).type)]
    table, decoded = _decode_within(name, data, wanted, variable, allowed, limit)
    table = pa.table({c: table[c].cast(_plain(table.schema.field(c).type)) for c in wanted})
    _check_values(name, table, column, limits)
    return table, column, max(declared, decoded)


def _leaf_indices(name: str, meta: pq.FileMetaData, wanted: list[str]) -> list[int]:
    """The footer's leaf columns of the top-level columns `wanted`. A footer counts leaves, not fields: a struct
    before `label` shifts every later index, so the leaves are found by their path."""
    paths = [meta.schema.column(i).path for i in range(meta.num_columns)]
    found = [i for i, path in enumerate(paths) if path in wanted]
    if sorted(paths[i] for i in found) != sorted(wanted):
        raise InvalidDataset(
            f"{name}: columns {wanted} must each be one flat column (leaf columns: {paths[:10]})"
        )
    return found


def _decode_within(
    name: str, data: bytes, wanted: list[str], variable: list[str], allowed: int, limit: str
) -> tuple[pa.Table, int]:
    """The columns `wanted`, decoded a batch at a time with a running count of their decoded bytes, so a footer
    that understates its sizes is refused once the count passes `allowed`, never after decoding it all. Strings
    and bytes arrive dictionary-encoded and a batch is counted before it is decoded: a tiny file can repeat one
    huge value a million times through its dictionary. Each batch carries its own copy of the dictionary, so a
    batch is decoded (and its copy dropped) before the next is read."""
    batches, decoded = [], 0
    with _unreadable(name):
        reader = pq.ParquetFile(pa.BufferReader(data), read_dictionary=variable)
        for batch in reader.iter_batches(batch_size=DECODE_BATCH_ROWS, columns=wanted):
            decoded += sum(
                _dictionary_decoded_bytes(batch[c]) if c in variable else batch[c].nbytes for c in wanted
            )
            if decoded > allowed:
                raise InvalidDataset(f"{name} decodes to more than {decoded:,} bytes, over {limit}")
            batches.append(pa.record_batch([_plain_array(batch[c]) for c in wanted], names=wanted))
        table = pa.Table.from_batches(batches) if batches else reader.read(columns=wanted)
    return table, decoded


def _plain_array(array: pa.Array) -> pa.Array:
    return array.dictionary_decode() if pa.types.is_dictionary(array.type) else array


def _read_split(
    files: dict[str, bytes], split: str, limits: DatasetLimits, input_column: str | None
) -> tuple[pa.Table, str] | None:
    """A split's rows from its file or parts, each part validated alone and all of them within the split's limits
    (None if the drop has no such split)."""
    parts = split_parts(files, split)
    if not parts:
        return None
    footers: list[pq.FileMetaData | None] = [None] * len(parts)
    if len(parts) > 1:  # the totals, from the footers, before any part is decoded
        if len(parts) > limits.max_parts:
            raise InvalidDataset(
                f"{split}/ holds {len(parts):,} parquet files, over the {limits.max_parts:,}-file limit"
            )
        footers = [_footer(name, data) for name, data in parts]
        rows = sum(meta.num_rows for meta in footers)
        if rows > limits.max_rows:
            raise InvalidDataset(
                f"{split}/*.parquet: {rows:,} rows in {len(parts)} files, over the {limits.max_rows:,}-row limit"
            )
    tables, column, left = [], input_column, limits.max_decoded_bytes
    for (name, data), meta in zip(parts, footers, strict=True):
        budget = left if len(parts) > 1 else None
        table, found, decoded = _read_parquet(name, data, limits, column, budget, meta)
        if tables and table.schema != tables[0].schema:
            raise InvalidDataset(
                f"{name} has columns {table.schema.types}, unlike {parts[0][0]} ({tables[0].schema.types}): "
                "every part of a split needs the same label and input types"
            )
        tables.append(table)
        column, left = found, left - decoded
    table = pa.concat_tables(tables)
    where = f"{split}/*.parquet" if len(parts) > 1 else parts[0][0]
    if table.num_rows == 0:
        raise InvalidDataset(f"{where} is empty")
    if column == "image":
        _check_images(where, table[column], limits)
    return table, column


def _plain(kind: pa.DataType) -> pa.DataType:
    return kind.value_type if pa.types.is_dictionary(kind) else kind


def _variable_width(kind: pa.DataType) -> bool:
    kind = _plain(kind)
    return (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
    )


def _dictionary_decoded_bytes(array: pa.Array) -> int:
    """The bytes a dictionary-encoded string or binary array takes once decoded (values and offsets)."""
    lengths = pc.binary_length(array.dictionary)
    return (pc.sum(pc.take(lengths, array.indices)).as_py() or 0) + 8 * len(array)


def _check_schema(name: str, schema: pa.Schema, input_column: str | None) -> str:
    """The label and input columns exist once and have flat types of the contract. Returns the input column."""
    names = set(schema.names)
    if len(names) != len(schema.names):
        raise InvalidDataset(f"{name} has repeated column names")
    if "label" not in names:
        raise InvalidDataset(f"{name} has no 'label' column (columns: {sorted(names)})")
    inputs = [c for c in INPUT_COLUMNS if c in names]
    if input_column is not None:
        inputs = [input_column] if input_column in names else []
    if len(inputs) != 1:
        raise InvalidDataset(
            f"{name} needs exactly one input column, 'text' (strings) or 'image' (PNG/JPEG bytes); found {inputs or 'none'}"
        )
    extra = names - {"label", inputs[0]}
    if extra:
        warnings.warn(f"{name}: ignoring extra columns {sorted(extra)}", stacklevel=4)
    label = _plain(schema.field("label").type)
    if not (pa.types.is_integer(label) or pa.types.is_string(label) or pa.types.is_large_string(label)):
        raise InvalidDataset(f"{name}: 'label' must hold integers or strings, not {label}")
    kind = _plain(schema.field(inputs[0]).type)
    expected = pa.types.is_string if inputs[0] == "text" else pa.types.is_binary
    if not (expected(kind) or (inputs[0] == "text" and pa.types.is_large_string(kind))):
        raise InvalidDataset(f"{name}: column '{inputs[0]}' has type {kind}")
    return inputs[0]


def _check_values(name: str, table: pa.Table, column: str, limits: DatasetLimits) -> None:
    for c in ("label", column):
        if table[c].null_count:
            raise InvalidDataset(
                f"{name} has {table[c].null_count} rows with a null "
                + ("label" if c == "label" else f"'{c}'")
            )
    limit = limits.max_text_bytes if column == "text" else limits.max_image_bytes
    longest = pc.max(pc.binary_length(table[column])).as_py() or 0
    if longest > limit:
        raise InvalidDataset(
            f"{name}: a '{column}' value is {longest:,} bytes, over the {limit:,}-byte limit per row"
        )
    if pa.types.is_string(table["label"].type) or pa.types.is_large_string(table["label"].type):
        longest = pc.max(pc.utf8_length(table["label"])).as_py() or 0
        if longest > limits.max_label_chars:
            raise InvalidDataset(
                f"{name}: a label is {longest:,} characters, over the {limits.max_label_chars}-character limit"
            )


def _check_images(name: str, images: pa.ChunkedArray, limits: DatasetLimits) -> None:
    """Every header first (per image and all together within the pixel limits), then every image decoded."""
    pixels = 0
    for decode in (False, True):
        for row, data in enumerate(images.to_pylist()):
            problem, declared = checked_image(data, limits.max_image_pixels, decode)
            if problem:
                raise InvalidDataset(f"{name}: the image in row {row} {problem}")
            pixels += declared if not decode else 0
        if pixels > limits.max_split_pixels:
            raise InvalidDataset(
                f"{name}: its images declare {pixels:,} pixels, over the {limits.max_split_pixels:,}-pixel limit"
            )


def contract_files(files: dict[str, bytes]) -> dict[str, bytes]:
    """A drop's files by relative path → the contract's files: an image folder (train/<class>/<image>) becomes its
    parquet files; anything else keeps the files the contract names."""
    if not is_image_folder(list(files)):
        return {name: data for name, data in files.items() if is_data_file(name)}
    try:
        return image_folder_files(files)
    except NotAnImageFolder as err:
        raise InvalidDataset(str(err)) from err


def drop_files(path: str | Path) -> dict[str, bytes]:
    """The contract's files of a local drop: a folder holding them (a split may be a folder of parquet parts), an
    image folder, or one parquet file (the training rows)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".parquet":
        return {"train.parquet": path.read_bytes()}
    if not path.is_dir():
        raise InvalidDataset(f"{path} is neither a drop folder nor a parquet file")
    # An image folder, or splits written as many parquet files.
    if (path / "train").is_dir() or (path / "test").is_dir():
        try:
            return contract_files(read_image_folder(path))
        except InvalidDataset as err:
            raise InvalidDataset(f"{path}: {err}") from err
    return {f: (path / f).read_bytes() for f in DATA_FILES if (path / f).exists()}


@dataclass
class TaskDataset:
    name: str
    train: pa.Table
    test: pa.Table | None
    input_column: str
    dataset_id: str
    info: dict = field(default_factory=dict)
    files: dict[str, bytes] = field(default_factory=dict, repr=False)
    """The contract's files as dropped, parts under their content names (what the registry stores under
    datasets/<id>/)."""
    held_out_rule: str | None = None
    """The held-out rule the store recorded for this dataset (None: a new drop's, see `split_rule`)."""

    @classmethod
    def from_files(
        cls, name: str, files: dict[str, bytes], limits: DatasetLimits = DatasetLimits()
    ) -> TaskDataset:
        """Validate a drop given as {file name: bytes} (from a folder or from S3)."""
        size = sum(len(b) for b in files.values())
        if size > limits.max_bytes:
            raise InvalidDataset(f"drop is {size:,} bytes, over the {limits.max_bytes:,}-byte limit")
        if not split_parts(files, "train"):
            raise InvalidDataset(
                f"no train.parquet (or train/*.parquet) in the drop (found: {sorted(files) or 'nothing'})"
            )
        info = {}
        if "task.json" in files:
            try:
                info = json.loads(files["task.json"])
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise InvalidDataset(f"task.json is not valid JSON: {err}") from err
            if not isinstance(info, dict):
                raise InvalidDataset("task.json must hold a JSON object")
            if info.get("input_column", "text") not in INPUT_COLUMNS:
                raise InvalidDataset(f"task.json: input_column must be one of {list(INPUT_COLUMNS)}")
            check_task_name(info.get("name", name), "task.json: name")
            try:
                check_stream_name(info.get("stream", DEFAULT_STREAM))
                if "backbone" in info:
                    check_backbone_name(info["backbone"])
                if "method" in info:
                    check_stream_method(info["method"])
                if "recruits" in info:
                    check_recruit_space(info["recruits"])
            except (StreamError, UnknownBackbone, UnknownMethod, ValueError) as err:
                raise InvalidDataset(f"task.json: {err}") from err
        train, column = _read_split(files, "train", limits, info.get("input_column"))
        classes = pc.count_distinct(train["label"]).as_py()
        if classes < 2:
            raise InvalidDataset("the training rows hold a single class; a task needs at least two")
        if classes > limits.max_classes:
            raise InvalidDataset(
                f"the training rows hold {classes:,} classes, over the {limits.max_classes:,}-class limit"
            )
        test = None
        if found := _read_split(files, "test", limits, column):
            test, test_column = found
            if test_column != column:
                raise InvalidDataset("the test and training rows use different input columns")
            if test["label"].type != train["label"].type:
                raise InvalidDataset("the test labels are not of the same type as the training labels")
            unknown = set(test["label"].to_pylist()) - set(train["label"].to_pylist())
            if unknown:
                raise InvalidDataset(
                    f"the test rows have labels the training rows never show: {sorted(map(str, unknown))[:5]}"
                )
        known = stored_files({k: v for k, v in files.items() if is_data_file(k)})
        return cls(info.get("name", name), train, test, column, dataset_id(known), info, known)

    @classmethod
    def from_dir(
        cls, path: str | Path, name: str | None = None, limits: DatasetLimits = DatasetLimits()
    ) -> TaskDataset:
        path = Path(path)
        return cls.from_files(name or (path.stem if path.is_file() else path.name), drop_files(path), limits)

    @property
    def stream(self) -> str:
        """The stream (independent lineage) the drop belongs to: task.json's `stream`, else `default`."""
        return self.info.get("stream", DEFAULT_STREAM)

    @property
    def backbone(self) -> str | None:
        """The backbone task.json asks for (a new stream's first drop fixes it), or None."""
        return self.info.get("backbone")

    @property
    def method(self) -> str | None:
        """The method task.json asks for (a new stream's first drop fixes it), or None."""
        return self.info.get("method")

    @property
    def recruits(self) -> str | None:
        """Where a recruited adapter acts, as task.json asks (a new stream's first drop fixes it), or None."""
        return self.info.get("recruits")

    def classes(self) -> list[str]:
        """The label names of the training rows, sorted (the task's classes)."""
        return sorted({str(y) for y in self.train["label"].to_pylist()})

    def schema(self) -> dict[str, str]:
        """Column → type of the training table (what the lineage records instead of the rows)."""
        return {f.name: str(f.type) for f in self.train.schema}

    @property
    def split_rule(self) -> str:
        """How the held-out rows are chosen (held_out.py): the drop's test rows, else `held_out_rule` (what the
        store recorded), else row-hash unless the drop is too small for it."""
        if self.test is not None:
            return TEST_FILE
        if self.held_out_rule:
            return self.held_out_rule
        held = int(is_held_out(self.row_keys).sum())
        return ROW_HASH if 0 < held < self.train.num_rows else SEEDED

    @functools.cached_property
    def row_keys(self) -> np.ndarray:
        """Each training row's key (held_out.row_keys)."""
        return row_keys(self.train[self.input_column].to_pylist())

    def held_out_mask(self, seed: int = HELD_OUT_SEED) -> np.ndarray:
        """Which training rows are held out (none when the drop has test rows)."""
        rule, n = self.split_rule, self.train.num_rows
        if rule == TEST_FILE:
            return np.zeros(n, dtype=bool)
        if rule == ROW_HASH:
            return is_held_out(self.row_keys)
        order = list(range(n))
        random.Random(seed).shuffle(order)
        mask = np.zeros(n, dtype=bool)
        mask[order[: max(1, int(n * HELD_OUT_FRACTION))]] = True
        return mask

    def split(self, seed: int = HELD_OUT_SEED) -> tuple[pa.Table, pa.Table]:
        """(the rows that train, the rows every version scores the task on: its test rows, or those held out)."""
        if self.test is not None:
            return self.train, self.test
        mask = self.held_out_mask(seed)
        return self.train.filter(~mask), self.train.filter(mask)

    def to_task(self, seed: int = HELD_OUT_SEED) -> Task:
        """The core's view: class names sorted, the held-out rows of `split_rule`."""
        column = self.input_column  # texts, or encoded images as bytes: what the backbone's `encode` reads
        rule, (train, held) = self.split_rule, self.split(seed)
        train_x, train_y = train[column].to_pylist(), [str(y) for y in train["label"].to_pylist()]
        test_x, test_y = held[column].to_pylist(), [str(y) for y in held["label"].to_pylist()]
        # Every class of the drop, so a worker that streams its shard knows them without reading the others (a
        # seeded split named those left in the training rows: the same set, or a held-out row had no class).
        classes = self.classes()
        index = {c: i for i, c in enumerate(classes)}
        return Task(
            name=self.name,
            classes=classes,
            train_inputs=train_x,
            train_labels=[index[y] for y in train_y],
            test_inputs=test_x,
            test_labels=[index[y] for y in test_y],
            dataset_id=self.dataset_id,
            meta={
                "held_out": f"seeded {HELD_OUT_FRACTION:.0%} split, seed {seed}" if rule == SEEDED else rule
            },
        )


def write_drop(task: Task, directory: str | Path) -> Path:
    """Write a task as a drop folder (train.parquet, test.parquet) with string labels."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for split, xs, ys in (
        ("train", task.train_inputs, task.train_labels),
        ("test", task.test_inputs, task.test_labels),
    ):
        table = pa.table({"text": xs, "label": [task.classes[y] for y in ys]})
        pq.write_table(table, directory / f"{split}.parquet")
    return directory
