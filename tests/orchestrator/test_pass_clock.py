"""What a Ray Train worker reports of its own passes: rows, epochs, and its private memory through each pass."""

import torch

from pipeline.orchestrator.worker_metering import PassClock


class _Rows:
    """70 rows in batches of 10, and features of as many rows."""

    def __len__(self) -> int:
        return 70

    def iterate(self, batch_size, seed, device, rank=0, world_size=1):
        for start in range(0, 70, batch_size):
            labels = torch.zeros(min(batch_size, 70 - start), dtype=torch.long)
            yield {"x": torch.ones(len(labels), 4)}, labels

    def features(self, model):
        return torch.zeros(70, 4)


def test_pass_clock_counts_every_epochs_rows_and_meters_each_pass():
    clock = PassClock(_Rows())
    for _ in range(2):
        assert sum(len(labels) for _, labels in clock.iterate(10, 0, "cpu")) == 70
    clock.features(model=None)
    summary = clock.summary()
    assert summary["worker_epochs"] == 2 and summary["worker_rows_per_s"] > 0
    assert [p["pass"] for p in summary["worker_passes"]] == ["train", "train", "features"]
    for metered in summary["worker_passes"]:
        assert metered["peak_mb"] >= max(metered["start_mb"], metered["end_mb"]) > 0
    assert summary["worker_peak_private_mb"] >= max(p["peak_mb"] for p in summary["worker_passes"])
