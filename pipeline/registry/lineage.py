"""Lineage in MLflow: one registered model, a version per adapter set, the alias `current` as the live pointer.

`current` is always read from MLflow, so moving the alias in the MLflow UI is a rollback too. MLflow keeps no
alias history, so every move made through the pipeline is also recorded as a run of the experiment
`litelora-alias-moves` (append-only, visible in the UI).
"""

from __future__ import annotations

import getpass
import time
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from pipeline.settings import Connection

ALIAS = "current"
NODE_TAGS = ("task", "decision", "active_adapters", "avg_accuracy", "forgetting", "dataset_id", "promotion",
             "rejected_reason")
MOVES_EXPERIMENT = "litelora-alias-moves"
TRAINING_EXPERIMENT = "litelora-training"


class LineageError(RuntimeError):
    """MLflow is unreachable, or a version does not exist; the message says which."""


@dataclass
class AliasMove:
    from_version: str | None
    to_version: str
    who: str
    when: float
    reason: str
    kind: str  # "promote" | "rollback"


def _missing(err: MlflowException) -> bool:
    return err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND")


class Lineage:
    def __init__(self, conn: Connection):
        self.uri = conn.mlflow_uri
        self.client = MlflowClient(tracking_uri=conn.mlflow_uri, registry_uri=conn.mlflow_uri)
        self.name = conn.registered_model

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
            self._call("create the registered model", self.client.create_registered_model, self.name,
                       description="LiteLoRA adapter sets: each version is one set; alias `current` is the live one.")

    def current(self) -> ModelVersion | None:
        try:
            return self._call("read alias current", self.client.get_model_version_by_alias, self.name, ALIAS)
        except MlflowException:
            return None

    def get(self, version: str) -> ModelVersion:
        try:
            return self._call(f"read version {version}", self.client.get_model_version, self.name, str(version))
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
            page = self._call("list every model version", self.client.search_model_versions,
                              max_results=1000, page_token=token)
            sources |= {v.source for v in page}
            token = page.token
            if not token:
                return sources

    def running_datasets(self) -> set[str]:
        """Dataset ids of training runs still marked RUNNING (a job in progress, or one killed mid-way)."""
        experiment = self._call("read the training experiment", self.client.get_experiment_by_name,
                                TRAINING_EXPERIMENT)
        if experiment is None:
            return set()
        runs = self._call("list running trainings", self.client.search_runs, [experiment.experiment_id],
                          filter_string="attributes.status = 'RUNNING'", max_results=10000)
        return {r.data.tags["dataset_id"] for r in runs if "dataset_id" in r.data.tags}

    def nodes(self) -> list[dict]:
        """Every version as a tree node: version, parent (None for a root), its tags and manifest URI."""
        out = []
        for v in self.versions():
            parent = v.tags.get("parent_version")
            out.append({"version": v.version, "parent": None if parent in (None, "none") else parent,
                        **{k: v.tags.get(k) for k in NODE_TAGS}, "source": v.source})
        return out

    def find_by_dataset(self, dataset_id: str) -> ModelVersion | None:
        """The version a dataset already produced, if any (a retry must never train it twice)."""
        try:
            found = self._call("search versions", self.client.search_model_versions,
                               f"name='{self.name}' and tags.dataset_id='{dataset_id}'")
        except MlflowException:
            return None
        return min(found, key=lambda v: int(v.version)) if found else None

    def register(self, source: str, run_id: str | None, tags: dict[str, str], description: str = "") -> ModelVersion:
        self.ensure_model()
        return self._call("create a model version", self.client.create_model_version, self.name, source,
                          run_id=run_id, tags=tags, description=description)

    def move_current(self, version: str, reason: str, kind: str) -> AliasMove:
        """Point `current` at `version` and record the move (who, when, from, to, why)."""
        target = self.get(version)
        before = self.current()
        move = AliasMove(before.version if before else None, target.version, getpass.getuser(), time.time(), reason, kind)
        self._call("move alias current", self.client.set_registered_model_alias, self.name, ALIAS, target.version)
        self._record(move)
        return move

    def _record(self, move: AliasMove) -> None:
        experiment = self.client.get_experiment_by_name(MOVES_EXPERIMENT)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(MOVES_EXPERIMENT)
        tags = {"model": self.name, "from_version": move.from_version or "none", "to_version": move.to_version,
                "who": move.who, "reason": move.reason or "-", "kind": move.kind,
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(move.when)),
                "mlflow.runName": f"{move.kind}: {move.from_version or 'none'} → {move.to_version}"}
        run = self.client.create_run(experiment_id, tags=tags)
        self.client.set_terminated(run.info.run_id)

    def moves(self) -> list[dict]:
        experiment = self.client.get_experiment_by_name(MOVES_EXPERIMENT)
        if experiment is None:
            return []
        runs = self.client.search_runs([experiment.experiment_id], filter_string=f"tags.model = '{self.name}'",
                                       order_by=["attributes.start_time ASC"])
        return [{k: r.data.tags.get(k) for k in ("kind", "from_version", "to_version", "who", "when", "reason")}
                for r in runs]
