"""What a Ray Train worker measures of itself while it trains: each pass over its rows timed and metered
(`PassClock`), and the most memory its process ever held; reported beside the job's timings (job_timings.py)."""

from __future__ import annotations

import resource
import time

from pipeline.learn.training_rows import TrainingRows
from pipeline.orchestrator.worker_memory import private_mb

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


def peak_rss_mb() -> float:
    """The most this process ever held resident, parent set, backbone and the object-store pages it mapped
    included (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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

    def features(self, model, reference=None):
        metered = self._metered("features")
        features = self.rows.features(model, reference)
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
