"""In-memory stand-ins for the bucket and for MLflow, behind the same methods as `Bucket` and `Lineage`.

They keep the semantics the orchestration relies on (create-once puts, lexicographic listings with modification
times, one `current` alias, versions numbered from 1, runs with tags and metrics), so the watcher, ledger,
transaction, rollback, guard, gc and requeue logic run in unit tests in seconds. What only the real servers can
show (conditional writes under real contention, outages, the UI's view) stays in tests/integration.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pipeline.registry.lineage import AliasMove, LineageError, move_row, move_tags, parent_of


class MemoryBucket:
    def __init__(self, name: str = "fake-bucket"):
        self.name = name
        self.objects: dict[str, tuple[bytes, float]] = {}
        self.clock = time.time
        """What "now" is for new objects' LastModified (tests age objects by replacing it)."""
        self._lock = threading.Lock()

    def uri(self, key: str) -> str:
        return f"s3://{self.name}/{key}"

    def put_if_absent(self, key: str, data: bytes) -> bool:
        with self._lock:
            if key in self.objects:
                return False
            self.objects[key] = (bytes(data), self.clock())
            return True

    def put_immutable(self, key: str, data: bytes) -> None:
        with self._lock:
            self.objects[key] = (bytes(data), self.clock())  # same bytes; a refresh renews its age

    def put(self, key: str, data: bytes) -> None:
        with self._lock:
            self.objects[key] = (bytes(data), self.clock())

    def get(self, key: str) -> bytes:
        with self._lock:
            if key not in self.objects:
                raise FileNotFoundError(self.uri(key))
            return self.objects[key][0]

    def exists(self, key: str) -> bool:
        return key in self.objects

    def list(self, prefix: str) -> list[str]:
        return [o["Key"] for o in self.list_objects(prefix)]

    def list_objects(self, prefix: str) -> list[dict]:
        with self._lock:  # S3 lists keys in lexicographic order
            return [
                {
                    "Key": k,
                    "Size": len(data),
                    "ETag": str(hash(data)),
                    "LastModified": datetime.fromtimestamp(at, tz=timezone.utc),
                }
                for k, (data, at) in sorted(self.objects.items())
                if k.startswith(prefix)
            ]

    def copy(self, source: str, target: str) -> None:
        with self._lock:
            if source not in self.objects:
                raise FileNotFoundError(self.uri(source))
            self.objects[target] = (self.objects[source][0], self.clock())

    def delete_if_unchanged(self, key: str, etag: str, modified: float) -> bool:
        with self._lock:
            data, at = self.objects.get(key, (None, None))
            if data is None or str(hash(data)) != etag or abs(at - modified) >= 1.0:
                return False
            del self.objects[key]
            return True

    def move(self, source: str, target: str) -> None:
        with self._lock:
            if source not in self.objects:
                raise FileNotFoundError(self.uri(source))
            self.objects[target] = self.objects.pop(source)

    def delete(self, key: str) -> None:
        with self._lock:
            self.objects.pop(key, None)


@dataclass
class FakeVersion:
    version: str
    source: str
    run_id: str | None
    tags: dict[str, str]
    description: str = ""


@dataclass
class FakeRun:
    run_id: str
    name: str
    experiment: str
    tags: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    artifacts: dict = field(default_factory=dict)
    datasets: list = field(default_factory=list)
    status: str = "RUNNING"

    def log_params(self, params: dict) -> None:
        self.params |= params

    def log_metrics(self, metrics: dict, step: int = 0) -> None:
        self.metrics |= metrics

    def log_metric(self, key: str, value: float, step: int = 0) -> None:
        self.metrics.setdefault(f"{key}@history", []).append((step, value))
        self.metrics[key] = value

    def set_tags(self, tags: dict) -> None:
        self.tags |= {k: str(v) for k, v in tags.items()}

    def log_dict(self, data: dict, path: str) -> None:
        self.artifacts[path] = data

    def log_artifacts(self, directory: str, path: str) -> None:
        from pathlib import Path

        self.artifacts |= {
            f"{path}/{p.relative_to(directory)}": p.stat().st_size
            for p in Path(directory).rglob("*")
            if p.is_file()
        }

    def log_dataset(self, name: str, digest: str, source: str, schema: dict, rows: int) -> None:
        self.datasets.append(
            {"name": name, "digest": digest, "source": source, "schema": schema, "rows": rows}
        )

    def end(self, status: str = "FINISHED") -> None:
        self.status = status


class MemoryLineage:
    def __init__(self, name: str = "fake-model"):
        self.name = name
        self.version_list: list[FakeVersion] = []
        self.alias: str | None = None
        """The alias as MLflow holds it; tests move it directly to play a move made in the MLflow UI."""
        self.link: int | None = None
        self.alias_moves: list[dict] = []
        self.runs: dict[str, FakeRun] = {}
        self._lock = threading.RLock()
        self._siblings: dict[str, MemoryLineage] = {name: self}

    def for_model(self, name: str) -> MemoryLineage:
        """Another registered model on the same fake server: the same object for the same name."""
        with self._lock:
            if name not in self._siblings:
                self._siblings[name] = MemoryLineage(name)
                self._siblings[name]._siblings = self._siblings
            return self._siblings[name]

    # -- versions and the alias ------------------------------------------------------------------------
    def current(self) -> FakeVersion | None:
        return self.get(self.alias) if self.alias else None

    def get(self, version: str) -> FakeVersion:
        found = [v for v in self.version_list if v.version == str(version)]
        if not found:
            raise LineageError(f"version {version} of {self.name!r} does not exist")
        return found[0]

    def versions(self) -> list[FakeVersion]:
        return list(self.version_list)

    def all_sources(self) -> set[str]:
        return {v.source for v in self.version_list}

    def running_datasets(self) -> set[str]:
        return {
            r.tags["dataset_id"]
            for r in self.runs.values()
            if r.status == "RUNNING" and "dataset_id" in r.tags
        }

    def nodes(self) -> list[dict]:
        return [
            {"version": v.version, "parent": parent_of(v.tags), **v.tags, "source": v.source}
            for v in self.version_list
        ]

    def find_by_dataset(self, dataset_id: str) -> FakeVersion | None:
        return next((v for v in self.version_list if v.tags.get("dataset_id") == dataset_id), None)

    def register(
        self, source: str, run_id: str | None, tags: dict[str, str], description: str = ""
    ) -> FakeVersion:
        with self._lock:
            version = FakeVersion(str(len(self.version_list) + 1), source, run_id, dict(tags), description)
            self.version_list.append(version)
            return version

    def tag_version(self, version: str, key: str, value: str) -> None:
        self.get(version).tags[key] = value

    def mirrored_link(self) -> int | None:
        return self.link

    def mirror_current(self, version: str, link: int) -> None:
        with self._lock:
            self.get(version)
            self.alias, self.link = version, link

    def record_move(self, move: AliasMove) -> None:
        self.alias_moves.append(move_row(move_tags(move)))

    def moves(self) -> list[dict]:
        return list(self.alias_moves)

    # -- runs ----------------------------------------------------------------------------------------
    def run(self, run_id: str) -> FakeRun:
        return self.runs[run_id]

    def new_run(self, name: str, tags: dict[str, str], experiment: str = "litelora-training") -> FakeRun:
        with self._lock:
            run = FakeRun(uuid.uuid4().hex, name, experiment, {"registered_model": self.name, **tags})
            self.runs[run.run_id] = run
            return run

    @contextlib.contextmanager
    def training_run(self, name: str, tags: dict[str, str], run_id: str | None = None):
        run = self.new_run(name, tags) if run_id is None else self.runs[run_id]
        run.status = "RUNNING"
        run.set_tags(tags)
        try:
            yield run
        except BaseException as error:
            run.end("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
            raise
        run.end()

    def find_run(self, tag: str, value: str, experiment: str = "litelora-training") -> str | None:
        return next((r.run_id for r in self.runs.values() if r.tags.get(tag) == value), None)

    def end_abandoned_runs(self, dataset_id: str, taken_over_by: str) -> list[str]:
        ended = [
            r for r in self.runs.values() if r.status == "RUNNING" and r.tags.get("dataset_id") == dataset_id
        ]
        for run in ended:
            run.set_tags({"taken_over_by": taken_over_by})
            self.end_running_children(run.run_id)
            run.end("KILLED")
        return [r.run_id for r in ended]

    def end_running_children(self, parent_run_id: str, status: str = "KILLED", experiment: str = "") -> None:
        for run in self.runs.values():
            if run.tags.get("mlflow.parentRunId") == parent_run_id and run.status == "RUNNING":
                run.end(status)
