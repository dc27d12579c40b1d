"""What a Ray Train worker reports of its own passes: rows, epochs, and its private memory through each pass."""

import torch

from pipeline.orchestrator.worker_metering import PassClock

HELD_MB = 64
"""What the rows hold while a pass runs and free at its end (a shuffle buffer, a block of images)."""


class _Rows:
    """70 rows in batches of 10, and features of as many rows; each pass holds `HELD_MB` only while it runs."""

    def __len__(self) -> int:
        return 70

    def iterate(self, batch_size, seed, device, rank=0, world_size=1):
        held = torch.ones(HELD_MB * 2**20 // 4)  # written, so resident
        for start in range(0, 70, batch_size):
            labels = torch.zeros(min(batch_size, 70 - start), dtype=torch.long)
            yield {"x": torch.ones(len(labels), 4)}, labels
        del held

    def features(self, model, reference=None):
        held = torch.ones(HELD_MB * 2**20 // 4)
        self.kept = torch.ones(HELD_MB * 2**20 // 4)  # what the features keep after the pass
        del held
        return torch.zeros(70, 4)


def test_pass_clock_counts_every_epochs_rows_and_meters_each_pass():
    rows = _Rows()
    clock = PassClock(rows)
    for _ in range(2):
        assert sum(len(labels) for _, labels in clock.iterate(10, 0, "cpu")) == 70
    clock.features(model=None)
    summary = clock.summary()
    train, _, features = summary["worker_passes"]
    assert [p["pass"] for p in summary["worker_passes"]] == ["train", "train", "features"]
    assert summary["worker_epochs"] == 2 and [p["rows"] for p in summary["worker_passes"][:2]] == [70, 70]
    # Rows per second once batches flow: both epochs' rows over both epochs' time after their first batch.
    flowing = sum(p["seconds"] - p["first_batch_s"] for p in summary["worker_passes"][:2])
    assert summary["worker_rows_per_s"] == 140 / flowing
    # A training pass's peak sees what it held mid-pass, though it started and ended without it.
    assert train["peak_mb"] - max(train["start_mb"], train["end_mb"]) > 0.8 * HELD_MB
    # The features pass ends holding what it keeps.
    assert features["end_mb"] - features["start_mb"] > 0.8 * HELD_MB
    assert summary["worker_peak_private_mb"] == max(p["peak_mb"] for p in summary["worker_passes"])
