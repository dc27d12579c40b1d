"""What `litelora status` and `litelora gc` read: every drop the ledger knows, and the orphans in the bucket."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.adapters.adapter_set import AdapterSetError
from pipeline.orchestrator.ledger import Entry, Ledger
from pipeline.registry.lineage import LineageError
from pipeline.registry.orphans import Orphan, delete_orphans, find_orphans
from pipeline.registry.store import Registry


def in_progress(entries: list[Entry]) -> set[str]:
    """Dataset ids a watcher may be working on right now: never orphans, whatever their age."""
    return {e.dataset_id for e in entries if not e.terminal}


def drop_rows(entries: list[Entry]) -> list[dict]:
    """One row per drop in arrival order; a re-drop of finished bytes is a `duplicate` row of its own."""
    rows = []
    for entry in sorted(entries, key=lambda e: e.events[0].at if e.events else 0):
        rows.append(entry.summary())
        rows += [
            {
                "dataset_id": entry.dataset_id,
                "task": d["task"],
                "state": "duplicate",
                "reason": f"same bytes as a drop that ended {entry.state}",
                "version": None,
                "first_seen": d["at"],
                "timings": {},
            }
            for d in entry.duplicates
        ]
    return rows


@dataclass
class Status:
    drops: list[dict]
    orphans: list[Orphan] | None
    """None when MLflow could not be asked (`orphan_error` says why): the ledger alone lives in S3."""
    orphan_error: str = ""
    streams: list[dict] | None = None
    """Each stream's registered model, backbone and `current` (None when MLflow could not be asked)."""


def stream_rows(registry: Registry) -> list[dict]:
    rows = []
    for name in registry.streams.names():
        stream = registry.for_stream(name)
        current = stream.current(reconcile=False)  # a read: never writes
        rows.append(
            {
                "stream": name,
                "registered_model": stream.lineage.name,
                "backbone": stream.backbone,
                "current": current.version if current else None,
            }
        )
    return rows


def orphans_of(registry: Registry, grace_s: float, entries: list[Entry]) -> list[Orphan]:
    """Objects no version refers to and checkpoints of ended drops, older than `grace_s`, sparing the datasets
    of drops still in progress."""
    # A failed drop may be retried, and Ray Train resumes it from its checkpoints: keep them.
    finished = {e.dataset_id for e in entries if e.terminal and e.state != "failed"}
    lineages = [registry.for_stream(stream).lineage for stream in registry.streams.names()]
    return find_orphans(registry.bucket, lineages, grace_s, in_progress(entries), finished)


def read_status(registry: Registry, grace_s: float) -> Status:
    entries = Ledger(registry.bucket).entries()
    try:
        orphans, streams = orphans_of(registry, grace_s, entries), stream_rows(registry)
    except (LineageError, AdapterSetError) as e:  # the ledger alone still says where every drop is
        return Status(drop_rows(entries), None, str(e))
    return Status(drop_rows(entries), orphans, streams=streams)


def collect_garbage(registry: Registry, grace_s: float, dry_run: bool = False) -> list[Orphan]:
    """The orphans older than `grace_s`, deleted unless `dry_run`."""
    orphans = orphans_of(registry, grace_s, Ledger(registry.bucket).entries())
    if not dry_run:
        delete_orphans(registry.bucket, orphans)
    return orphans
