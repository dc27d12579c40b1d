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
from pipeline.orchestrator.ray_train import ScalingSpec, ray_fit
from pipeline.orchestrator.step import train_on_current
from pipeline.orchestrator.watcher import INCOMING, READY, READY_BODY, WatchConfig, Watcher
from pipeline.registry.objects import Bucket
from pipeline.settings import Connection


def run_demo(conn: Connection, *, tier: str = "quick", workers: int = 2, tasks: int = 5,
             log: Callable[[str], None] = print) -> list[dict]:
    stream = split_wordnet20(ORDERINGS[0], tier)[:tasks]
    bucket = Bucket.connect(conn)
    fit = ray_fit(conn, ScalingSpec(num_workers=workers)) if workers > 0 else None
    trainer = (lambda ds: train_on_current(ds, conn, fit=fit)) if fit else None
    watcher = Watcher(conn, WatchConfig(poll_s=1.0), trainer=trainer, log=log)
    if fit:
        log(f"each task trains as a {workers}-worker Ray Train job; the first one also starts Ray (≈ 20 s)")
    done = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, task in enumerate(stream):
            name = f"wordnet-{i}"
            folder = write_drop(task, Path(tmp) / name)
            for file in DATA_FILES:
                if (folder / file).exists():
                    bucket.put(f"{INCOMING}{name}/{file}", (folder / file).read_bytes())
            bucket.put(f"{INCOMING}{name}/{READY}", READY_BODY)
            log(f"dropped s3://{conn.bucket}/{INCOMING}{name}/ ({len(task.classes)} classes: {', '.join(task.classes)})")
            done += watcher.run(once=True)
    return done
