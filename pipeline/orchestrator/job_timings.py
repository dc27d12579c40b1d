"""Where a Ray Train job's wall time went, from the moments rank 0 reports (worker_moments) and the driver's
clock around the job: Ray's start, the worker's setup, the training loops, and Ray's finish."""

from __future__ import annotations

TIMINGS = ("ray_start_s", "worker_setup_s", "compute_s", "ray_finish_s", "ray_job_s")


def worker_moments(started: float, ready: float, trained: float) -> dict:
    """What a worker reports of its own clock (seconds since the epoch): when it started, was ready to train (parent
    set, backbone and data loaded) and had trained."""
    return {"worker_started_at": started, "worker_ready_at": ready, "worker_trained_at": trained}


def job_timings(metrics: dict, submitted: float, ended: float) -> dict:
    """The job's wall time (the driver's clock from `submitted` to `ended`) and, if rank 0 reported its moments
    (not when a restarted group handed back a finished set), its four parts."""
    job = {"ray_job_s": ended - submitted}
    if "worker_started_at" not in metrics:
        return job
    started, ready, trained = (
        metrics["worker_started_at"],
        metrics["worker_ready_at"],
        metrics["worker_trained_at"],
    )
    return job | {
        "ray_start_s": started - submitted,  # Ray start, scheduling, worker processes
        "worker_setup_s": ready - started,  # parent set, backbone, data
        "compute_s": trained - ready,  # the phase loops
        "ray_finish_s": submitted + job["ray_job_s"] - trained,  # final checkpoint, teardown
    }
