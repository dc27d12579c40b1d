"""One task against the registry: the set under `current` + a task dataset → a new version.

    load the parent, store the dataset → train (here, or as a Ray Train job) → evaluate every task and class so
    far, beside the frozen encoder, and apply the promotion guard → publish the set (files, then manifest) →
    register an MLflow version with lineage tags → plots → move `current` (the commit point; only if the parent
    is still `current`)

A crash before the last step leaves `current` on the last complete set. docs/architecture.md has the failure
model.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from pipeline.data.task_dataset import InvalidDataset, TaskDataset
from pipeline.learn.backbone import DEFAULT_BACKBONE
from pipeline.learn.class_accuracy import ClassHistory
from pipeline.learn.config import TrainConfig
from pipeline.learn.evaluate import StageScores
from pipeline.learn.frozen import FeatureCache, frozen_reference
from pipeline.learn.head_options import KNOWN_CLASS_HEADS
from pipeline.learn.methods import AnyModel, continuing, evaluate
from pipeline.learn.metrics import AccuracyMatrix
from pipeline.learn.recipe import EpochCallback
from pipeline.learn.subspace import mean_overlap, overlap_matrices
from pipeline.learn.task import Task
from pipeline.methods import DEFAULT_METHOD
from pipeline.orchestrator.fit import Fit, Fitted, fit_locally
from pipeline.orchestrator.promotion import MAX_ACCURACY_DROP, guard_reason, promote_if_parent_current
from pipeline.registry import plots
from pipeline.registry.current import Parent, load_current
from pipeline.registry.lineage import TrainingRun, parent_tag, version_label
from pipeline.registry.store import Registry
from pipeline.settings import load_settings


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
    method: str = DEFAULT_METHOD
    """What the stream runs; Share's accuracies are task-incremental (`methods.accuracy_scope`)."""

    @property
    def outcome(self) -> str:
        """What happened to `current`, in words."""
        if self.promoted:
            return "now current"
        return f"rejected: {self.rejected_reason}" if self.rejected_reason else "registered, not promoted"

    def to_dict(self) -> dict:
        return asdict(self) | {"outcome": self.outcome}


def fit_with(conn, workers: int, gpu: bool = False, cpus_per_worker: float | None = None) -> Fit:
    """Each task as a Ray Train job of `workers` workers (DDP, one GPU each with `gpu`, `cpus_per_worker` CPUs
    each); 0: in this process."""
    if workers <= 0:
        return fit_locally
    from pipeline.orchestrator.ray_train import ScalingSpec, ray_fit

    return ray_fit(conn, ScalingSpec(num_workers=workers, use_gpu=gpu, cpus_per_worker=cpus_per_worker))


@contextlib.contextmanager
def stopwatch(timings: dict, name: str) -> Iterator[None]:
    clock = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - clock


@dataclass
class Scored:
    """A new set's row of the lineage's accuracy matrix, and the frozen encoder's beside it."""

    matrix: AccuracyMatrix
    til_rows: list[list[int]]
    scores: StageScores
    frozen_avg: float
    frozen_final: float
    classes: ClassHistory

    def summary(self, model: AnyModel, fitted: Fitted) -> dict:
        return {
            "avg_accuracy": self.matrix.average_accuracy,
            "final_accuracy": self.matrix.final_accuracy,
            "forgetting": self.matrix.forgetting,
            "active_adapters": model.active_adapters,
            "gate_logit": fitted.logit,
            "train_seconds": fitted.train_s,
            "frozen_avg_accuracy": self.frozen_avg,
            "frozen_final_accuracy": self.frozen_final,
            "gain_over_frozen": self.matrix.final_accuracy - self.frozen_final,
        }


def starting_model(
    parent: Parent,
    config: TrainConfig | None,
    overrides: dict | None,
    backbone: str | None = None,
    dataset: TaskDataset | None = None,
) -> AnyModel:
    """The parent's model (its configuration, with `overrides`), or a new one for a lineage's first set: `config`,
    else the defaults for the stream's `backbone`, running the drop's `method` if it names one."""
    default = config or TrainConfig.for_backbone(backbone or DEFAULT_BACKBONE).with_overrides(
        head=load_settings().head
    )
    if dataset is not None and parent.model is None:
        default = default.for_first_drop(dataset.method, dataset.recruits)
    return continuing(parent.model, default, overrides)


def check_method(dataset: TaskDataset, method: str, stream: str) -> None:
    """A drop that names a method must name the one its stream runs."""
    if dataset.method and dataset.method != method:
        raise InvalidDataset(
            f"{dataset.name} asks for method {dataset.method!r}, and stream {stream!r} runs {method!r} (set by its "
            "first drop): drop it into another stream, or remove `method` from task.json"
        )


def check_recruits(dataset: TaskDataset, recruits: str, stream: str) -> None:
    """A drop that names a recruit space must name the one its stream recruits in."""
    if dataset.recruits and dataset.recruits != recruits:
        raise InvalidDataset(
            f"{dataset.name} asks for {dataset.recruits!r} recruits, and stream {stream!r} recruits {recruits!r} "
            "(set by its first drop): drop it into another stream, or remove `recruits` from task.json"
        )


def check_trainable(dataset: TaskDataset, model: AnyModel, stream: str) -> None:
    """A drop that names a method must name the stream's; it may repeat classes the stream knows only if the
    stream can tell them apart (Share: by task; otherwise a head that keeps one entry per class). The kind of
    input was checked against the stream's backbone by `Streams.admit`."""
    check_method(dataset, model.config.method, stream)
    check_recruits(dataset, model.config.recruit_space, stream)
    if model.method.selects_by_task:  # a prediction names its task: a class may come back in another task
        return
    known = sorted(set(dataset.classes()) & set(model.classes))
    if known and model.config.head not in KNOWN_CLASS_HEADS:
        raise InvalidDataset(
            f"{dataset.name} brings classes stream {stream!r} already knows ({', '.join(known[:5])}"
            + (" …" if len(known) > 5 else "")
            + f"), and its {model.config.head!r} head keeps one head per task: drop only new classes here, or "
            f"start a stream with a {' or '.join(KNOWN_CLASS_HEADS)} head for data that comes back"
        )
    if known and model.config.recruit_space == "routed":
        raise InvalidDataset(
            f"{dataset.name} brings classes stream {stream!r} already knows ({', '.join(known[:5])}), and its "
            "routed recruits keep each class with one expert: drop only new classes here"
        )


def earlier_tasks(registry: Registry, model: AnyModel) -> list[Task]:
    """The tasks the model already knows, with their held-out rows alone (read back from the stored datasets), to
    evaluate every one of them: scoring a new task never reads earlier tasks' training rows."""
    tasks = []
    for record in model.tasks:
        old = registry.datasets.held_out(record.dataset_id, record.name)
        if old.classes != record.classes:
            raise RuntimeError(f"stored dataset {record.dataset_id} no longer matches task {record.name!r}")
        tasks.append(old)
    return tasks


def score(
    registry: Registry, model: AnyModel, tasks: list[Task], parent: Parent, timings: dict | None = None
) -> Scored:
    """Evaluate every task so far; the same head on the bare backbone's (cached) features gives the reference.
    A Share set is scored task-incrementally (its predictions name the task), and so is its reference.
    `timings` gets `frozen_reference_s`: fitting that head on the new task's rows, the part that grows with them."""
    scores = evaluate(model, tasks, registry.cache_dir / "held-out-features")
    selected = model.method.selects_by_task
    # Share's heads are per-task linear heads, whatever head option its configuration carries.
    same_head = replace(model.config, head="linear") if selected else model.config
    with stopwatch({} if timings is None else timings, "frozen_reference_s"):
        frozen = frozen_reference(
            same_head,
            tasks,
            FeatureCache(model.config.backbone, registry.cache_dir / "features"),
            stages=registry.cache_dir / "frozen-stages",
            rows=lambda task: registry.datasets.get(task.dataset_id, task.name).to_task(),
        )
    reference, frozen_classes = (frozen.til, frozen.til_classes) if selected else (frozen.cil, frozen.classes)
    metrics = parent.metrics or {"correct": [], "counts": []}
    matrix = AccuracyMatrix([list(row) for row in metrics["correct"]], list(metrics["counts"]))
    matrix.add_stage(scores.cil_correct, scores.counts)
    til_rows = [*metrics.get("til_correct", []), scores.til_correct]
    classes = ClassHistory.from_metrics(metrics).extended(scores.classes, frozen_classes, len(tasks))
    return Scored(matrix, til_rows, scores, reference.average_accuracy, reference.final_accuracy, classes)


def publish_set(
    registry: Registry,
    run: TrainingRun,
    model: AnyModel,
    parent: Parent,
    scored: Scored,
    fitted: Fitted,
    directory: Path,
) -> tuple[dict, str, str]:
    """Save the set with its accuracy rows and put it in the bucket (files, then manifest); its metrics and
    manifest go to the run. Returns (manifest, set id, set URI)."""
    summary = scored.summary(model, fitted)
    run.log_metrics(summary | scored.classes.latest_metrics())
    metrics = {
        "correct": scored.matrix.correct,
        "til_correct": scored.til_rows,
        "counts": scored.matrix.counts,
    } | scored.classes.to_metrics()
    manifest = model.save(directory, extra={"parent_version": parent.version, "metrics": metrics | summary})
    set_id, set_uri = registry.sets.publish(directory)
    run.log_dict(manifest, "adapter_set/manifest.json")
    return manifest, set_id, set_uri


def log_plots(
    run: TrainingRun,
    registry: Registry,
    model: AnyModel,
    manifest: dict,
    scored: Scored,
    version: str,
    parent: Parent,
    rejected: str,
    directory: Path,
) -> None:
    """Accuracy matrix, per-class accuracy, adapter usage and subspace overlap (gated methods: Share keeps no
    adapters to choose from) and the lineage tree, as the run's `plots/`."""
    names = [t["name"] for t in manifest["tasks"]]
    plots.accuracy_heatmap(scored.matrix.matrix(), names, directory / "accuracy_matrix.png")
    plots.class_accuracy(
        scored.classes.rows(), [f"after {n}" for n in names], directory / "class_accuracy.png"
    )
    if not model.method.selects_by_task:  # adapters shared by every task: which each uses, how they overlap
        plots.adapter_usage(manifest["tasks"], manifest["adapters"], directory / "adapter_usage.png")
        plots.overlap_heatmap(
            mean_overlap(overlap_matrices(model)),
            [names[a["slot"]] for a in manifest["adapters"]],
            directory / "subspace_overlap.png",
        )
    # Drawn before the alias moves, so the tree marks where `current` will be if the promotion goes through.
    now = registry.pointer.version()
    expected_current = version if not rejected and now == parent.version else None
    plots.lineage_tree(registry.lineage.nodes(), expected_current or now, directory / "lineage.png")
    run.log_artifacts(str(directory), "plots")


def tags_of_version(
    task: Task,
    parent: Parent,
    fitted: Fitted,
    model: AnyModel,
    scored: Scored,
    set_id: str,
    dataset_uri: str,
    rejected: str,
) -> dict[str, str]:
    matrix = scored.matrix
    tags = {
        "parent_version": parent_tag(parent.version),
        "task": task.name,
        "dataset_id": task.dataset_id,
        "dataset_uri": dataset_uri,
        "decision": fitted.decision,
        "active_adapters": str(model.active_adapters),
        "avg_accuracy": f"{matrix.average_accuracy:.4f}",
        "final_accuracy": f"{matrix.final_accuracy:.4f}",
        "forgetting": f"{matrix.forgetting:.4f}",
        "frozen_final_accuracy": f"{scored.frozen_final:.4f}",
        "set_id": set_id,
        "config": json.dumps(model.config.to_dict(), separators=(",", ":")),
        "promotion": "rejected" if rejected else "accepted",
    }
    weighed = model.tasks[-1].weighed  # the no-regret rule's two scores, when it weighed a recruit
    if weighed:
        tags |= {"weighed_recruit": f"{weighed[0]:.4f}", "weighed_reuse": f"{weighed[1]:.4f}"}
    return tags | ({"rejected_reason": rejected} if rejected else {})


def train_on_current(
    dataset: TaskDataset,
    registry: Registry,
    config: TrainConfig | None = None,
    *,
    overrides: dict | None = None,
    fit: Fit = fit_locally,
    on_epoch: EpochCallback | None = None,
    at_stage: Callable[[str], None] | None = None,
    max_accuracy_drop: float = MAX_ACCURACY_DROP,
    run_id: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> StepResult:
    """Train `dataset` on top of `current` and register the result.

    `config` configures the first set; later sets inherit their parent's configuration, with `overrides`
    (`TrainConfig.with_overrides` names) applied. `run_id` continues an MLflow run (a tuned task trains in its
    search's run) and `extra_tags` are added to the version. `at_stage` is called with "published" (the set is in
    the bucket, not yet in MLflow) and "registered" (a version exists, `current` has not moved): fault injection."""
    at_stage = at_stage or (lambda stage: None)
    timings: dict = {}
    with stopwatch(timings, "load_s"):
        step = _prepare(dataset, registry, config, overrides)
    parent, task = step.parent, step.task
    name = f"{task.name} on {version_label(parent.version)}"
    run_tags = {
        "task": task.name,
        "dataset_id": task.dataset_id,
        "parent_version": parent_tag(parent.version),
    }
    with registry.lineage.training_run(name, run_tags, run_id) as run, tempfile.TemporaryDirectory() as tmp:
        # A Share set trains with its own optimiser settings, k and φ: they are part of what made it.
        run.log_params(step.model.run_params())
        run.log_dataset(
            task.name, task.dataset_id, step.dataset_uri, dataset.schema(), dataset.train.num_rows
        )

        def log_epoch(phase: str, epoch: int, loss: float) -> None:
            run.log_metric(f"{phase}_loss", loss, step=epoch)
            if on_epoch:
                on_epoch(phase, epoch, loss)

        with stopwatch(timings, "train_s"):  # wall time around the fit, Ray's start-up included
            fitted = fit(step.model, task, parent, run, log_epoch)
        model = fitted.model
        timings |= fitted.timings
        with stopwatch(timings, "evaluate_s"):
            scored = score(registry, model, [*step.earlier, task], parent, timings)
            rejected = guard_reason(parent.metrics, scored.scores, max_accuracy_drop)
        with stopwatch(timings, "register_s"):
            registered = _register(
                registry, run, step, fitted, scored, rejected, extra_tags or {}, at_stage, Path(tmp)
            )
    return StepResult(
        version=registered.version,
        parent=parent.version,
        task=task.name,
        dataset_id=task.dataset_id,
        decision=fitted.decision,
        active_adapters=model.active_adapters,
        avg_accuracy=scored.matrix.average_accuracy,
        final_accuracy=scored.matrix.final_accuracy,
        forgetting=scored.matrix.forgetting,
        promoted=registered.promoted,
        run_id=run.run_id,
        set_uri=registered.set_uri,
        rejected_reason=rejected,
        timings=timings,
        frozen_avg_accuracy=scored.frozen_avg,
        frozen_final_accuracy=scored.frozen_final,
        method=model.config.method,
    )


@dataclass
class _Step:
    """What a task trains from: its parent, the model that continues it, the task and the earlier ones."""

    parent: Parent
    model: AnyModel
    task: Task
    earlier: list[Task]
    dataset_uri: str


def _prepare(
    dataset: TaskDataset, registry: Registry, config: TrainConfig | None, overrides: dict | None
) -> _Step:
    stream = registry.streams.admit(registry.stream, dataset.backbone, dataset.input_column == "image")
    parent = load_current(registry)
    model = starting_model(parent, config, overrides, stream.backbone, dataset)
    check_trainable(dataset, model, registry.stream)
    dataset_uri = registry.datasets.put(dataset)  # first: a dataset stored before keeps its held-out rule
    return _Step(parent, model, dataset.to_task(), earlier_tasks(registry, model), dataset_uri)


@dataclass
class _Registered:
    version: str
    set_uri: str
    promoted: bool


def _register(
    registry: Registry,
    run,
    step: _Step,
    fitted: Fitted,
    scored: Scored,
    rejected: str,
    extra_tags: dict[str, str],
    at_stage: Callable[[str], None],
    tmp: Path,
) -> _Registered:
    """The set's files, then its manifest, then its MLflow version and plots, then `current` (the commit point)."""
    model, parent, task = fitted.model, step.parent, step.task
    manifest, set_id, set_uri = publish_set(registry, run, model, parent, scored, fitted, tmp / "set")
    at_stage("published")
    version_tags = tags_of_version(task, parent, fitted, model, scored, set_id, step.dataset_uri, rejected)
    version = registry.lineage.register(
        set_uri,
        run.run_id,
        version_tags | extra_tags,
        description=f"{task.name}: {fitted.decision} on {version_label(parent.version)}",
    )
    at_stage("registered")
    run.set_tags({"adapter_set_version": version.version})
    log_plots(run, registry, model, manifest, scored, version.version, parent, rejected, tmp / "plots")
    # The alias move is the commit point, so it comes last: whatever fails before it leaves `current` alone.
    promoted = not rejected and promote_if_parent_current(
        registry, version.version, parent.version, reason=f"trained {task.name}"
    )
    return _Registered(version.version, set_uri, promoted)
