"""Train one task as a Ray Train job: the core recipe, unchanged, in every worker (DDP: gloo on CPU, NCCL on GPU).

Each worker loads the parent set from the bucket and trains on its shard of the task's training rows, which
Ray Data reads from the bucket, decodes and tokenises as it streams (shard_rows.py). After every epoch rank 0 reports a checkpoint of the task's progress (safetensors + JSON, under
s3://<bucket>/checkpoints/); at the end it reports the closed adapter set. If a worker dies, Ray Train restarts
the group (FailureConfig) and the workers resume from the last epoch boundary; a group that finds the finished
set reports it again instead of training twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import ray
import ray.train
import ray.train.torch
from ray.train import Checkpoint, CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel

from pipeline.errors import JobFailed
from pipeline.learn.config import TrainConfig
from pipeline.learn.methods import AnyModel, continuing, load_model
from pipeline.learn.recipe import Progress, capture_progress, train_task
from pipeline.learn.task import Task
from pipeline.learn.training_rows import TaskRows, TrainingRows
from pipeline.methods.share.model import TaskSelectedModel, train_selected_task
from pipeline.orchestrator.shard_rows import ShardRows, streams, training_dataset
from pipeline.orchestrator.worker_memory import private_mb
from pipeline.registry.bucket import Bucket, arrow_filesystem
from pipeline.registry.store import AdapterSetStore, held_out_record, read_dataset
from pipeline.settings import Connection, with_keys
from pipeline.shutdown import sigterm_interrupts


@dataclass
class ScalingSpec:
    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float | None = None
    """CPUs each worker reserves (with a GPU, beside it). Default: 0.5 without a GPU (fractional on small
    machines: with 1 CPU per worker on 2 cores, Ray's data tasks starve), Ray's own with one."""
    max_failures: int = 2

    def resources_per_worker(self) -> dict | None:
        if self.use_gpu:
            return None if self.cpus_per_worker is None else {"CPU": self.cpus_per_worker, "GPU": 1}
        return {"CPU": 0.5 if self.cpus_per_worker is None else self.cpus_per_worker}


def init_ray(home: Path) -> None:
    """Start (or join, with RAY_ADDRESS) Ray once per process, loopback-only and quiet.

    Call it from the main thread: Ray installs its signal handlers only there, and a driver started from
    another thread was seen to exit silently at its next Train job."""
    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    # The Train controller polls its workers this often (default 2 s); every job ends with a few polls, which
    # cost ~4 s a task. Ray Train forwards RAY_TRAIN_* variables from the driver to its controller.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
        sigterm_interrupts()  # ray.init replaced the handler with one that dumps a native stack
        return
    # A node of our own, on loopback only: nobody else can reach it to present a token. A cluster named by
    # RAY_ADDRESS keeps its own authentication (token mode: RAY_AUTH_TOKEN or ~/.ray/auth_token).
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    # Unix socket paths are limited to 107 bytes: keep Ray's session dir short, keyed by the state dir.
    temp = Path(tempfile.gettempdir()) / f"llray-{hashlib.sha256(str(home).encode()).hexdigest()[:8]}"
    ray.init(
        _node_ip_address="127.0.0.1",
        _temp_dir=str(temp),
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    sigterm_interrupts()
    if ray.util.get_node_ip_address() != "127.0.0.1":  # ray was imported before `pipeline` (see its __init__)
        warnings.warn(
            f"the local Ray node listens on {ray.util.get_node_ip_address()}, not only on loopback: "
            "set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before Python imports ray",
            stacklevel=2,
        )


def write_progress(progress: Progress, directory: Path) -> None:
    save_file(progress.tensors, directory / "progress.safetensors")
    (directory / "progress.json").write_text(
        json.dumps({"phase": progress.phase, "epochs_done": progress.epochs_done})
    )


def read_progress(directory: Path) -> Progress:
    meta = json.loads((directory / "progress.json").read_text())
    return Progress(meta["phase"], meta["epochs_done"], load_file(directory / "progress.safetensors"))


class PassClock:
    """A worker's training rows, timed and metered: each training epoch's wall time, the part of it spent waiting
    for its first batch (a streamed epoch starts by reading and shuffling), its rows on this worker, and the
    worker's private memory through every pass (sampled every `SAMPLE_BATCHES` batches and at its end)."""

    SAMPLE_BATCHES = 32

    def __init__(self, rows: TrainingRows):
        self.rows, self.start_mb = rows, private_mb()
        self.passes: list[dict] = []
        """Per pass: its kind, the worker's private memory (MB) at its start, highest and at its end, and for a
        training epoch its seconds, wait for the first batch and rows."""

    def __len__(self) -> int:
        return len(self.rows)

    def _metered(self, kind: str) -> dict:
        now = private_mb()
        self.passes.append({"pass": kind, "start_mb": now, "peak_mb": now, "end_mb": now})
        return self.passes[-1]

    @staticmethod
    def _sample(metered: dict) -> None:
        now = private_mb()
        metered["peak_mb"], metered["end_mb"] = max(metered["peak_mb"], now), now

    def iterate(self, batch_size, seed, device, rank=0, world_size=1):
        started, first, count = time.perf_counter(), None, 0
        metered = self._metered("train")
        for step, (inputs, labels) in enumerate(
            self.rows.iterate(batch_size, seed, device, rank, world_size)
        ):
            first = time.perf_counter() - started if first is None else first
            count += len(labels)
            if step % self.SAMPLE_BATCHES == 0:
                self._sample(metered)
            yield inputs, labels
        metered |= {"seconds": time.perf_counter() - started, "first_batch_s": first or 0.0, "rows": count}
        self._sample(metered)

    def features(self, model):
        metered = self._metered("features")
        features = self.rows.features(model)
        self._sample(metered)
        return features

    def summary(self) -> dict:
        """Mean epoch and start times, and rows per second once an epoch's batches flow (the training loop's work
        on them included)."""
        epochs = [p for p in self.passes if p["pass"] == "train"]
        n = max(len(epochs), 1)
        flowing = sum(e["seconds"] - e["first_batch_s"] for e in epochs)
        return {
            "worker_epochs": len(epochs),
            "worker_epoch_s": sum(e["seconds"] for e in epochs) / n,
            "worker_epoch_start_s": sum(e["first_batch_s"] for e in epochs) / n,
            "worker_rows_per_s": sum(e["rows"] for e in epochs) / flowing if flowing else 0.0,
            "worker_peak_private_mb": max([self.start_mb, *(p["peak_mb"] for p in self.passes)]),
            "worker_passes": self.passes,
        }


def train_loop_per_worker(cfg: dict) -> None:
    """What every worker runs: plain PyTorch around the core's `train_task`.

    A task whose held-out rows are decided row by row streams: each rank iterates its Ray Data shard. Otherwise
    (a seeded split) every rank reads the whole, small task and trains its share of each epoch's seeded
    permutation, like a `DistributedSampler`."""
    started = time.time()
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    resume = None
    previous = ray.train.get_checkpoint()
    if previous is not None:
        with previous.as_directory() as directory:
            if (Path(directory) / "manifest.json").exists():  # an earlier attempt finished: hand it back
                ray.train.report(
                    {"done": 1, "resumed_epochs": -1}, checkpoint=previous if rank == 0 else None
                )
                return
            resume = read_progress(Path(directory))

    conn: Connection = with_keys(cfg["connection"])
    bucket = Bucket.connect(conn)
    config = TrainConfig.from_dict(cfg["config"])
    parent = None
    if cfg["parent_set_id"]:
        parent = load_model(
            AdapterSetStore(bucket, conn.cache_dir / f"rank{rank}").fetch(cfg["parent_set_id"])
        )
        parent.reconfigure(config)
    model = continuing(parent, config)
    model.to(ray.train.torch.get_device())
    selected = isinstance(model, TaskSelectedModel)
    if cfg["held_out"] is not None:  # streamed: this worker's shard, read, decoded and tokenised by Ray Data
        record = cfg["held_out"]
        task = Task(cfg["task_name"], record["classes"], [], [], [], [], cfg["dataset_id"])
        rows = ShardRows(ray.train.get_dataset_shard("train"), record["train_rows"], config.eval_batch_size)
    else:
        task = read_dataset(conn, cfg["dataset_id"], cfg["task_name"]).to_task()
        rows = TaskRows(model, task)
    rows = clock = PassClock(rows)

    def wrap(module):
        return DistributedDataParallel(module, find_unused_parameters=True) if world > 1 else module

    tracker = None
    if rank == 0 and cfg.get("mlflow_run_id"):  # only rank 0 talks to MLflow (and pays for importing it)
        from pipeline.registry.lineage import Lineage

        tracker = Lineage(conn).run(cfg["mlflow_run_id"])
    ready = time.time()

    def on_epoch(phase: str, epoch: int, loss: float) -> None:
        if tracker is not None:
            tracker.log_metric(f"{phase}_loss", loss, step=epoch)
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            # A Share task restarts from its first epoch: its optimiser schedule is not checkpointed.
            if rank == 0 and not selected:
                write_progress(capture_progress(model, phase, epoch + 1), Path(tmp))
                checkpoint = Checkpoint.from_directory(tmp)
            # A barrier: every rank reports once per epoch.
            ray.train.report({"phase": phase, "epoch": epoch, "loss": loss}, checkpoint=checkpoint)

    if selected:
        result = train_selected_task(model, task, on_epoch, wrap=wrap, rank=rank, world_size=world, rows=rows)
        keep, logit = True, 0.0
    else:
        result = train_task(
            model, task, wrap=wrap, rank=rank, world_size=world, on_epoch=on_epoch, resume=resume, rows=rows
        )
        keep, logit = result.decision.keep, result.decision.logit
    trained = time.time()
    phase1_epochs = config.task_epochs(len(model.tasks) - 1, len(rows))
    resumed_epochs = (
        0 if resume is None else resume.epochs_done + (phase1_epochs if resume.phase == "phase2" else 0)
    )
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            model.save(tmp)
            checkpoint = Checkpoint.from_directory(tmp)
        ray.train.report(
            {
                "done": 1,
                "resumed_epochs": resumed_epochs,
                "worker_started_at": started,
                "worker_ready_at": ready,
                "worker_trained_at": trained,
                "keep": int(keep),
                "logit": logit,
                "trainable_parameters": result.trainable_parameters,
                "train_s": result.wall_time,
                # Linux reports kilobytes: the most this worker process ever held resident, parent set, backbone and
                # the object-store pages it mapped included.
                "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                **clock.summary(),
            },
            checkpoint=checkpoint,
        )


def fit_with_ray_train(
    conn: Connection,
    config: TrainConfig,
    parent_set_id: str | None,
    dataset_id: str,
    task_name: str,
    scaling: ScalingSpec,
    mlflow_run_id: str | None = None,
) -> tuple[AnyModel, dict]:
    """Run the job; returns the trained model (loaded from the job's checkpoint) and rank 0's final metrics."""
    clock = time.time()
    init_ray(conn.cache_dir.parent)
    storage_path, filesystem = f"{conn.bucket}/checkpoints", arrow_filesystem(conn)
    record = held_out_record(conn, dataset_id)
    streamed = streams(record)
    datasets = (
        {"train": training_dataset(conn, dataset_id, record, config.backbone, config.seed)}
        if streamed
        else None
    )
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": config.to_dict(),
            "parent_set_id": parent_set_id,
            "dataset_id": dataset_id,
            "task_name": task_name,
            "mlflow_run_id": mlflow_run_id,
            "held_out": record if streamed else None,
            # Endpoints and bucket travel with the job, never the keys: Ray's dashboard shows this config.
            "connection": conn.without_keys(),
        },
        datasets=datasets,
        scaling_config=ScalingConfig(
            num_workers=scaling.num_workers,
            use_gpu=scaling.use_gpu,
            resources_per_worker=scaling.resources_per_worker(),
        ),
        run_config=RunConfig(
            name=f"{task_name}-{dataset_id[:12]}",
            storage_path=storage_path,
            storage_filesystem=filesystem,
            failure_config=FailureConfig(max_failures=scaling.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
    )
    result = trainer.fit()
    if result.checkpoint is None:
        raise JobFailed(f"Ray Train job for {task_name} ended without a checkpoint: {result.error}")
    with result.checkpoint.as_directory() as directory:
        model = load_model(directory)
    metrics = dict(result.metrics or {})
    metrics["ray_job_s"] = time.time() - clock
    if "worker_started_at" in metrics:  # absent when a restarted group handed back a finished set
        metrics |= {
            "ray_start_s": metrics["worker_started_at"] - clock,  # Ray start, scheduling, worker processes
            "worker_setup_s": metrics["worker_ready_at"]
            - metrics["worker_started_at"],  # parent set, backbone, data
            "compute_s": metrics["worker_trained_at"] - metrics["worker_ready_at"],  # the phase loops
            "ray_finish_s": clock
            + metrics["ray_job_s"]
            - metrics["worker_trained_at"],  # final checkpoint, teardown
        }
    return model, metrics


TIMINGS = ("ray_start_s", "worker_setup_s", "compute_s", "ray_finish_s", "ray_job_s")
WORKER_MEASURES = (
    "worker_peak_rss_mb",
    "worker_peak_private_mb",
    "worker_epoch_s",
    "worker_epoch_start_s",
    "worker_rows_per_s",
    "worker_epochs",
    "worker_passes",
)
"""What rank 0 measured of itself (the ranks do the same work): reported beside the timings."""


def ray_fit(conn: Connection, scaling: ScalingSpec):
    """A `Fit` for `train_on_current` that trains as a Ray Train job."""
    from pipeline.orchestrator.transaction import Fitted

    def fit(model, task, parent, run, on_epoch) -> Fitted:
        trained, metrics = fit_with_ray_train(
            conn, model.config, parent.set_id, task.dataset_id, task.name, scaling, mlflow_run_id=run.run_id
        )
        last = trained.tasks[-1]
        run.set_tags({"ray_train.resumed_epochs": metrics.get("resumed_epochs", 0)})
        timings = {k: metrics[k] for k in TIMINGS + WORKER_MEASURES if k in metrics}
        return Fitted(trained, last.decision, last.logit, float(metrics.get("train_s", 0.0)), timings)

    return fit
