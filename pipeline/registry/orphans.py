"""Objects in the bucket that no registered version needs: what a job killed before its commit point leaves.

A set's files and manifest are written before its MLflow version exists, and a task's dataset before it trains,
so a crash in between leaves them unreferenced. They are harmless (nothing reads them) and `litelora gc`
deletes them. What counts as referenced is read from every registered model on the MLflow server, so sets
of another model sharing the bucket are safe. A job in progress is protected twice: objects younger than the
grace period are left alone (publishing a set refreshes the age of files it reuses), and so are the datasets of
drops being worked on and of training runs still marked RUNNING.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from pipeline.adapters.adapter_set import set_files, upgrade_manifest
from pipeline.registry.bucket import Bucket
from pipeline.registry.lineage import Lineage
from pipeline.registry.store import SETS

GRACE_S = 3600.0
DATASETS = "datasets/"
CHECKPOINTS = "checkpoints/"


@dataclass
class Orphan:
    key: str
    size: int
    age_s: float
    why: str

    def to_dict(self) -> dict:
        return asdict(self)


def referenced_keys(bucket: Bucket, lineages: Sequence[Lineage]) -> tuple[set[str], set[str]]:
    """(every object key a registered set of any of `lineages` needs, every dataset id such a set was trained
    on)."""
    manifests = {
        source.removeprefix(bucket.uri(""))
        for lineage in lineages
        for source in lineage.all_sources()
        if source.startswith(bucket.uri(f"{SETS}/manifests/"))
    }
    keys, datasets = set(manifests), set()
    for key in manifests:
        try:
            # A set of a format this release does not know raises: its files cannot be told, so nothing is
            # collected rather than something it needs.
            manifest = upgrade_manifest(json.loads(bucket.get(key)), bucket.uri(key))
        except FileNotFoundError:
            continue  # a version whose set is gone: nothing of it to keep
        keys |= {f"{SETS}/objects/{rel}" for rel in set_files(manifest)}
        datasets |= {t.get("dataset_id", "") for t in manifest.get("tasks", [])}
    return keys, datasets


def checkpoint_dataset(key: str) -> str:
    """The 12-character dataset-id prefix of a Ray Train checkpoint key (its run is named `<task>-<id[:12]>`)."""
    return key[len(CHECKPOINTS) :].split("/", 1)[0].rsplit("-", 1)[-1]


def find_orphans(
    bucket: Bucket,
    lineages: Sequence[Lineage],
    grace_s: float = GRACE_S,
    busy: set[str] = frozenset(),
    finished: set[str] = frozenset(),
) -> list[Orphan]:
    """Unreferenced set files, manifests and stored datasets older than `grace_s`, and the Ray Train checkpoints
    of datasets that are done: `finished` (ids whose drop reached a terminal state) or trained into a registered
    set. `busy`: dataset ids that a watcher is working on right now (never orphans, whatever their age).
    `lineages`: every stream's, because streams share the bucket's content-addressed objects."""
    keys, datasets = referenced_keys(bucket, lineages)
    busy = set(busy).union(*(lineage.running_datasets() for lineage in lineages))
    done = {d[:12] for d in set(finished) | datasets if d} - {d[:12] for d in busy}
    now, found = time.time(), []
    listed = (
        bucket.list_objects(f"{SETS}/") + bucket.list_objects(DATASETS) + bucket.list_objects(CHECKPOINTS)
    )
    for obj in listed:
        key, age = obj["Key"], now - obj["LastModified"].timestamp()
        if key in keys or age < grace_s:
            continue
        if key.startswith(CHECKPOINTS):
            if checkpoint_dataset(key) not in done:
                continue
            why = "Ray Train checkpoint of a drop that has ended"
        elif key.startswith(DATASETS):
            dataset = key[len(DATASETS) :].split("/", 1)[0]
            if dataset in datasets or dataset in busy:
                continue
            why = "dataset no registered set was trained on (its job failed or died)"
        elif key.startswith(f"{SETS}/manifests/"):
            why = "manifest of a set that was never registered (its job died before MLflow)"
        else:
            why = "adapter-set file no registered set refers to"
        found.append(Orphan(key, obj["Size"], age, why))
    return found


def delete_orphans(bucket: Bucket, orphans: list[Orphan]) -> None:
    # Manifests first: a set whose manifest is gone is invisible, so a gc stopped half-way leaves no set that
    # refers to deleted files.
    for orphan in sorted(orphans, key=lambda o: not o.key.startswith(f"{SETS}/manifests/")):
        bucket.delete(orphan.key)
