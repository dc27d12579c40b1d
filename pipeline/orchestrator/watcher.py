"""`litelora watch`: find complete drops under incoming/, claim each once, validate, train, register.

A drop is `incoming/<task>/` holding the contract's files; it is complete when `_READY` exists or nothing
under it changed for the quiet period. A stream's drops are processed one at a time in arrival order, because
task t builds on the set after task t-1; parallelism lives inside a training job. A drop waiting for another
watcher holds back only the later drops of its own stream; run one watcher per stream (`streams`) for streams
that train at the same time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.data.image_folder import IGNORED, is_image_folder
from pipeline.data.stream_names import DEFAULT_STREAM, STREAM_NAME, StreamError
from pipeline.data.task_dataset import (
    TASK_NAME,
    DatasetLimits,
    InvalidDataset,
    TaskDataset,
    check_task_name,
    contract_files,
    dataset_id,
    drop_files,
    is_data_file,
)
from pipeline.learn.methods import accuracy_scope
from pipeline.methods import method_of
from pipeline.orchestrator.ledger import MAX_ATTEMPTS, Entry, Ledger, LostClaim
from pipeline.orchestrator.promotion import SUPERSEDED, promote_if_parent_current
from pipeline.orchestrator.transaction import StepResult, train_on_current
from pipeline.registry.bucket import Bucket, StorageError
from pipeline.registry.lineage import LineageError, parent_of
from pipeline.registry.store import Registry

INCOMING, PROCESSING, QUARANTINE, FAILED = "incoming/", "processing/", "quarantine/", "failed/"
READY = "_READY"
# Never an empty body: SeaweedFS 4.48 answers an empty PUT so that the next request on the same keep-alive
# connection stalls until its read timeout (seen here; AWS S3 and MinIO are fine with empty markers).
READY_BODY = b'{"ready": true}\n'


@dataclass
class WatchConfig:
    quiet_period_s: float = 30.0
    """Without a _READY marker, a drop is complete once nothing under it changed for this long."""
    poll_s: float = 5.0
    lease_s: float = 300.0
    """A claim whose watcher has been silent this long is taken over."""
    heartbeat_s: float = 30.0
    """At most a third of the lease, whatever is asked: a claim must survive one lost heartbeat."""
    max_attempts: int = MAX_ATTEMPTS
    """Attempts whose watcher died (its claim expired mid-drop) before the drop fails as poison."""
    limits: DatasetLimits = field(default_factory=DatasetLimits)
    streams: tuple[str, ...] = ()
    """Only the drops of these streams (empty: every stream)."""

    def __post_init__(self) -> None:
        self.heartbeat_s = min(self.heartbeat_s, self.lease_s / 3)


@dataclass
class Drop:
    task: str
    prefix: str
    objects: list[dict]
    arrived: float
    problems: list[str] = field(default_factory=list)
    sources: list[dict] = field(default_factory=list)
    """For a drop moved into processing/: the objects under incoming/ it was claimed as (key, ETag, time)."""

    @property
    def data_objects(self) -> dict[str, dict]:
        """The drop's data by path inside it: the contract's files, or an image folder's images (and task.json)."""
        inside = {o["Key"][len(self.prefix) :]: o for o in self.objects}
        if is_image_folder(list(inside)):
            return {rel: o for rel, o in inside.items() if rel != READY and not IGNORED.search(rel)}
        return {rel: o for rel, o in inside.items() if is_data_file(rel)}

    def listing_id(self) -> str:
        """An id for a drop that is refused before its bytes are read: its keys, sizes and ETags."""
        digest = hashlib.sha256(
            json.dumps(sorted((o["Key"], o["Size"], o.get("ETag", "")) for o in self.objects)).encode()
        ).hexdigest()
        return f"refused-{digest[:40]}"


def put_drop(bucket: Bucket, task: str, files: dict[str, bytes]) -> str:
    """Drop a dataset as a user does: its files under incoming/<task>/, the `_READY` marker last (so a half-upload
    never looks complete). Returns the drop's prefix."""
    for name, data in files.items():
        bucket.put(f"{INCOMING}{task}/{name}", data)
    bucket.put(f"{INCOMING}{task}/{READY}", READY_BODY)
    return f"{INCOMING}{task}/"


def submit_drop(
    bucket: Bucket, path: Path, task: str, check: bool = True, fields: dict | None = None
) -> tuple[str, list[str]]:
    """`litelora submit`: a local drop folder or parquet file uploaded as a drop, validated first unless `check`
    is off (the watcher validates again and quarantines what is invalid); `fields` (stream, backbone, method) are written
    into its task.json. Returns (prefix, file names)."""
    check_task_name(task)
    files = drop_files(path)
    if fields:
        try:
            info = json.loads(files.get("task.json", b"{}"))
        except ValueError as err:
            raise InvalidDataset(f"{path}: task.json is not valid JSON: {err}") from err
        files["task.json"] = json.dumps({**info, **fields}, indent=2).encode()
    if check:
        try:
            TaskDataset.from_files(task, files)
        except InvalidDataset as e:
            raise InvalidDataset(f"{path}: {e} (use --no-check to upload anyway)") from e
    return put_drop(bucket, task, files), list(files)


def _unsafe(key: str) -> bool:
    parts = key.split("/")
    return (
        any(p in ("", ".", "..") for p in parts[:-1])
        or parts[-1] in (".", "..")
        or "\\" in key
        or len(key) > 1024
    )


def detect(bucket: Bucket, config: WatchConfig, now: float | None = None) -> list[Drop]:
    """Complete drops under incoming/ and claimed ones under processing/, oldest first."""
    now = time.time() if now is None else now
    claimed = claimed_drops(bucket)
    taken = {(s["key"], s["etag"]) for drop in claimed for s in drop.sources}
    groups: dict[str, list[dict]] = {}
    for obj in bucket.list_objects(INCOMING):
        if (obj["Key"], obj.get("ETag", "")) in taken:
            continue  # left behind by a move into processing/ that a watcher did not finish: its claim's
        task = obj["Key"][len(INCOMING) :].split("/", 1)[0]
        groups.setdefault(task, []).append(obj)
    drops: list[Drop] = claimed
    for task, objects in groups.items():
        newest = max(o["LastModified"].timestamp() for o in objects)
        marker = [o for o in objects if o["Key"] == f"{INCOMING}{task}/{READY}"]
        if not marker and now - newest < config.quiet_period_s:
            continue  # still uploading, or waiting for the quiet period
        drop = Drop(
            task, f"{INCOMING}{task}/", objects, marker[0]["LastModified"].timestamp() if marker else newest
        )
        if not TASK_NAME.match(task):
            drop.problems.append(f"task name {task!r} must be 1-100 letters, digits, '.', '_' or '-'")
        drop.problems += [
            f"object key {o['Key']!r} escapes the drop's prefix" for o in objects if _unsafe(o["Key"])
        ]
        size = sum(o["Size"] for o in drop.data_objects.values())
        if size > config.limits.max_bytes:  # refused from the listing: an oversized drop is never downloaded
            drop.problems.append(f"drop is {size:,} bytes, over the {config.limits.max_bytes:,}-byte limit")
        drops.append(drop)
    return sorted(drops, key=lambda d: (d.arrived, d.task))


def claimed_drops(bucket: Bucket) -> list[Drop]:
    """Drops a watcher claimed and moved to processing/<dataset-id>/, each with the record of where they came
    from (processing/<dataset-id>.json, written before anything moved). What a watcher that died mid-drop left."""
    groups: dict[str, list[dict]] = {}
    records = {}
    for obj in bucket.list_objects(PROCESSING):
        name, _, rest = obj["Key"][len(PROCESSING) :].partition("/")
        if rest:
            groups.setdefault(name, []).append(obj)
        elif name.endswith(".json"):
            records[name.removesuffix(".json")] = obj["Key"]
    drops = []
    for ds_id, key in records.items():
        try:
            record = json.loads(bucket.get(key))
        except FileNotFoundError:
            continue  # finished meanwhile
        prefix = f"{PROCESSING}{ds_id}/"
        drops.append(
            Drop(record["task"], prefix, groups.get(ds_id, []), record["arrived"], [], record["sources"])
        )
    return drops


Trainer = Callable[[TaskDataset, Registry], StepResult]
"""Trains a validated drop on its stream's registry."""
TASK_JSON_PEEK = 64 * 1024
"""A task.json larger than this is not read to find its stream (validation refuses it later)."""


def kept_of(result: StepResult) -> str:
    """What a new set keeps, in words: its kept adapters, or Share's one basis for every task."""
    if method_of(result.method).selects_by_task:
        return "one basis for every task"
    return f"{result.active_adapters} adapter(s) kept"


def orchestration_overhead(timings: dict, total_s: float) -> dict:
    """What the orchestrator adds around the work itself (training compute, evaluation, a search), per drop.

    The stages run one after another, so the time to training start is the total minus what follows it."""
    after_start = sum(timings.get(k, 0.0) for k in ("compute_s", "ray_finish_s", "evaluate_s", "register_s"))
    return {
        "total_s": total_s,
        "to_training_start_s": total_s - after_start,
        "overhead_s": total_s - sum(timings.get(k, 0.0) for k in ("compute_s", "evaluate_s", "tune_s")),
    }


class Watcher:
    def __init__(
        self,
        registry: Registry,
        config: WatchConfig | None = None,
        trainer: Trainer | None = None,
        log: Callable[[str], None] = print,
    ):
        self.config = config or WatchConfig()
        self.registry, self.bucket = registry, registry.bucket
        self.ledger = Ledger(self.bucket, lease_s=self.config.lease_s, max_attempts=self.config.max_attempts)
        self.trainer = trainer or train_on_current
        self.log = log
        self._held_logged: tuple[str, int] | None = None
        self._stream_of: dict[tuple, str] = {}

    def run(self, once: bool = False, stop: Callable[[], bool] = lambda: False) -> list[dict]:
        """Process drops until stopped (or, with `once`, until none is left). Returns what was processed.

        A long-running watcher outlives S3 or MLflow outages: it says so and looks again at the next poll (a drop
        it was working on is resumed then). With `once` the outage is the caller's error."""
        done = []
        while not stop():
            try:
                waiting: set[str] = set()
                for drop in detect(self.bucket, self.config):
                    stream = self.stream_of(drop)
                    if stream in waiting or (self.config.streams and stream not in self.config.streams):
                        continue
                    outcome = self.process(drop)
                    # None: another watcher holds it, and its stream's later drops wait for it (arrival order).
                    if outcome is None:
                        waiting.add(stream)
                        continue
                    done.append(outcome)
            except (StorageError, LineageError) as outage:
                if once:
                    raise
                self.log(f"{outage}; looking again in {self.config.poll_s:.0f} s")
            if once:
                return done
            time.sleep(self.config.poll_s)
        return done

    def stream_of(self, drop: Drop) -> str:
        """The stream a drop names in its task.json (`default` without one, or when it cannot be read: validation
        then quarantines the drop with the reason)."""
        task_json = drop.data_objects.get("task.json")
        if drop.problems or task_json is None or task_json["Size"] > TASK_JSON_PEEK:
            return DEFAULT_STREAM
        seen = (task_json["Key"], task_json.get("ETag", ""), task_json["Size"])
        if (
            seen not in self._stream_of
        ):  # a drop waiting for its turn is looked at on every poll: read it once
            try:
                stream = json.loads(self.bucket.get(task_json["Key"])).get("stream", DEFAULT_STREAM)
            except (FileNotFoundError, ValueError, AttributeError):
                stream = DEFAULT_STREAM
            valid = isinstance(stream, str) and STREAM_NAME.match(stream)
            self._stream_of[seen] = stream if valid else DEFAULT_STREAM
        return self._stream_of[seen]

    def _quarantine(self, drop: Drop, stamp: str, reason: str) -> None:
        target = f"{QUARANTINE}{drop.task if TASK_NAME.match(drop.task) else 'invalid-task-name'}/{stamp}/"
        for obj in drop.objects:
            self.bucket.move(obj["Key"], target + obj["Key"][len(drop.prefix) :].replace("/", "_"))
        if drop.prefix.startswith(PROCESSING):
            self.bucket.delete(drop.prefix.rstrip("/") + ".json")
        self.bucket.put(
            target + "reason.json",
            json.dumps(
                {"task": drop.task, "reason": reason, "at": time.time(), "from": drop.prefix}, indent=2
            ).encode(),
        )

    def _refuse(self, drop: Drop, entry: Entry, reason: str, timings: dict) -> dict:
        """Quarantine a drop whose content cannot be trained, with the reason, and record it."""
        self._quarantine(drop, entry.dataset_id[:16], reason)
        self.ledger.record(entry, "quarantined", task=drop.task, reason=reason, timings=timings)
        self.log(f"{drop.task}: quarantined: {reason}")
        return {"task": drop.task, "dataset_id": entry.dataset_id, "state": "quarantined", "reason": reason}

    def _clear(self, drop: Drop, to: str | None = None) -> None:
        for obj in drop.objects:
            if to:
                self.bucket.move(obj["Key"], to + obj["Key"][len(drop.prefix) :])
            elif drop.prefix.startswith(PROCESSING):
                self.bucket.delete(obj["Key"])
            else:  # a drop refused before it was claimed: a newer upload under its keys stays
                self.bucket.delete_if_unchanged(
                    obj["Key"], obj.get("ETag", ""), obj["LastModified"].timestamp()
                )
        if drop.prefix.startswith(PROCESSING):
            self.bucket.delete(drop.prefix.rstrip("/") + ".json")

    def _take(self, drop: Drop, ds_id: str) -> Drop:
        """Move a claimed drop out of incoming/ into processing/<dataset-id>/, so that files uploaded under its
        task name meanwhile are a drop of their own, never deleted with it. The record of its sources is written
        first; only the objects still as they were listed are deleted from incoming/. A watcher that takes the
        drop over finishes an interrupted move the same way."""
        target = f"{PROCESSING}{ds_id}/"
        if drop.prefix != target:
            drop.sources = [
                {"key": o["Key"], "etag": o.get("ETag", ""), "modified": o["LastModified"].timestamp()}
                for o in drop.objects
            ]
            record = {
                "task": drop.task,
                "arrived": drop.arrived,
                "from": drop.prefix,
                "sources": drop.sources,
            }
            self.bucket.put(target.rstrip("/") + ".json", json.dumps(record).encode())
        for source in drop.sources:
            copy = target + source["key"].split("/", 2)[2]  # incoming/<task>/<path inside the drop>
            if not self.bucket.exists(copy):
                self.bucket.copy(source["key"], copy)
        for source in drop.sources:
            self.bucket.delete_if_unchanged(source["key"], source["etag"], source["modified"])
        return Drop(drop.task, target, self.bucket.list_objects(target), drop.arrived, [], drop.sources)

    def _read(self, drop: Drop) -> tuple[dict[str, bytes], str] | None:
        """A drop's contract files and dataset id (None if it was cleared since it was listed). A drop refused on
        its keys or sizes alone is never downloaded: its id comes from its listing."""
        if drop.problems:
            return {}, drop.listing_id()
        try:
            files = {name: self.bucket.get(o["Key"]) for name, o in drop.data_objects.items()}
        except FileNotFoundError:  # cleared since it was listed (another watcher finished it): look again
            return None
        try:
            files = contract_files(files)  # an image folder becomes its parquet files: one id everywhere
        except InvalidDataset as bad:
            drop.problems.append(str(bad))
            files = {}
        return files, dataset_id(files) if files else drop.listing_id()

    def process(self, drop: Drop) -> dict | None:
        detected = time.time()
        if drop.prefix.startswith(PROCESSING):  # claimed before: its id is its folder; read once it is whole
            files, ds_id = None, drop.prefix[len(PROCESSING) :].rstrip("/")
        elif (read := self._read(drop)) is None:
            return None
        else:
            files, ds_id = read
        entry = self.ledger.read(ds_id)
        if entry.terminal and drop.prefix.startswith(PROCESSING):
            if time.time() - entry.last_activity() >= self.ledger.lease_s:
                self._clear(drop)  # its watcher finished it and died before clearing it
            return None
        if (
            entry.terminal
            and entry.claims
            and drop.task == entry.task
            and drop.arrived <= entry.claims[0]["at"]
            and time.time() - entry.last_activity() < self.ledger.lease_s
        ):
            # The very drop another watcher just finished and is clearing: not a re-drop. Past the lease (its
            # watcher died before clearing) it falls through and is cleared as a duplicate.
            return None
        if entry.terminal:  # the same bytes again: nothing to train
            first = self.ledger.record_duplicate(ds_id, drop.task, drop.prefix, drop.arrived)
            self._clear(drop)
            if not first:
                return None  # another watcher is dealing with this very drop
            self.log(f"{drop.task}: duplicate of dataset {ds_id[:12]} ({entry.state}); nothing trained")
            return {"task": drop.task, "dataset_id": ds_id, "state": "duplicate"}
        claimed = None
        try:
            claimed = self.ledger.claim(ds_id, drop.task)
            if claimed is None:
                self._log_held(drop, ds_id)
                return None
            if claimed.terminal:  # poison: the attempts before this one all died
                return self._give_up(drop, claimed)
            if not drop.problems:
                drop = self._take(drop, ds_id)
            if files is None and (read := self._read(drop)) is not None:
                files, _ = read
            return self._work(drop, files or {}, claimed, {"detection_latency_s": detected - drop.arrived})
        except LostClaim as lost:
            self.log(f"{drop.task}: {lost}")
            return None
        except KeyboardInterrupt:
            if claimed is not None:
                self._hand_back(claimed, drop.task)
            raise

    def _give_up(
        self, drop: Drop, entry: Entry, reason: str | None = None, timings: dict | None = None
    ) -> dict:
        """Move a failed drop's files to failed/ (where `litelora retry` finds them) and say so; the ledger gets the
        failure with `timings`, or already holds it (a poison drop's claim recorded it)."""
        reason = reason or entry.events[-1].reason
        self._clear(drop, to=f"{FAILED}{drop.task}/{entry.dataset_id[:16]}/")
        if timings is not None:
            self.ledger.record(entry, "failed", task=drop.task, reason=reason, timings=timings)
        self.log(f"{drop.task}: failed: {reason}")
        return {"task": drop.task, "dataset_id": entry.dataset_id, "state": "failed", "reason": reason}

    def _hand_back(self, entry: Entry, task: str) -> None:
        """Stopped mid-drop (Ctrl-C, SIGTERM): release the claim so another watcher takes the drop at once
        instead of waiting out the lease. Its files are still under incoming/."""
        with contextlib.suppress(StorageError, LostClaim):
            fresh = self.ledger.read(entry.dataset_id)
            ours = (
                fresh.claims
                and fresh.claims[-1]["watcher"] == self.ledger.watcher
                and fresh.epoch == entry.epoch
            )
            if fresh.terminal or not ours:  # finished, or already someone else's: nothing to hand back
                return
            entry.events = fresh.events
            self.ledger.record(
                entry, "pending", task=task, reason=f"handed back by {self.ledger.watcher} (stopped)"
            )
            self.log(f"{task}: handed back; the next watcher takes it at once")

    def _log_held(self, drop: Drop, ds_id: str) -> None:
        """Say who holds a drop, once per holder: a watcher that died keeps it until its lease runs out."""
        entry = self.ledger.read(ds_id)
        if entry.claims and self._held_logged != (ds_id, entry.epoch):
            self._held_logged = (ds_id, entry.epoch)
            idle = time.time() - entry.last_activity()
            self.log(
                f"{drop.task}: held by {entry.claims[-1]['watcher']}, last active {idle:.0f} s ago; waiting "
                f"(a holder silent for {self.ledger.lease_s:.0f} s is taken over)"
            )

    def _work(self, drop: Drop, files: dict[str, bytes], entry: Entry, timings: dict) -> dict:
        task = drop.task
        self.ledger.record(entry, "validating", task=task)
        clock = time.perf_counter()
        try:
            dataset, registry = self._validate(drop, files)
        except (InvalidDataset, StreamError) as bad:
            return self._refuse(drop, entry, str(bad), timings)
        timings["validation_s"] = time.perf_counter() - clock
        if entry.epoch > 0:
            self._end_abandoned_runs(registry, entry, task)

        existing = registry.lineage.find_by_dataset(entry.dataset_id)
        if existing is not None:  # an earlier attempt registered it, then died before the ledger said so
            return self._finish_earlier_attempt(drop, entry, existing, registry, timings)

        self.ledger.record(entry, "training", task=task)
        self.log(
            f"{task}: valid ({dataset.train.num_rows} training rows); training on the current adapter set…"
        )
        with self._heartbeats(entry, task):
            try:
                result = self.trainer(dataset, registry)
            except InvalidDataset as bad:  # valid alone, not for this stream (its inputs, its known classes)
                return self._refuse(drop, entry, str(bad), timings)
            except Exception as error:  # noqa: BLE001 - any failure ends in `failed`, with the reason, and the watcher goes on
                return self._fail(drop, entry, error, timings)
        return self._record_trained(drop, entry, result, timings)

    def _validate(self, drop: Drop, files: dict[str, bytes]) -> tuple[TaskDataset, Registry]:
        """The drop's dataset and its stream's registry, the stream admitted; `InvalidDataset` or `StreamError`
        say why not."""
        if drop.problems:
            raise InvalidDataset("; ".join(drop.problems))
        dataset = TaskDataset.from_files(drop.task, files, self.config.limits)
        registry = self.registry.for_stream(dataset.stream)
        registry.streams.admit(dataset.stream, dataset.backbone, dataset.input_column == "image")
        return dataset, registry

    def _end_abandoned_runs(self, registry: Registry, entry: Entry, task: str) -> None:
        """An earlier attempt died (or was handed back): its MLflow run must not stay RUNNING."""
        ended = registry.lineage.end_abandoned_runs(entry.dataset_id, taken_over_by=self.ledger.watcher)
        if ended:
            self.log(f"{task}: ended the earlier attempt's run {', '.join(ended)} as KILLED")

    @contextlib.contextmanager
    def _heartbeats(self, entry: Entry, task: str) -> Iterator[None]:
        """Keep the claim alive for as long as training takes, whatever runs it (this process or Ray Train)."""
        done = threading.Event()

        def heartbeat() -> None:
            while not done.wait(self.config.heartbeat_s):
                try:
                    self.ledger.heartbeat(entry)
                except StorageError as outage:  # the next beat may get through; the lease allows missing some
                    self.log(f"{task}: heartbeat not written: {outage}")

        beats = threading.Thread(target=heartbeat, name=f"heartbeat-{task}", daemon=True)
        beats.start()
        try:
            yield
        finally:
            done.set()
            beats.join()

    def _fail(self, drop: Drop, entry: Entry, error: Exception, timings: dict) -> dict:
        return self._give_up(drop, entry, f"{type(error).__name__}: {error}", timings)

    def _record_trained(self, drop: Drop, entry: Entry, result: StepResult, timings: dict) -> dict:
        """Ledger, bucket and log after a training that ran to its end: registered, or rejected by the guard."""
        task = drop.task
        timings.update(result.timings)
        timings |= orchestration_overhead(timings, total_s=time.time() - drop.arrived)
        self.ledger.record(entry, "evaluating", task=task, timings=timings)
        state = "registered" if not result.rejected_reason else "rejected"
        self.ledger.record(
            entry, state, task=task, version=result.version, reason=result.rejected_reason, timings=timings
        )
        self._clear(drop)
        self.log(
            f"{task}: {state} as v{result.version} ({result.decision}, {kept_of(result)}, "
            f"accuracy {100 * result.final_accuracy:.1f}% {accuracy_scope(result.method)}, frozen encoder with the same head "
            f"{100 * result.frozen_final_accuracy:.1f}%; {timings.get('compute_s', 0):.0f} s training, "
            f"{timings['overhead_s']:.0f} s overhead)"
            + (f": {result.rejected_reason}" if result.rejected_reason else "")
        )
        return {
            "task": task,
            "dataset_id": entry.dataset_id,
            "state": state,
            "version": result.version,
            "final_accuracy": result.final_accuracy,
            "frozen_final_accuracy": result.frozen_final_accuracy,
            "avg_accuracy": result.avg_accuracy,
            "frozen_avg_accuracy": result.frozen_avg_accuracy,
        }

    def _finish_earlier_attempt(
        self, drop: Drop, entry: Entry, version, registry: Registry, timings: dict
    ) -> dict:
        """Complete what a dead attempt left: its version exists; `current` moves to it if the attempt died
        before its commit point and the version's parent is still current."""
        tags = version.tags
        state, reason = (
            ("rejected", tags.get("rejected_reason", ""))
            if tags.get("promotion") == "rejected"
            else ("registered", "registered by an earlier attempt")
        )
        if state == "registered" and SUPERSEDED not in tags and "not_promoted" not in tags:  # (older name)
            parent = parent_of(tags)
            if registry.pointer.version() != version.version:
                moved = promote_if_parent_current(
                    registry,
                    version.version,
                    parent,
                    reason=f"trained {drop.task} (promotion resumed after a crash)",
                )
                reason += "; promoted now" if moved else "; not promoted: current moved on since"
        self.ledger.record(
            entry, state, task=drop.task, version=version.version, reason=reason, timings=timings
        )
        self._clear(drop)
        self.log(f"{drop.task}: {reason} (v{version.version})")
        return {"task": drop.task, "dataset_id": entry.dataset_id, "state": state, "version": version.version}
