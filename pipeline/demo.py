"""`litelora demo`: the whole product on one machine, on real data.

Start the embedded stack, drop the five Split-WordNet-20 demo tasks into the bucket one at a time, let the
orchestrator train each as a 2-worker Ray Train job against the current adapter set and register it in MLflow,
then show the lineage and where to look. With `images`, the five Split-FashionMNIST tasks follow as image folders
(train/<class>/<n>.png) in a second stream, `images`, on EfficientNet-Lite0.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from pipeline.data.fashion_mnist import split_fashion_mnist
from pipeline.data.image_folder import as_image_folder
from pipeline.data.stream_names import DEFAULT_STREAM
from pipeline.data.task_dataset import drop_files, write_drop
from pipeline.data.wordnet import ORDERINGS, split_wordnet20
from pipeline.learn.config import TrainConfig
from pipeline.orchestrator.transaction import fit_with, train_on_current
from pipeline.orchestrator.watcher import WatchConfig, Watcher, put_drop
from pipeline.registry.store import Registry
from pipeline.settings import Connection

IMAGE_STREAM = {"stream": "images", "backbone": "efficientnet-lite0"}


def text_drops(tier: str, tasks: int) -> list[tuple[str, dict[str, bytes], str]]:
    """(task name, files, what it holds) of the Split-WordNet-20 demo tasks, as parquet drops."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, task in enumerate(split_wordnet20(ORDERINGS[0], tier)[:tasks]):
            folder = write_drop(task, Path(tmp) / f"wordnet-{i}")
            files = drop_files(folder)
            out.append((f"wordnet-{i}", files, f"{len(task.classes)} classes: {', '.join(task.classes)}"))
    return out


def image_drops(tier: str, tasks: int) -> list[tuple[str, dict[str, bytes], str]]:
    """The Split-FashionMNIST demo tasks as image folders in the `images` stream."""
    out = []
    for i, task in enumerate(split_fashion_mnist(ORDERINGS[0], tier)[:tasks]):
        files = {"task.json": json.dumps(IMAGE_STREAM).encode(), **as_image_folder(task)}
        out.append((f"fashion-{i}", files, f"image folder, stream images: {', '.join(task.classes)}"))
    return out


def run_demo(
    conn: Connection,
    *,
    tier: str = "quick",
    workers: int = 2,
    tasks: int = 5,
    images: bool = False,
    config: TrainConfig | None = None,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Drop the first `tasks` demo tasks one at a time (then as many image tasks with `images`) and train each;
    `config` is the text lineage's recipe (None: the shipped defaults; the image stream always uses its own)."""
    registry = Registry.connect(conn)
    fit = fit_with(conn, workers)

    def trainer(dataset, stream_registry):
        recipe = config if stream_registry.stream == DEFAULT_STREAM else None
        return train_on_current(dataset, stream_registry, recipe, fit=fit)

    watcher = Watcher(registry, WatchConfig(poll_s=1.0), trainer=trainer, log=log)
    if workers > 0:
        log(f"each task trains as a {workers}-worker Ray Train job; the first one also starts Ray (≈ 20 s)")
    done = []
    for name, files, what in text_drops(tier, tasks) + (image_drops(tier, tasks) if images else []):
        prefix = put_drop(registry.bucket, name, files)
        log(f"dropped s3://{conn.bucket}/{prefix} ({what})")
        done += watcher.run(once=True)
    return done
