"""Lineage in MLflow, and the one place that writes to MLflow: versions, the alias, training runs.

One registered model, a version per adapter set, the alias `current` as the live pointer's mirror: the pointer
itself is a chain of create-once links in the bucket (registry/pointer.py), and a move of the alias in the
MLflow UI is adopted into that chain, so it is a rollback too. MLflow keeps no alias history, so every move is
also recorded as a run of the experiment `litelora-alias-moves` (append-only, visible in the UI). Training runs are written through the client (`TrainingRun`), never through
MLflow's process-wide active run. See docs/architecture.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from pipeline.settings import Connection

ALIAS = "current"
CURRENT_LINK_TAG = "current_link"
NO_PARENT = "none"
"""The `parent_version` tag of a lineage's first set."""
NODE_TAGS = (
    "task",
    "decision",
    "active_adapters",
    "avg_accuracy",
    "forgetting",
    "dataset_id",
    "promotion",
    "rejected_reason",
)
from pipeline.errors import UserError

MOVES_EXPERIMENT = "litelora-alias-moves"
TRAINING_EXPERIMENT = "litelora-training"


class LineageError(RuntimeError, UserError):
    """MLflow is unreachable, or a version does not exist; the message says which."""


def parse_version(text: str) -> str:
    """A version as users write it ("3", "v3", "V3") → "3"; anything else is refused."""
    version = text.strip().lstrip("vV")
    if not re.fullmatch(r"[0-9]+", version):
        raise LineageError(f"{text!r} is not a version: give a number such as 3 or v3")
    return version


def parent_tag(version: str | None) -> str:
    """The `parent_version` tag of a set trained on `version` (NO_PARENT on the bare backbone)."""
    return version or NO_PARENT


def version_label(version: str | None, none: str = "the bare backbone") -> str:
    """How messages name a version: "v3", or `none` where there is none."""
    return f"v{version}" if version else none


def parent_of(tags: dict) -> str | None:
    """The parent version a version's tags name (None for a lineage's first set)."""
    parent = tags.get("parent_version")
    return None if parent in (None, NO_PARENT) else parent


def flatten(value, prefix: str = "") -> dict:
    """Nested dicts as MLflow params: {"gate": {"sparsity": 0.5}} → {"gate.sparsity": 0.5}."""
    if not isinstance(value, dict):
        return {prefix: value}
    out = {}
    for key, item in value.items():
        out |= flatten(item, f"{prefix}.{key}" if prefix else key)
    return out


METRIC_KEY_LENGTH = 250
"""MLflow's longest metric key."""


def metric_key(name: str) -> str:
    """`name` as a metric key MLflow accepts on every platform: characters other than letters, digits,
    `_ - . /` and spaces, and path segments that are empty, `.` or `..`, become `_`. Class names are user data, so
    a name that had to change (or be cut to MLflow's length) ends in a hash of the original: two names never
    share a key."""
    segments = [re.sub(r"[^\w.\- ]", "_", segment) for segment in name.split("/")]
    key = "/".join(segment if segment.strip(". ") else "_" for segment in segments)
    if key == name and len(key) <= METRIC_KEY_LENGTH:
        return key
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{key[: METRIC_KEY_LENGTH - 9].rstrip('/')}-{digest}"


class TrainingRun:
    """One MLflow run, written through the client."""

    def __init__(self, client: MlflowClient, run_id: str):
        self.client, self.run_id = client, run_id

    def log_params(self, params: dict) -> None:
        items = [Param(k, str(v)) for k, v in flatten(params).items()]
        for start in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(self.run_id, params=items[start : start + 100])

    def log_metrics(self, metrics: dict, step: int = 0) -> None:
        now = int(time.time() * 1000)
        items = [Metric(metric_key(k), float(v), now, step) for k, v in metrics.items()]
        for start in range(0, len(items), 1000):  # MLflow takes at most 1000 metrics a batch
            self.client.log_batch(self.run_id, metrics=items[start : start + 1000])

    def log_metric(self, key: str, value: float, step: int = 0) -> None:
        self.client.log_metric(self.run_id, key, value, step=step)

    def set_tags(self, tags: dict) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, str(value))

    def log_dict(self, data: dict, path: str) -> None:
        self.client.log_dict(self.run_id, data, path)

    def log_artifacts(self, directory: str, path: str) -> None:
        self.client.log_artifacts(self.run_id, directory, path)

    def log_dataset(self, name: str, digest: str, source: str, schema: dict, rows: int) -> None:
        """Link the run to the dataset that trained it, from its metadata (the rows are never loaded for this)."""
        dataset = Dataset(
            name=name,
            digest=digest[:36],
            source_type="s3",
            source=json.dumps({"uri": source}),
            schema=json.dumps(schema),
            profile=json.dumps({"num_rows": rows}),
        )
        self.client.log_inputs(
            self.run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])]
        )

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


@dataclass
class AliasMove:
    from_version: str | None
    to_version: str
    who: str
    when: float
    reason: str
    kind: str  # "promote" | "rollback" | "adopt" | "mlflow-ui"


def move_tags(move: AliasMove) -> dict[str, str]:
    """An alias move as the tags of its audit run (MLflow tags are non-empty strings)."""
    return {
        "kind": move.kind,
        "from_version": parent_tag(move.from_version),
        "to_version": move.to_version,
        "who": move.who,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(move.when)),
        "reason": move.reason or "-",
    }


def move_row(tags: dict[str, str]) -> dict:
    """An audit run's tags read back: `from_version` None for a lineage's first move, `reason` "" for none."""
    row = {k: tags.get(k) for k in ("kind", "from_version", "to_version", "who", "when", "reason")}
    row["from_version"] = None if row["from_version"] in (None, NO_PARENT) else row["from_version"]
    row["reason"] = "" if row["reason"] in (None, "-") else row["reason"]
    return row


def _missing(err: MlflowException) -> bool:
    return err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


class Lineage:
    def __init__(self, conn: Connection):
        self.conn = conn
        self.uri = conn.mlflow_uri
        conn.export_mlflow_login()  # in a Ray worker, the connection is all that came from the driver
        self.client = MlflowClient(tracking_uri=conn.mlflow_uri, registry_uri=conn.mlflow_uri)
        self.name = conn.registered_model

    def for_model(self, name: str) -> Lineage:
        """The lineage of another registered model on the same server (another stream's)."""
        return self if name == self.name else Lineage(replace(self.conn, registered_model=name))

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MlflowException as err:
            if _missing(err):
                raise
            raise LineageError(f"MLflow at {self.uri}: cannot {what}: {err.message.splitlines()[0]}") from err
        except OSError as err:  # connection refused / reset below requests
            raise LineageError(f"MLflow at {self.uri} is unreachable ({what}): {err}") from err

    def ensure_model(self) -> None:
        try:
            self._call("read the registered model", self.client.get_registered_model, self.name)
        except MlflowException:
            self._call(
                "create the registered model",
                self.client.create_registered_model,
                self.name,
                description="LiteLoRA adapter sets: each version is one set; alias `current` is the live one.",
            )

    def current(self) -> ModelVersion | None:
        try:
            return self._call("read alias current", self.client.get_model_version_by_alias, self.name, ALIAS)
        except MlflowException:
            return None

    def get(self, version: str) -> ModelVersion:
        try:
            return self._call(
                f"read version {version}", self.client.get_model_version, self.name, str(version)
            )
        except MlflowException as err:
            raise LineageError(f"version {version} of {self.name!r} does not exist") from err

    def versions(self) -> list[ModelVersion]:
        try:
            found = self._call("list versions", self.client.search_model_versions, f"name='{self.name}'")
        except MlflowException:
            return []
        return sorted(found, key=lambda v: int(v.version))

    def all_sources(self) -> set[str]:
        """The source of every version of every registered model on this server (what must never be deleted)."""
        sources, token = set(), None
        while True:
            page = self._call(
                "list every model version",
                self.client.search_model_versions,
                max_results=1000,
                page_token=token,
            )
            sources |= {v.source for v in page}
            token = page.token
            if not token:
                return sources

    def running_datasets(self) -> set[str]:
        """Dataset ids of training runs still marked RUNNING (a job in progress, or one killed mid-way)."""
        experiment = self._call(
            "read the training experiment", self.client.get_experiment_by_name, TRAINING_EXPERIMENT
        )
        if experiment is None:
            return set()
        runs = self._call(
            "list running trainings",
            self.client.search_runs,
            [experiment.experiment_id],
            filter_string="attributes.status = 'RUNNING'",
            max_results=10000,
        )
        return {r.data.tags["dataset_id"] for r in runs if "dataset_id" in r.data.tags}

    def nodes(self) -> list[dict]:
        """Every version as a tree node: version, parent (None for a root), its tags and manifest URI."""
        return [
            {
                "version": v.version,
                "parent": parent_of(v.tags),
                **{k: v.tags.get(k) for k in NODE_TAGS},
                "source": v.source,
            }
            for v in self.versions()
        ]

    def find_by_dataset(self, dataset_id: str) -> ModelVersion | None:
        """The version a dataset already produced, if any (a retry must never train it twice)."""
        try:
            found = self._call(
                "search versions",
                self.client.search_model_versions,
                f"name='{self.name}' and tags.dataset_id='{dataset_id}'",
            )
        except MlflowException:
            return None
        return min(found, key=lambda v: int(v.version)) if found else None

    def register(
        self, source: str, run_id: str | None, tags: dict[str, str], description: str = ""
    ) -> ModelVersion:
        self.ensure_model()
        return self._call(
            "create a model version",
            self.client.create_model_version,
            self.name,
            source,
            run_id=run_id,
            tags=tags,
            description=description,
        )

    def tag_version(self, version: str, key: str, value: str) -> None:
        self._call(
            f"tag version {version}", self.client.set_model_version_tag, self.name, version, key, value
        )

    # -- runs ----------------------------------------------------------------------------------------
    def _experiment_id(self, name: str) -> str:
        experiment = self._call(f"read experiment {name}", self.client.get_experiment_by_name, name)
        return (
            experiment.experiment_id
            if experiment
            else self._call(f"create experiment {name}", self.client.create_experiment, name)
        )

    def run(self, run_id: str) -> TrainingRun:
        return TrainingRun(self.client, run_id)

    def new_run(self, name: str, tags: dict[str, str], experiment: str = TRAINING_EXPERIMENT) -> TrainingRun:
        """A run tagged with this lineage's registered model: lineages share the experiments."""
        tags = {"registered_model": self.name, **tags}
        run = self._call(
            "start a run", self.client.create_run, self._experiment_id(experiment), tags=tags, run_name=name
        )
        return TrainingRun(self.client, run.info.run_id)

    @contextlib.contextmanager
    def training_run(
        self, name: str, tags: dict[str, str], run_id: str | None = None
    ) -> Iterator[TrainingRun]:
        """A run of the training experiment (a new one, or `run_id` reopened) that ends FAILED on an error and
        KILLED when interrupted (Ctrl-C, SIGTERM): the error, not a failure to end the run while MLflow is down,
        is what the caller sees."""
        if run_id is None:
            run = self.new_run(name, tags)
        else:
            self._call("reopen a run", self.client.update_run, run_id, status="RUNNING")
            run = self.run(run_id)
            run.set_tags(tags)
        try:
            yield run
        except BaseException as error:
            with contextlib.suppress(Exception):
                run.end("KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
            raise
        run.end()

    def find_run(self, tag: str, value: str, experiment: str = TRAINING_EXPERIMENT) -> str | None:
        """The id of a run of `experiment` tagged `tag` = `value`, if any."""
        runs = self._call(
            "search runs",
            self.client.search_runs,
            [self._experiment_id(experiment)],
            f"tags.{tag} = '{value}'",
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def end_abandoned_runs(self, dataset_id: str, taken_over_by: str) -> list[str]:
        """End as KILLED the training runs of `dataset_id` still RUNNING (an attempt that died), tagged with who
        took over; returns their ids. Their nested runs end with them."""
        runs = self._call(
            "search runs",
            self.client.search_runs,
            [self._experiment_id(TRAINING_EXPERIMENT)],
            f"tags.dataset_id = '{dataset_id}' and tags.registered_model = '{self.name}' "
            "and attributes.status = 'RUNNING'",
        )
        for found in runs:
            run = self.run(found.info.run_id)
            run.set_tags({"taken_over_by": taken_over_by})
            self.end_running_children(found.info.run_id)
            run.end("KILLED")
        return [found.info.run_id for found in runs]

    def end_running_children(
        self, parent_run_id: str, status: str = "KILLED", experiment: str = TRAINING_EXPERIMENT
    ) -> None:
        """End the nested runs of `parent_run_id` still marked RUNNING (their process died)."""
        for run in self._call(
            "search runs",
            self.client.search_runs,
            [self._experiment_id(experiment)],
            f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'",
        ):
            self.run(run.info.run_id).end(status)

    def mirrored_link(self) -> int | None:
        """The link of `current`'s chain (registry/pointer.py) the alias last mirrored; None if none yet."""
        try:
            model = self._call("read the registered model", self.client.get_registered_model, self.name)
        except MlflowException:  # the registered model is gone: nothing mirrored
            return None
        value = (model.tags or {}).get(CURRENT_LINK_TAG)
        return int(value) if value else None

    def mirror_current(self, version: str, link: int) -> None:
        """Point the alias at `version`, as link `link` of the chain says. Only `CurrentPointer` calls this: a
        move made here alone would be a move outside the chain."""
        self._call("move alias current", self.client.set_registered_model_alias, self.name, ALIAS, version)
        self._call(
            "tag the registered model",
            self.client.set_registered_model_tag,
            self.name,
            CURRENT_LINK_TAG,
            str(link),
        )

    def record_move(self, move: AliasMove) -> None:
        """Add a move of `current` to the audit experiment."""
        self.new_run(
            f"{move.kind}: {parent_tag(move.from_version)} → {move.to_version}",
            {"model": self.name, **move_tags(move)},
            experiment=MOVES_EXPERIMENT,
        ).end()

    def moves(self) -> list[dict]:
        """Every recorded move of `current`, oldest first, as `move_row` reads it."""
        experiment = self._call("read alias moves", self.client.get_experiment_by_name, MOVES_EXPERIMENT)
        if experiment is None:
            return []
        runs = self._call(
            "read alias moves",
            self.client.search_runs,
            [experiment.experiment_id],
            filter_string=f"tags.model = '{self.name}'",
            order_by=["attributes.start_time ASC"],
        )
        return [move_row(r.data.tags) for r in runs]
