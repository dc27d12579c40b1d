"""`litelora demo`: the whole product on one machine, on real data.

Start the embedded stack, drop the five Split-WordNet-20 demo tasks into the bucket one at a time, let the
orchestrator train each as a 2-worker Ray Train job against the current adapter set and register it in MLflow,
then show the lineage and where to look.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

from pipeline.data.task_dataset import DATA_FILES, write_drop
from pipeline.data.wordnet import ORDERINGS, split_wordnet20
from pipeline.learn.config import TrainConfig
from pipeline.orchestrator.transaction import fit_with, train_on_current
from pipeline.orchestrator.watcher import WatchConfig, Watcher, put_drop
from pipeline.registry.store import Registry
from pipeline.settings import Connection


def run_demo(
    conn: Connection,
    *,
    tier: str = "quick",
    workers: int = 2,
    tasks: int = 5,
    config: TrainConfig | None = None,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Drop the first `tasks` demo tasks one at a time and train each; `config` is the new lineage's recipe
    (None: the shipped defaults)."""
    stream = split_wordnet20(ORDERINGS[0], tier)[:tasks]
    registry = Registry.connect(conn)
    bucket = registry.bucket
    fit = fit_with(conn, workers)

    def trainer(dataset, stream_registry):
        return train_on_current(dataset, stream_registry, config, fit=fit)

    watcher = Watcher(registry, WatchConfig(poll_s=1.0), trainer=trainer, log=log)
    if workers > 0:
        log(f"each task trains as a {workers}-worker Ray Train job; the first one also starts Ray (≈ 20 s)")
    done = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, task in enumerate(stream):
            name = f"wordnet-{i}"
            folder = write_drop(task, Path(tmp) / name)
            prefix = put_drop(
                bucket, name, {f: (folder / f).read_bytes() for f in DATA_FILES if (folder / f).exists()}
            )
            log(
                f"dropped s3://{conn.bucket}/{prefix} ({len(task.classes)} classes: {', '.join(task.classes)})"
            )
            done += watcher.run(once=True)
    return done
