"""Train one task as a Ray Train job (the driver's side): submit it, with its workers (ray_worker.py) and the Ray
Data stream that feeds them (shard_rows.py), then load the trained set from its last checkpoint.

Checkpoints live under s3://<bucket>/checkpoints/. If a worker dies, Ray Train restarts the group
(FailureConfig) and the workers resume from the last epoch boundary.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from pipeline.errors import JobFailed
from pipeline.learn.config import TrainConfig
from pipeline.learn.methods import AnyModel, load_model
from pipeline.orchestrator.fit import Fitted
from pipeline.orchestrator.job_timings import TIMINGS, job_timings
from pipeline.orchestrator.ray_node import init_ray
from pipeline.orchestrator.ray_worker import train_loop_per_worker
from pipeline.orchestrator.shard_rows import rows_decided_alone, training_dataset
from pipeline.orchestrator.worker_metering import WORKER_MEASURES
from pipeline.registry.bucket import arrow_filesystem
from pipeline.registry.store import held_out_record
from pipeline.settings import Connection


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
    streamed = rows_decided_alone(record)
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
    return model, metrics | job_timings(metrics, clock, time.time())


def ray_fit(conn: Connection, scaling: ScalingSpec):
    """A `Fit` for `train_on_current` that trains as a Ray Train job."""

    def fit(model, task, parent, run, on_epoch) -> Fitted:
        trained, metrics = fit_with_ray_train(
            conn, model.config, parent.set_id, task.dataset_id, task.name, scaling, mlflow_run_id=run.run_id
        )
        last = trained.tasks[-1]
        run.set_tags({"ray_train.resumed_epochs": metrics.get("resumed_epochs", 0)})
        timings = {k: metrics[k] for k in TIMINGS + WORKER_MEASURES if k in metrics}
        return Fitted(trained, last.decision, last.logit, float(metrics.get("train_s", 0.0)), timings)

    return fit
