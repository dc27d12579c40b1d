"""Search LiteLoRA's hyperparameters for one task with Ray Tune, then train it with the best configuration.

    MLflow parent run (the task's run) ── one nested run per trial (Ray's MLflowLoggerCallback)
    Tuner: random search × ASHA on `objective`, trials sized to the cluster, state under s3://<bucket>/tune/
    best finished trial → overrides → `train_on_current` in the same run → the version carries `tune.*` tags

The search is named by task, dataset and a hash of the space and settings: running the same command again
resumes it (`Tuner.restore`) instead of starting over; changing the space starts a new search.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ray.tune import Callback, ExperimentAnalysis

from pipeline.adapters.adapter_set import read_manifest
from pipeline.data.task_dataset import TaskDataset
from pipeline.errors import JobFailed
from pipeline.learn.config import TrainConfig
from pipeline.learn.methods import selects_by_task
from pipeline.orchestrator.transaction import check_method
from pipeline.registry import plots
from pipeline.registry.bucket import arrow_filesystem
from pipeline.registry.lineage import TRAINING_EXPERIMENT, TrainingRun, parent_tag
from pipeline.registry.store import Registry
from pipeline.settings import Connection
from pipeline.tuning.pareto import TrialRow, markdown_table, pareto_front
from pipeline.tuning.space import SearchSpace
from pipeline.tuning.trial import TrialSetup, run_trial, trial_rows

TUNE_PREFIX = "tune/"


class TuneFailed(JobFailed):
    """No trial of the search finished, so there is no configuration to train with."""


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGUSR1) stopped the search; its state is saved and the same command resumes it. An interrupt,
    so callers stop the way they stop on Ctrl-C."""


@dataclass
class TuneSpec:
    trials: int = 8
    subsample: float = 0.5
    """Share of the task's training rows each trial trains on (seeded, class-stratified)."""
    cost_per_adapter: float = 0.01
    """Accuracy (as a fraction) one kept adapter must be worth: 0.01 = one point per adapter."""
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    """0.5 packs two trials on each GPU."""
    grace_epochs: int = 1
    """ASHA never stops a trial before it has reported this many epochs."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise ValueError("a search needs at least one trial")
        if not 0 < self.subsample <= 1:
            raise ValueError(f"subsample must be in (0, 1] (got {self.subsample})")


@dataclass
class TuneOutcome:
    best: dict
    """The winning trial's sampled knobs: `overrides` for `train_on_current`."""
    best_trial: TrialRow
    rows: list[TrialRow]
    front: list[TrialRow]
    run_id: str
    """The MLflow parent run; the trials are its nested runs, and the task is trained in it."""
    resumed: bool = False
    knobs: list[str] = field(default_factory=list)

    def version_tags(self) -> dict[str, str]:
        best = self.best_trial
        return {
            "tune.best_config": json.dumps(self.best, sort_keys=True),
            "tune.trials": str(len(self.rows)),
            "tune.best_trial": best.trial_id,
            "tune.objective": f"{best.objective:.4f}",
            "tune.run_id": self.run_id,
        }

    def to_dict(self) -> dict:
        return {
            "best": self.best,
            "best_trial": self.best_trial.to_dict(),
            "run_id": self.run_id,
            "resumed": self.resumed,
            "trials": [r.to_dict() for r in self.rows],
            "pareto_front": [r.trial_id for r in self.front],
        }


def search_name(
    task: str, dataset_id: str, space: SearchSpace, spec: TuneSpec, parent_set_id: str | None
) -> str:
    fingerprint = json.dumps([space.model_dump(), asdict(spec), parent_set_id], sort_keys=True)
    return f"{task}-{dataset_id[:12]}-{hashlib.sha256(fingerprint.encode()).hexdigest()[:8]}"


def _rows(results) -> list[TrialRow]:
    rows = []
    for result in results:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or result.path.rstrip("/").rsplit("/", 1)[-1]
        config = {k: v for k, v in (result.config or {}).items()}
        if result.error is not None:
            rows.append(
                TrialRow(trial_id, config, "error", error=str(result.error).strip().splitlines()[-1][:300])
            )
            continue
        rows.append(
            TrialRow(
                trial_id,
                config,
                "finished" if metrics.get("closed") else "stopped",
                metrics.get("objective"),
                metrics.get("accuracy"),
                metrics.get("til_accuracy"),
                metrics.get("active_adapters"),
                int(metrics.get("training_iteration", 0)),
            )
        )
    return rows


# Who hears about trials in this process. Tune pickles its callbacks with the search state (to restore it),
# so the callback carries only the search's name and looks its listener up here.
_LISTENERS: dict[str, Callable[[str], None]] = {}


class TrialProgress(Callback):
    def __init__(self, search: str):
        self.search = search

    def _say(self, message: str) -> None:
        _LISTENERS.get(self.search, lambda _: None)(message)

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result or {}
        how = "finished" if result.get("closed") else "stopped early by ASHA"
        self._say(
            f"trial {trial.trial_id} {how}: objective {result.get('objective', float('nan')):.4f}, "
            f"{result.get('active_adapters', '?')} adapter(s); {_short(trial.config)}"
        )

    def on_trial_error(self, iteration, trials, trial, **info):
        self._say(f"trial {trial.trial_id} failed (its nested MLflow run and Ray's logs say why)")


def _tuner(
    name: str,
    setup: TrialSetup,
    space: SearchSpace,
    spec: TuneSpec,
    run_id: str,
    conn: Connection,
    log: Callable[[str], None],
):
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # Tune's console reporter (banner, tables, a TensorBoard hint) would interleave with our own output and
    # break --json; with the legacy reporter, verbose=0 means silent.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    storage_path, filesystem = f"{conn.bucket}/{TUNE_PREFIX.rstrip('/')}", arrow_filesystem(conn)
    resources = {"CPU": spec.cpus_per_trial} | ({"GPU": spec.gpus_per_trial} if spec.gpus_per_trial else {})
    trainable = tune.with_resources(tune.with_parameters(run_trial, setup=setup), resources)
    path = f"{storage_path}/{name}"
    if tune.Tuner.can_restore(path, storage_filesystem=filesystem):
        log(f"resuming the search stored at s3://{path}")
        return (
            tune.Tuner.restore(
                path,
                trainable,
                resume_unfinished=True,
                resume_errored=True,
                param_space=space.to_tune(),
                storage_filesystem=filesystem,
            ),
            path,
            True,
        )

    max_t = setup_epochs(setup) + 1
    tuner = tune.Tuner(
        trainable,
        param_space=space.to_tune(),
        tune_config=tune.TuneConfig(
            num_samples=spec.trials,
            scheduler=ASHAScheduler(
                metric="objective",
                mode="max",
                time_attr="training_iteration",
                max_t=max_t,
                grace_period=min(spec.grace_epochs, max_t),
                reduction_factor=2,
            ),
            search_alg=BasicVariantGenerator(random_state=spec.seed),
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage_path,
            storage_filesystem=filesystem,
            verbose=0,
            callbacks=[
                TrialProgress(name),
                MLflowLoggerCallback(
                    tracking_uri=conn.mlflow_uri,
                    experiment_name=TRAINING_EXPERIMENT,
                    tags={"mlflow.parentRunId": run_id, "task": setup.task_name, "kind": "tune-trial"},
                ),
            ],
        ),
    )
    return tuner, path, False


def setup_epochs(setup: TrialSetup) -> int:
    config = TrainConfig.from_dict(setup.base_config)
    phase2 = config.phase2_epochs if config.method == "litelora" and setup.earlier else 0
    return config.task_epochs(len(setup.earlier), setup.train_rows) + phase2


def _short(config: dict) -> str:
    return ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(config.items())
    )


class NothingToTune(ValueError):
    """The stream's method has none of the knobs the search explores."""


def tune_task(
    dataset: TaskDataset,
    conn: Connection,
    space: SearchSpace | None = None,
    spec: TuneSpec | None = None,
    *,
    base_config: TrainConfig | None = None,
    log: Callable[[str], None] = print,
    on_trial: Callable[[str], None] | None = None,
) -> TuneOutcome:
    """Search on top of `current`; the task's MLflow run it opens is `outcome.run_id`.

    `on_trial` hears once per trial that ends (finished, stopped early or failed); default: `log`."""
    from pipeline.orchestrator.ray_train import init_ray

    space, spec = space or SearchSpace(), spec or TuneSpec()
    registry = Registry.connect(conn)
    lineage, sets = registry.lineage, registry.sets
    parent = registry.current()
    parent_set_id = sets.set_id_from_uri(parent.source) if parent else None
    manifest = read_manifest(sets.fetch(parent_set_id)) if parent_set_id else None
    config = TrainConfig.from_dict(manifest["config"]) if manifest else (base_config or TrainConfig())
    if manifest:  # a drop its stream would refuse is refused before the trials, not after them
        check_method(dataset, config.method, registry.stream)
    method = config.method if manifest else (dataset.method or config.method)
    if selects_by_task(method):
        raise NothingToTune(
            f"stream {registry.stream!r} runs {method}: the search covers the LiteLoRA gate's knobs, which it does "
            "not have; train its drops without a search (`litelora train --register`, or `litelora watch`, which "
            "does so by itself)"
        )
    registry.datasets.put(dataset)  # trials read the task by id, like the Ray Train workers
    name = search_name(dataset.name, dataset.dataset_id, space, spec, parent_set_id)
    setup = TrialSetup(
        conn,
        config.to_dict(),
        parent_set_id,
        dataset.dataset_id,
        dataset.name,
        [(t["dataset_id"], t["name"]) for t in (manifest or {}).get("tasks", [])],
        spec.subsample,
        spec.cost_per_adapter,
        max(1, int(spec.cpus_per_trial)),
        spec.seed,
        train_rows=trial_rows(dataset.train.num_rows, spec.subsample),
    )

    run_id = lineage.find_run("tune_search", name)
    if run_id:  # a resumed search: trial runs a killed search left RUNNING are re-run under new runs
        lineage.end_running_children(run_id, "KILLED")
    else:
        run = lineage.new_run(
            f"{dataset.name} on " + (f"v{parent.version}" if parent else "the bare backbone") + " (tuned)",
            {
                "task": dataset.name,
                "dataset_id": dataset.dataset_id,
                "tune_search": name,
                "parent_version": parent_tag(parent.version if parent else None),
            },
        )
        run.log_dict({"space": space.model_dump(), "spec": asdict(spec)}, "tune/search.json")
        run_id = run.run_id
    run = lineage.run(run_id)

    init_ray(conn.cache_dir.parent)
    tuner, path, resumed = _tuner(name, setup, space, spec, run_id, conn, log)
    _LISTENERS[name] = on_trial or log
    try:
        grid = tuner.fit()  # Tune catches SIGINT itself: it saves the state and returns early
    finally:
        _LISTENERS.pop(name, None)
    rows = _rows(grid)
    # After Ctrl-C Tune marks every trial terminated in memory; the state it saved first tells the truth.
    saved = ExperimentAnalysis(path, storage_filesystem=arrow_filesystem(conn)).trials
    ended = sum(trial.status in ("TERMINATED", "ERROR") for trial in saved)
    if ended < spec.trials:
        run.end("KILLED")
        raise SearchInterrupted(
            f"search interrupted after {ended} of {spec.trials} trials; its state is in "
            f"s3://{conn.bucket}/{TUNE_PREFIX}{name}/ and the same command resumes it"
        )
    finished = [r for r in rows if r.status == "finished"]
    if not finished:
        errors = [r.error for r in rows if r.error]
        run.end("FAILED")
        raise TuneFailed(
            f"none of the {len(rows)} trials finished" + (f"; first error: {errors[0]}" if errors else "")
        )
    best = max(finished, key=lambda r: r.objective)
    front = pareto_front(rows)
    outcome = TuneOutcome(
        {k: best.config[k] for k in space.knobs() if k in best.config},
        best,
        rows,
        front,
        run_id,
        resumed,
        space.knobs(),
    )
    _log_search(run, outcome)
    run.end()  # `train_on_current(run_id=…)` reopens it to train with the winner
    return outcome


def _log_search(run: TrainingRun, outcome: TuneOutcome) -> None:
    best = outcome.best_trial
    run.log_params({f"tune.best.{k}": v for k, v in outcome.best.items()})
    run.log_metrics(
        {f"tune.best_{k}": float(getattr(best, k)) for k in ("objective", "accuracy", "active_adapters")}
    )
    run.set_tags({"tune.best_trial": best.trial_id})
    with tempfile.TemporaryDirectory() as tmp:
        table = markdown_table(outcome.rows, outcome.knobs, outcome.front)
        (Path(tmp) / "trials.md").write_text(table)
        (Path(tmp) / "trials.json").write_text(json.dumps(outcome.to_dict(), indent=2))
        plots.pareto_plot(
            [(r.accuracy, r.active_adapters, r.trial_id) for r in outcome.rows if r.status == "finished"],
            [(r.accuracy, r.active_adapters, r.trial_id) for r in outcome.front],
            best.trial_id,
            Path(tmp) / "pareto.png",
        )
        run.log_artifacts(tmp, "tune")


def tune_then_train(
    dataset: TaskDataset,
    conn: Connection,
    space: SearchSpace,
    spec: TuneSpec,
    *,
    fit=None,
    base_config: TrainConfig | None = None,
    log: Callable[[str], None] = print,
    on_trial: Callable[[str], None] | None = None,
    **train_options,
):
    """Search, then train the task with the winning knobs in the search's run: the registered version is
    trained with exactly the configuration its `tune.best_config` tag names."""
    from pipeline.orchestrator.transaction import fit_locally, train_on_current

    clock = time.perf_counter()
    outcome = tune_task(dataset, conn, space, spec, base_config=base_config, log=log, on_trial=on_trial)
    tune_s = time.perf_counter() - clock
    log(
        f"best of {len(outcome.rows)} trials: {_short(outcome.best)} (objective {outcome.best_trial.objective:.4f}); "
        "training the task with it"
    )
    result = train_on_current(
        dataset,
        Registry.connect(conn),
        base_config,
        overrides=outcome.best,
        fit=fit or fit_locally,
        run_id=outcome.run_id,
        extra_tags=outcome.version_tags(),
        **train_options,
    )
    result.timings["tune_s"] = tune_s
    return outcome, result
