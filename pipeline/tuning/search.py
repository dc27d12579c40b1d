"""Search LiteLoRA's hyperparameters for one task with Ray Tune, then train it with the best configuration.

    MLflow parent run (the task's run) ── one nested run per trial (Ray's MLflowLoggerCallback)
    Tuner: a seeded list of configurations × ASHA on `objective`, trials sized to the cluster
    each ended trial → a sealed record under s3://<bucket>/tune/<search>/trials/ (records.py)
    best finished trial → overrides → `train_on_current` in the same run → the version carries `tune.*` tags

The search is named by task, dataset and a hash of the space and settings: running the same command again
resumes it instead of starting over; changing the space starts a new search. A resumed search is a new Tuner
that runs only the configurations without a verified record: Tune's own saved state is pickles, and anyone who
could write it would run code on the driver, so it is never restored (`Tuner.restore` is not used).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.adapters.adapter_set import read_manifest
from pipeline.data.task_dataset import TaskDataset
from pipeline.errors import JobFailed
from pipeline.learn.config import TrainConfig
from pipeline.learn.methods import selects_by_task
from pipeline.methods import method_of
from pipeline.orchestrator.transaction import check_method
from pipeline.registry import plots
from pipeline.registry.bucket import Bucket, arrow_filesystem
from pipeline.registry.lineage import TRAINING_EXPERIMENT, Lineage, TrainingRun, parent_tag
from pipeline.registry.service_key import ServiceKey
from pipeline.registry.store import Registry
from pipeline.settings import Connection, load_settings
from pipeline.tuning.attempt import Attempt, ResumedASHA, TrialLedger, describe, register, unregister
from pipeline.tuning.pareto import TrialRow, markdown_table, pareto_front
from pipeline.tuning.records import TUNE_PREFIX, SearchRecords, TrialRecord
from pipeline.tuning.space import SearchSpace
from pipeline.tuning.trial import TrialSetup, run_trial, trial_rows


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


def _error_rows(results) -> list[TrialRow]:
    """The trials of this attempt that failed. They get no record: a resumed search tries them again."""
    rows = []
    for result in results:
        if result.error is not None:
            trial_id = (result.metrics or {}).get("trial_id") or result.path.rstrip("/").rsplit("/", 1)[-1]
            error = str(result.error).strip().splitlines()[-1][:300]
            rows.append(TrialRow(trial_id, dict(result.config or {}), "error", error=error))
    return rows


def _tuner(
    name: str,
    setup: TrialSetup,
    space: SearchSpace,
    spec: TuneSpec,
    pending: dict[int, dict],
    earlier: list[TrialRecord],
    run_id: str,
    conn: Connection,
):
    """A fresh Tuner for the configurations still `pending`; ASHA is told what the `earlier` trials reported."""
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # Tune's console reporter (banner, tables, a TensorBoard hint) would interleave with our own output and
    # break --json; with the legacy reporter, verbose=0 means silent.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    resources = {"CPU": spec.cpus_per_trial} | ({"GPU": spec.gpus_per_trial} if spec.gpus_per_trial else {})
    trainable = tune.with_resources(tune.with_parameters(run_trial, setup=setup), resources)
    max_t = setup_epochs(setup) + 1
    scheduler = ResumedASHA(
        metric="objective",
        mode="max",
        time_attr="training_iteration",
        max_t=max_t,
        grace_period=min(spec.grace_epochs, max_t),
        reduction_factor=2,
    )
    for record in earlier:
        scheduler.replay(record)
    return tune.Tuner(
        trainable,
        param_space=space.to_tune(),
        tune_config=tune.TuneConfig(
            num_samples=len(pending),
            scheduler=scheduler,
            # Each point replaces one sample: the trials are exactly the pending configurations.
            search_alg=BasicVariantGenerator(points_to_evaluate=list(pending.values())),
        ),
        run_config=tune.RunConfig(
            # Every attempt writes Tune's own files (logs, results, its pickled state) to a directory of its
            # own, which nothing reads back.
            name=f"attempt-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}",
            storage_path=f"{conn.bucket}/{TUNE_PREFIX}{name}",
            storage_filesystem=arrow_filesystem(conn),
            verbose=0,
            callbacks=[
                TrialLedger(name),
                MLflowLoggerCallback(
                    tracking_uri=conn.mlflow_uri,
                    experiment_name=TRAINING_EXPERIMENT,
                    tags={"mlflow.parentRunId": run_id, "task": setup.task_name, "kind": "tune-trial"},
                ),
            ],
        ),
    )


def setup_epochs(setup: TrialSetup) -> int:
    config = TrainConfig.from_dict(setup.base_config)
    phase2 = config.phase2_epochs if method_of(config.method).selects(len(setup.earlier)) else 0
    return config.task_epochs(len(setup.earlier), setup.train_rows) + phase2


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
    from pipeline.orchestrator.ray_node import init_ray

    space, spec = space or SearchSpace(), spec or TuneSpec()
    registry = Registry.connect(conn)
    parent = registry.current()
    parent_set_id = registry.sets.set_id_from_uri(parent.source) if parent else None
    manifest = read_manifest(registry.sets.fetch(parent_set_id)) if parent_set_id else None
    config = _searched_config(dataset, registry, manifest, base_config)
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
    run_id, resumed = _search_run(registry.lineage, name, dataset, parent, space, spec)
    run = registry.lineage.run(run_id)

    init_ray(conn.cache_dir.parent)
    rows, ended = _run_trials(name, setup, space, spec, run_id, conn, log, on_trial or log)
    best = max(_finished_trials(rows, ended, spec, run, conn, name), key=lambda r: r.objective)
    outcome = TuneOutcome(
        {k: best.config[k] for k in space.knobs() if k in best.config},
        best,
        rows,
        pareto_front(rows),
        run_id,
        resumed,
        space.knobs(),
    )
    _log_search(run, outcome)
    run.end()  # `train_on_current(run_id=…)` reopens it to train with the winner
    return outcome


def _searched_config(
    dataset: TaskDataset, registry: Registry, manifest: dict | None, base_config: TrainConfig | None
) -> TrainConfig:
    """What the trials start from: the parent set's configuration, else `base_config`. `NothingToTune` when
    the stream's method has none of the knobs searched."""
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
    return config


def _search_run(
    lineage: Lineage, name: str, dataset: TaskDataset, parent, space: SearchSpace, spec: TuneSpec
) -> tuple[str, bool]:
    """The task's MLflow run for the search `name`, and whether it is resumed (the run existed already)."""
    run_id = lineage.find_run("tune_search", name)
    if run_id:  # a resumed search: trial runs a killed search left RUNNING are re-run under new runs
        lineage.end_running_children(run_id, "KILLED")
        return run_id, True
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
    return run.run_id, False


def _finished_trials(
    rows: list[TrialRow], ended: int, spec: TuneSpec, run: TrainingRun, conn: Connection, name: str
) -> list[TrialRow]:
    """The trials that finished. A search cut short, or one where none finished, ends its run and raises."""
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
    return finished


def _run_trials(
    name: str,
    setup: TrialSetup,
    space: SearchSpace,
    spec: TuneSpec,
    run_id: str,
    conn: Connection,
    log: Callable[[str], None],
    listener: Callable[[str], None],
) -> tuple[list[TrialRow], int]:
    """Train the search's configurations that have no verified record yet. Every trial's row (the ended ones by
    slot, then this attempt's failures) and how many trials have ended."""
    configs = space.samples(spec.trials, spec.seed)
    records = SearchRecords(Bucket.connect(conn), name, ServiceKey.load(load_settings()), log)
    earlier = records.read(configs)
    if earlier:
        where = f"s3://{conn.bucket}/{TUNE_PREFIX}{name}/"
        log(f"resuming the search in {where}: {len(earlier)} of {spec.trials} trials ended before")
        for record in earlier.values():
            listener(
                f"trial {record.row.trial_id} ended in an earlier run ({record.row.status}); not run again"
            )
    attempt = Attempt(records, {s: c for s, c in enumerate(configs) if s not in earlier}, listener)
    errors = []
    if attempt.pending:
        tuner = _tuner(name, setup, space, spec, dict(attempt.pending), list(earlier.values()), run_id, conn)
        register(name, attempt)
        try:
            errors = _error_rows(tuner.fit())  # Tune catches SIGINT itself: it stops the trials and returns
        finally:
            unregister(name)
    done = earlier | attempt.ended
    return [done[slot].row for slot in sorted(done)] + errors, len(done) + len(errors)


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
    from pipeline.orchestrator.fit import fit_locally
    from pipeline.orchestrator.transaction import train_on_current

    clock = time.perf_counter()
    outcome = tune_task(dataset, conn, space, spec, base_config=base_config, log=log, on_trial=on_trial)
    tune_s = time.perf_counter() - clock
    log(
        f"best of {len(outcome.rows)} trials: {describe(outcome.best)} (objective {outcome.best_trial.objective:.4f}); "
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
