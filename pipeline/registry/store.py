"""Adapter sets and task datasets in the bucket. Everything is content-addressed and written once.

adapter-sets/objects/adapters/<sha256>.safetensors   shared by every set that keeps the adapter
adapter-sets/objects/heads/<sha256>.safetensors
adapter-sets/objects/scoring/<sha256>.safetensors    what a head option keeps (class statistics, ridge sums)
adapter-sets/manifests/<set-id>.json                 written last: a set exists once this exists
datasets/<dataset-id>/{train,test}.parquet, task.json  what trained each task, as dropped
datasets/<dataset-id>/held_out.parquet, held_out.json   the rows every version scores it on, and how they were chosen
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq
from pyarrow import fs as pafs

from pipeline.adapters.adapter_set import (
    MANIFEST,
    AdapterSetError,
    read_manifest,
    set_files,
    upgrade_manifest,
    verify_adapter_set,
)
from pipeline.data.held_out import SEEDED
from pipeline.data.task_dataset import TaskDataset, is_data_file
from pipeline.learn.task import Task
from pipeline.registry.bucket import Bucket, StorageError, arrow_filesystem
from pipeline.registry.lineage import Lineage
from pipeline.registry.pointer import CurrentPointer
from pipeline.registry.streams import DEFAULT_STREAM, Streams, registered_model_of
from pipeline.settings import Connection

SETS = "adapter-sets"
HELD_OUT_RECORD, HELD_OUT_ROWS = "held_out.json", "held_out.parquet"


def set_id_of(manifest_bytes: bytes) -> str:
    return hashlib.sha256(manifest_bytes).hexdigest()[:20]


class AdapterSetStore:
    def __init__(self, bucket: Bucket, cache_dir: Path):
        self.bucket = bucket
        self.cache_dir = cache_dir

    def manifest_key(self, set_id: str) -> str:
        return f"{SETS}/manifests/{set_id}.json"

    def publish(self, directory: Path) -> tuple[str, str]:
        """Upload a local adapter set: its files first, then the manifest. Returns (set id, manifest URI)."""
        manifest = read_manifest(directory)
        for rel in set_files(manifest):
            self.bucket.put_immutable(f"{SETS}/objects/{rel}", (directory / rel).read_bytes())
        data = (directory / MANIFEST).read_bytes()
        set_id = set_id_of(data)
        self.bucket.put_immutable(self.manifest_key(set_id), data)
        return set_id, self.bucket.uri(self.manifest_key(set_id))

    def set_id_from_uri(self, uri: str) -> str:
        prefix = self.bucket.uri(f"{SETS}/manifests/")
        if not (uri.startswith(prefix) and uri.endswith(".json")):
            raise AdapterSetError(f"{uri} is not an adapter-set manifest in bucket {self.bucket.name!r}")
        return uri[len(prefix) : -len(".json")]

    def verify(self, set_id: str) -> dict:
        """Download a set afresh (not from the cache) and check every file; returns its manifest."""
        with tempfile.TemporaryDirectory() as tmp:
            return verify_adapter_set(self.fetch(set_id, Path(tmp)))

    def manifest(self, set_id: str) -> dict:
        """A set's manifest alone (its metrics, tasks and file list), checked against the id; no other file."""
        cached = self.cache_dir / "sets" / set_id / MANIFEST
        return read_manifest(cached.parent) if cached.exists() else self._manifest(set_id)[1]

    def _manifest(self, set_id: str) -> tuple[bytes, dict]:
        try:
            data = self.bucket.get(self.manifest_key(set_id))
        except FileNotFoundError as err:
            raise AdapterSetError(f"adapter set {set_id}: manifest {err} is missing") from err
        if set_id_of(data) != set_id:
            raise AdapterSetError(f"adapter set {set_id}: manifest content does not match its id (corrupt)")
        return data, upgrade_manifest(
            json.loads(data), self.manifest_key(set_id)
        )  # a newer format stops here

    def fetch(self, set_id: str, root: Path | None = None) -> Path:
        """A local copy of a set (cached; every file is verified against its hash when the set is loaded)."""
        target = (root or self.cache_dir / "sets") / set_id
        if (target / MANIFEST).exists():
            return target
        data, manifest = self._manifest(set_id)
        for rel in set_files(manifest):
            if Path(rel).is_absolute() or ".." in Path(rel).parts:
                raise AdapterSetError(f"adapter set {set_id}: manifest refers to {rel!r}, outside the set")
            path = target / rel
            if not path.exists():
                try:
                    blob = self.bucket.get(f"{SETS}/objects/{rel}")
                except FileNotFoundError as err:
                    raise AdapterSetError(f"adapter set {set_id}: file {err} is missing") from err
                _write(path, blob)
        _write(target / MANIFEST, data)  # last, so a half-fetched cache entry is never taken as complete
        return target


def _write(path: Path, data: bytes) -> None:
    """Write into the local cache; a failure (disk full, no permission) names the file, which a failed write
    alone does not."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    except OSError as err:
        raise type(err)(err.errno, err.strerror, str(path)) from err


class DatasetStore:
    """Each trained dataset, kept by id so that every later version can evaluate every earlier task. Beside the
    drop's files, its held-out rows on their own: scoring an earlier task reads those, never its training rows."""

    def __init__(self, bucket: Bucket):
        self.bucket = bucket

    def put(self, dataset: TaskDataset) -> str:
        """Store the drop and its held-out rows. A dataset stored before takes the held-out rule recorded then
        (or, stored by a release before held_out.json existed, the seeded rule it was scored with)."""
        prefix = f"datasets/{dataset.dataset_id}/"
        if dataset.held_out_rule is None and self.bucket.list(prefix):
            record = self._record(dataset.dataset_id)
            dataset.held_out_rule = record["rule"] if record else SEEDED
        for name, data in (dataset.files | held_out_files(dataset)).items():  # the record comes last
            self.bucket.put_immutable(prefix + name, data)
        return self.bucket.uri(prefix)

    def _record(self, dataset_id: str) -> dict | None:
        try:
            return json.loads(self.bucket.get(f"datasets/{dataset_id}/{HELD_OUT_RECORD}"))
        except FileNotFoundError:
            return None

    def get(self, dataset_id: str, name: str) -> TaskDataset:
        prefix = f"datasets/{dataset_id}/"
        files = {
            o["Key"][len(prefix) :]: self.bucket.get(o["Key"])
            for o in self.bucket.list_objects(prefix)
            if is_data_file(o["Key"][len(prefix) :])
        }
        if not files:
            raise FileNotFoundError(self.bucket.uri(f"datasets/{dataset_id}/"))
        dataset = TaskDataset.from_files(name, files)
        if dataset.dataset_id != dataset_id:
            raise StorageError(f"{self.bucket.uri(prefix)} holds other bytes ({dataset.dataset_id})")
        record = self._record(dataset_id)
        dataset.held_out_rule = record["rule"] if record else SEEDED
        return dataset

    def held_out(self, dataset_id: str, name: str) -> Task:
        """The task with its held-out rows only (no training rows): what scoring it after a later task needs."""
        record = self._record(dataset_id)
        if record is None:  # stored before held-out rows were kept apart: cut them from the drop
            return replace(self.get(dataset_id, name).to_task(), train_inputs=[], train_labels=[])
        table = pq.read_table(io.BytesIO(self.bucket.get(f"datasets/{dataset_id}/{HELD_OUT_ROWS}")))
        index = {c: i for i, c in enumerate(record["classes"])}
        return Task(
            name,
            record["classes"],
            [],
            [],
            table[record["input_column"]].to_pylist(),
            [index[str(y)] for y in table["label"].to_pylist()],
            dataset_id,
            {"held_out": record["rule"]},
        )


def held_out_files(dataset: TaskDataset) -> dict[str, bytes]:
    """held_out.parquet (label and input of the rows every version scores the task on) and held_out.json (the
    rule that chose them, the classes, the row counts)."""
    train, rows = dataset.split()
    buffer = io.BytesIO()
    pq.write_table(rows.select(["label", dataset.input_column]), buffer)
    record = {
        "rule": dataset.split_rule,
        "classes": dataset.classes(),
        "input_column": dataset.input_column,
        "held_out_rows": rows.num_rows,
        "train_rows": train.num_rows,
    }
    return {HELD_OUT_ROWS: buffer.getvalue(), HELD_OUT_RECORD: json.dumps(record, sort_keys=True).encode()}


def read_drop(conn: Connection, uri: str, name: str) -> TaskDataset:
    """A drop folder in S3 (`s3://bucket/prefix/`), read through pyarrow's S3 filesystem and validated."""
    root = uri.removeprefix("s3://").rstrip("/")
    filesystem = arrow_filesystem(conn)
    infos = filesystem.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    files = {
        rel: filesystem.open_input_file(info.path).readall()
        for info in infos
        if info.type == pafs.FileType.File and is_data_file(rel := info.path[len(root) + 1 :])
    }
    if not files:
        raise FileNotFoundError(f"s3://{root}/ holds no drop files (train.parquet, train/*.parquet, …)")
    return TaskDataset.from_files(name, files)


def read_dataset(conn: Connection, dataset_id: str, name: str) -> TaskDataset:
    """A stored task read the way Ray workers and Tune trials read it (pyarrow, no local copy), checked against
    its id, with the held-out rule it was stored with."""
    root = f"{conn.bucket}/datasets/{dataset_id}"
    dataset = read_drop(conn, root, name)
    if dataset.dataset_id != dataset_id:
        raise StorageError(f"s3://{root}/ holds other bytes ({dataset.dataset_id})")
    dataset.held_out_rule = held_out_record(conn, dataset_id)["rule"]
    return dataset


def held_out_record(conn: Connection, dataset_id: str) -> dict:
    """A stored dataset's held_out.json (a dataset stored before it existed: the seeded rule)."""
    try:
        with arrow_filesystem(conn).open_input_file(
            f"{conn.bucket}/datasets/{dataset_id}/{HELD_OUT_RECORD}"
        ) as f:
            return json.loads(f.readall())
    except FileNotFoundError:
        return {"rule": SEEDED}


class Registry:
    """Everything a lineage lives in: the bucket (sets, datasets, ledger), MLflow (versions, alias, runs) and a
    local cache. Built from a `Connection`, or from any bucket and lineage with the same methods (the tests'
    in-memory ones). One registry is one stream's lineage; `for_stream` gives another stream's."""

    def __init__(
        self,
        bucket: Bucket,
        lineage: Lineage,
        cache_dir: Path,
        stream: str = DEFAULT_STREAM,
        base_model: str = "",
    ):
        self.bucket, self.lineage, self.cache_dir, self.stream = bucket, lineage, cache_dir, stream
        self.sets = AdapterSetStore(bucket, cache_dir)
        self.datasets = DatasetStore(bucket)
        self.pointer = CurrentPointer(bucket, lineage)
        self.streams = Streams(bucket, base_model or lineage.name)
        self._siblings: dict[str, Registry] = {stream: self}

    def current(self, reconcile: bool = True):
        """The registered version under `current` (None before a lineage's first set); `reconcile` False
        computes it without writing (see CurrentPointer.head)."""
        return self.pointer.read(reconcile)

    def for_stream(self, stream: str) -> Registry:
        """The same bucket and MLflow server, holding `stream`'s lineage."""
        # One registry per stream, shared by its siblings: a watcher asks for a drop's stream on every drop, and a
        # registry holds an MLflow client and the pointer's cached head.
        if stream not in self._siblings:
            model = registered_model_of(self.streams.base_model, stream)
            sibling = Registry(
                self.bucket, self.lineage.for_model(model), self.cache_dir, stream, self.streams.base_model
            )
            sibling._siblings = self._siblings
            self._siblings[stream] = sibling
        return self._siblings[stream]

    @property
    def backbone(self) -> str | None:
        """The backbone this stream's first drop fixed (None: no record yet)."""
        record = self.streams.get(self.stream)
        return record.backbone if record else None

    @classmethod
    def connect(cls, conn: Connection) -> Registry:
        """The registry of the connection's stream."""
        return cls(Bucket.connect(conn), Lineage(conn), conn.cache_dir, conn.stream, conn.base_model)


def load_drop(conn: Connection, data: str, name: str | None = None) -> TaskDataset:
    """A drop from a local folder or parquet file, or from `s3://bucket/prefix/`, validated."""
    if data.startswith("s3://"):
        return read_drop(conn, data, name or data.rstrip("/").rsplit("/", 1)[-1])
    return TaskDataset.from_dir(Path(data), name=name)
