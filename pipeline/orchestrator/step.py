"""One continual-learning step against the registry: the set under `current` + a task → a new version.

    fetch `current` → train the task (core recipe) → evaluate every task so far → publish the set (files, then
    manifest) → register an MLflow version with lineage tags → move `current` (the commit point; only if the
    parent is still `current`)

A crash before the last step leaves `current` on the last complete set.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import mlflow

from pipeline.adapters.adapter_set import read_manifest
from pipeline.data.task_dataset import TaskDataset
from pipeline.learn.config import TrainConfig
from pipeline.learn.evaluate import StageScores, evaluate_stage
from pipeline.learn.frozen import FeatureCache, frozen_reference
from pipeline.learn.metrics import AccuracyMatrix
from pipeline.learn.model import ContinualModel
from pipeline.learn.recipe import EpochCallback, train_task
from pipeline.learn.subspace import mean_overlap, overlap_matrices
from pipeline.learn.task import Task
from pipeline.registry import plots
from pipeline.registry.lineage import TRAINING_EXPERIMENT, Lineage
from pipeline.registry.objects import Bucket
from pipeline.registry.store import AdapterSetStore, DatasetStore
from pipeline.settings import Connection, load_settings

MAX_ACCURACY_DROP = 0.05
# The guard compares task-incremental accuracy: in class-incremental scoring every old task loses accuracy as
# soon as new classes compete for the argmax, which is expected, not breakage. "til" asks whether the new set
# damaged an earlier task's features; "cil" is the stricter option.
GUARD_METRIC = "til"


def guard_reason(parent_metrics: dict | None, scores: StageScores, max_drop: float, metric: str = GUARD_METRIC) -> str:
    """Why a new set must not become current: an earlier task lost more than `max_drop` accuracy."""
    rows = (parent_metrics or {}).get("til_correct" if metric == "til" else "correct")
    if not rows:
        return ""
    before, counts = rows[-1], scores.counts
    new_row = scores.til_correct if metric == "til" else scores.cil_correct
    worst, task = max(((before[j] - new_row[j]) / counts[j], j) for j in range(len(before)))
    if worst > max_drop:
        return (f"task {task} {metric.upper()} accuracy would drop by {100 * worst:.1f} points "
                f"(bound {100 * max_drop:.1f}); current stays on the parent")
    return ""


@dataclass
class StepResult:
    version: str
    parent: str | None
    task: str
    dataset_id: str
    decision: str
    active_adapters: int
    avg_accuracy: float
    final_accuracy: float
    forgetting: float
    promoted: bool
    run_id: str
    set_uri: str
    rejected_reason: str = ""
    """Why the promotion guard kept `current` where it was (empty if it did not)."""
    timings: dict = field(default_factory=dict)
    frozen_avg_accuracy: float | None = None
    frozen_final_accuracy: float | None = None
    """The same head fitted on the bare backbone's features of the same tasks, scored on the same rows."""

    def to_dict(self) -> dict:
        return asdict(self)


def _flat(prefix: str, value, out: dict) -> dict:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        out[prefix] = value
    return out


def promote_if_parent_current(lineage: Lineage, version: str, parent: str | None, reason: str) -> bool:
    """Move `current` to `version` if it still points at `parent` (a set never lands on a lineage it was not
    trained on). True if it moved; otherwise the version is tagged `not_promoted`, saying where `current` was."""
    now = lineage.current()
    if (now.version if now else None) != parent:
        lineage.client.set_model_version_tag(lineage.name, version, "not_promoted",
                                             f"current was v{now.version if now else '-'} when this set was ready, "
                                             f"not its parent v{parent or '-'}")
        return False
    lineage.move_current(version, reason=reason, kind="promote")
    return True


@dataclass
class Parent:
    model: ContinualModel | None
    manifest: dict | None
    version: str | None
    set_id: str | None


def load_current(lineage: Lineage, sets: AdapterSetStore, version: str | None = None) -> Parent:
    """The set under `current` (or registered `version`), fetched and loaded; empty if nothing is current."""
    parent = lineage.get(version) if version else lineage.current()
    if parent is None:
        return Parent(None, None, None, None)
    set_id = sets.set_id_from_uri(parent.source)
    directory = sets.fetch(set_id)
    return Parent(ContinualModel.load(directory), read_manifest(directory), parent.version, set_id)


@dataclass
class Fitted:
    model: ContinualModel
    decision: str
    logit: float
    train_s: float
    timings: dict = field(default_factory=dict)


@contextlib.contextmanager
def _training_run(run_id: str | None, run_name: str) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run that ends FAILED on an error, and lets that error (not a failure to end the run while
    MLflow is down) be what the caller sees."""
    run = mlflow.start_run(run_id=run_id, run_name=run_name)
    try:
        yield run
    except BaseException:
        with contextlib.suppress(Exception):
            mlflow.end_run("FAILED")
        raise
    mlflow.end_run()


# How a task is trained: in this process (`fit_locally`) or as a Ray Train job (`ray_train.ray_fit`).
Fit = Callable[[ContinualModel, Task, Parent, str, EpochCallback], Fitted]


def fit_locally(model: ContinualModel, task: Task, parent: Parent, run_id: str, on_epoch: EpochCallback) -> Fitted:
    result = train_task(model, task, on_epoch=on_epoch)
    return Fitted(model, result.decision.decision, result.decision.logit, result.wall_time,
                  {"compute_s": result.wall_time})


def train_on_current(
    dataset: TaskDataset,
    conn: Connection,
    config: TrainConfig | None = None,
    *,
    overrides: dict | None = None,
    fit: Fit = fit_locally,
    on_epoch: EpochCallback | None = None,
    at_stage: Callable[[str], None] | None = None,
    max_accuracy_drop: float = MAX_ACCURACY_DROP,
    run_id: str | None = None,
    version_tags: dict[str, str] | None = None,
) -> StepResult:
    """Train `dataset` on top of `current` and register the result.

    `config` configures the first set; later sets inherit their parent's configuration, with `overrides`
    (`TrainConfig.with_overrides` names) applied. `run_id` continues an MLflow run (a tuned task trains in its
    search's run) and `version_tags` are added to the version. `at_stage` is called with "published" (the set is in
    the bucket, not yet in MLflow) and "registered" (a version exists, `current` has not moved): fault injection."""
    at_stage = at_stage or (lambda stage: None)
    timings, clock = {}, time.perf_counter()
    lineage, bucket = Lineage(conn), Bucket.connect(conn)
    sets, datasets = AdapterSetStore(bucket, conn.cache_dir), DatasetStore(bucket)
    parent = load_current(lineage, sets)
    parent_manifest, parent_version = parent.manifest, parent.version
    model = parent.model or ContinualModel(config or TrainConfig().with_overrides(head=load_settings().head))
    if overrides:
        model.reconfigure(model.config.with_overrides(**overrides))
    task = dataset.to_task()
    earlier = []
    for record in model.tasks:
        old = datasets.get(record.dataset_id, record.name).to_task()
        if old.classes != record.classes:
            raise RuntimeError(f"stored dataset {record.dataset_id} no longer matches task {record.name!r}")
        earlier.append(old)
    dataset_uri = datasets.put(dataset)
    timings["load_s"] = time.perf_counter() - clock

    mlflow.set_tracking_uri(conn.mlflow_uri)
    mlflow.set_experiment(TRAINING_EXPERIMENT)
    run_name = f"{task.name} on " + (f"v{parent_version}" if parent_version else "the bare backbone")
    with _training_run(run_id, run_name) as run, tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tags({"task": task.name, "dataset_id": task.dataset_id, "parent_version": parent_version or "none"})
        mlflow.log_params(_flat("", model.config.to_dict(), {}))
        mlflow.log_input(mlflow.data.from_pandas(dataset.train.to_pandas(), source=dataset_uri, name=task.name),
                         context="training")

        def log_epoch(phase: str, epoch: int, loss: float) -> None:
            mlflow.log_metric(f"{phase}_loss", loss, step=epoch)
            if on_epoch:
                on_epoch(phase, epoch, loss)

        clock = time.perf_counter()
        fitted = fit(model, task, parent, run.info.run_id, log_epoch)
        model = fitted.model
        timings["train_s"] = time.perf_counter() - clock
        timings |= fitted.timings
        clock = time.perf_counter()
        scores = evaluate_stage(model, [*earlier, task])
        # The same head on the bare backbone, on the same rows: what the adapters must beat to earn their keep.
        reference = frozen_reference(model.config, [*earlier, task],
                                     FeatureCache(model.config.backbone, conn.cache_dir / "features"))
        timings["evaluate_s"] = time.perf_counter() - clock
        clock = time.perf_counter()
        metrics = parent_manifest["metrics"] if parent_manifest else {"correct": [], "counts": []}
        matrix = AccuracyMatrix([list(row) for row in metrics["correct"]], list(metrics["counts"]))
        matrix.add_stage(scores.cil_correct, scores.counts)
        til_rows = [*metrics.get("til_correct", []), scores.til_correct]
        rejected = guard_reason(parent_manifest["metrics"] if parent_manifest else None, scores, max_accuracy_drop)
        summary = {"avg_accuracy": matrix.average_accuracy, "final_accuracy": matrix.final_accuracy,
                   "forgetting": matrix.forgetting, "active_adapters": model.active_adapters,
                   "gate_logit": fitted.logit, "train_seconds": fitted.train_s,
                   "frozen_avg_accuracy": reference.cil.average_accuracy,
                   "frozen_final_accuracy": reference.cil.final_accuracy,
                   "gain_over_frozen": matrix.final_accuracy - reference.cil.final_accuracy}
        mlflow.log_metrics(summary)

        local = Path(tmp) / "set"
        manifest = model.save(local, extra={
            "parent_version": parent_version,
            "metrics": {"correct": matrix.correct, "til_correct": til_rows, "counts": matrix.counts, **summary},
        })
        set_id, set_uri = sets.publish(local)
        at_stage("published")
        mlflow.log_dict(manifest, "adapter_set/manifest.json")
        names = [t["name"] for t in manifest["tasks"]]
        plots.accuracy_heatmap(matrix.matrix(), names, Path(tmp) / "plots" / "accuracy_matrix.png")
        plots.adapter_usage(manifest["tasks"], manifest["adapters"], Path(tmp) / "plots" / "adapter_usage.png")
        plots.overlap_heatmap(mean_overlap(overlap_matrices(model)),
                              [names[a["slot"]] for a in manifest["adapters"]],
                              Path(tmp) / "plots" / "subspace_overlap.png")

        tags = {
            "parent_version": parent_version or "none", "task": task.name, "dataset_id": task.dataset_id,
            "dataset_uri": dataset_uri, "decision": fitted.decision,
            "active_adapters": str(model.active_adapters), "avg_accuracy": f"{matrix.average_accuracy:.4f}",
            "final_accuracy": f"{matrix.final_accuracy:.4f}", "forgetting": f"{matrix.forgetting:.4f}",
            "frozen_final_accuracy": f"{reference.cil.final_accuracy:.4f}",
            "set_id": set_id, "config": json.dumps(model.config.to_dict(), separators=(",", ":")),
            "promotion": "rejected" if rejected else "accepted", **(version_tags or {}),
        }
        if rejected:
            tags["rejected_reason"] = rejected
        version = lineage.register(set_uri, run.info.run_id, tags,
                                   description=f"{task.name}: {fitted.decision} on v{parent_version or '-'}")
        at_stage("registered")
        mlflow.set_tag("adapter_set_version", version.version)
        now = lineage.current()
        promotable = not rejected and (now.version if now else None) == parent_version
        plots.lineage_tree(lineage.nodes(), version.version if promotable else (now.version if now else None),
                           Path(tmp) / "plots" / "lineage.png")
        mlflow.log_artifacts(str(Path(tmp) / "plots"), "plots")
        # The alias move is the commit point, so it comes last: whatever fails before it leaves `current` alone.
        promoted = not rejected and promote_if_parent_current(lineage, version.version, parent_version,
                                                              reason=f"trained {task.name}")
        timings["register_s"] = time.perf_counter() - clock

    return StepResult(version.version, parent_version, task.name, task.dataset_id, fitted.decision,
                      model.active_adapters, matrix.average_accuracy, matrix.final_accuracy, matrix.forgetting,
                      promoted, run.info.run_id, set_uri, rejected, timings,
                      reference.cil.average_accuracy, reference.cil.final_accuracy)
