"""What every worker of a Ray Train job runs: the core recipe, unchanged (DDP: gloo on CPU, NCCL on GPU).

Each worker loads the parent set from the bucket and trains on its shard of the task's training rows, which
Ray Data reads from the bucket, decodes and tokenises as it streams (shard_rows.py). After every epoch rank 0
reports a checkpoint of the task's progress (safetensors + JSON); at the end it reports the closed adapter set. A
group Ray Train restarted after a worker died resumes from the last epoch boundary; one that finds the finished
set reports it again instead of training twice.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import ray.train
import ray.train.torch
from ray.train import Checkpoint
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel

from pipeline.learn.config import TrainConfig
from pipeline.learn.methods import AnyModel, Trained, continuing, train_next_task
from pipeline.learn.recipe import EpochCallback, Progress, capture_progress
from pipeline.learn.task import Task
from pipeline.learn.training_rows import TaskRows, TrainingRows
from pipeline.orchestrator.job_timings import worker_moments
from pipeline.orchestrator.shard_rows import ShardRows
from pipeline.orchestrator.worker_metering import PassClock, peak_rss_mb
from pipeline.registry.bucket import Bucket
from pipeline.registry.current import load_parent
from pipeline.registry.store import AdapterSetStore, read_dataset
from pipeline.settings import Connection, with_keys


def write_progress(progress: Progress, directory: Path) -> None:
    save_file(progress.tensors, directory / "progress.safetensors")
    (directory / "progress.json").write_text(
        json.dumps({"phase": progress.phase, "epochs_done": progress.epochs_done})
    )


def read_progress(directory: Path) -> Progress:
    meta = json.loads((directory / "progress.json").read_text())
    return Progress(meta["phase"], meta["epochs_done"], load_file(directory / "progress.safetensors"))


def train_loop_per_worker(cfg: dict) -> None:
    """What every worker runs: plain PyTorch around the core's `train_task`.

    A task whose held-out rows are decided row by row streams: each rank iterates its Ray Data shard. Otherwise
    (a seeded split) every rank reads the whole, small task and trains its share of each epoch's seeded
    permutation, like a `DistributedSampler`."""
    started = time.time()
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    finished, resume = last_checkpoint(rank)
    if finished:
        return
    conn: Connection = with_keys(cfg["connection"])
    config = TrainConfig.from_dict(cfg["config"])
    sets = AdapterSetStore(Bucket.connect(conn), conn.cache_dir / f"rank{rank}")
    model = continuing(load_parent(sets, cfg["parent_set_id"], config=config).model, config)
    model.to(ray.train.torch.get_device())
    task, rows = worker_rows(cfg, conn, model, config)
    clock = PassClock(rows)
    tracker = mlflow_run(conn, cfg.get("mlflow_run_id")) if rank == 0 else None
    ready = time.time()
    result = train_on_rows(model, task, clock, resume, epoch_reporter(model, rank, tracker), rank, world)
    trained = time.time()
    report_finished(
        model,
        rank,
        {
            "done": 1,
            "resumed_epochs": resumed_epochs(config, model, len(clock), resume),
            **worker_moments(started, ready, trained),
            "keep": int(result.keep),
            "logit": result.logit,
            "trainable_parameters": result.trainable_parameters,
            "train_s": result.wall_time,
            "worker_peak_rss_mb": peak_rss_mb(),
            **clock.summary(),
        },
    )


def last_checkpoint(rank: int) -> tuple[bool, Progress | None]:
    """Whether an earlier attempt of this group finished (its set is then handed back, reported again), and
    otherwise the progress of the last epoch it checkpointed (None: start the task afresh)."""
    previous = ray.train.get_checkpoint()
    if previous is None:
        return False, None
    with previous.as_directory() as directory:
        if (Path(directory) / "manifest.json").exists():  # an earlier attempt finished: hand it back
            ray.train.report({"done": 1, "resumed_epochs": -1}, checkpoint=previous if rank == 0 else None)
            return True, None
        return False, read_progress(Path(directory))


def worker_rows(
    cfg: dict, conn: Connection, model: AnyModel, config: TrainConfig
) -> tuple[Task, TrainingRows]:
    """The task and this worker's training rows: streamed, its shard read, decoded and tokenised by Ray Data;
    else the whole task read into memory."""
    if cfg["held_out"] is not None:
        record = cfg["held_out"]
        task = Task(cfg["task_name"], record["classes"], [], [], [], [], cfg["dataset_id"])
        return task, ShardRows(
            ray.train.get_dataset_shard("train"), record["train_rows"], config.eval_batch_size
        )
    task = read_dataset(conn, cfg["dataset_id"], cfg["task_name"]).to_task()
    return task, TaskRows(model, task)


def mlflow_run(conn: Connection, run_id: str | None):
    """The task's MLflow run, for rank 0 alone: only it talks to MLflow (and pays for importing it)."""
    if not run_id:
        return None
    from pipeline.registry.lineage import Lineage

    return Lineage(conn).run(run_id)


def epoch_reporter(model: AnyModel, rank: int, tracker) -> EpochCallback:
    """After every epoch: the loss to MLflow (rank 0), and a report from every rank, rank 0's with a checkpoint of
    the task's progress."""
    selected = model.method.selects_by_task

    def on_epoch(phase: str, epoch: int, loss: float) -> None:
        if tracker is not None:
            tracker.log_metric(f"{phase}_loss", loss, step=epoch)
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            # A task-selected (Share) task restarts from its first epoch: its optimiser schedule is not checkpointed.
            if rank == 0 and not selected:
                write_progress(capture_progress(model, phase, epoch + 1), Path(tmp))
                checkpoint = Checkpoint.from_directory(tmp)
            # A barrier: every rank reports once per epoch.
            ray.train.report({"phase": phase, "epoch": epoch, "loss": loss}, checkpoint=checkpoint)

    return on_epoch


def train_on_rows(
    model: AnyModel,
    task: Task,
    rows: TrainingRows,
    resume: Progress | None,
    on_epoch: EpochCallback,
    rank: int,
    world: int,
) -> Trained:
    """Train the task on this worker's rows under DDP, whichever method the model runs."""

    def wrap(module):
        return DistributedDataParallel(module, find_unused_parameters=True) if world > 1 else module

    return train_next_task(
        model, task, on_epoch, wrap=wrap, rank=rank, world_size=world, resume=resume, rows=rows
    )


def resumed_epochs(config: TrainConfig, model: AnyModel, rows: int, resume: Progress | None) -> int:
    """Epochs an earlier attempt had done, which this one did not train again."""
    if resume is None:
        return 0
    phase1_epochs = config.task_epochs(len(model.tasks) - 1, rows)
    return resume.epochs_done + (phase1_epochs if resume.phase == "phase2" else 0)


def report_finished(model: AnyModel, rank: int, metrics: dict) -> None:
    """The last report: `metrics` from every rank, rank 0's with the closed adapter set as the checkpoint."""
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if rank == 0:
            model.save(tmp)
            checkpoint = Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)
