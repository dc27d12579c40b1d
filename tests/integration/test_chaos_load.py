"""Twenty drops at once, good, bad and duplicate, under two `litelora watch` processes: every drop ends in
exactly one terminal state, in arrival order, and the lineage is one chain in that order."""

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.data.task_dataset import TaskDataset, write_drop
from pipeline.data.wordnet import split_wordnet20
from pipeline.learn.backbone import BackboneConfig
from pipeline.learn.config import TrainConfig
from pipeline.orchestrator.ledger import Ledger
from pipeline.orchestrator.transaction import train_on_current
from pipeline.orchestrator.watcher import INCOMING, put_drop
from pipeline.registry.bucket import Bucket
from pipeline.registry.lineage import Lineage
from pipeline.registry.store import Registry

pytestmark = [pytest.mark.integration, pytest.mark.chaos]
runner = CliRunner()
DROPS = 20


def _parquet(**columns) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def _good(task, index: int) -> dict[str, bytes]:
    """A real WordNet task, its classes renamed per drop so that every good drop brings new classes."""
    rows = slice(index % 3, None, 3)
    return {
        split: _parquet(text=xs[rows], label=[f"d{index:02d}-{task.classes[y]}" for y in ys[rows]])
        for split, xs, ys in (
            ("train.parquet", task.train_inputs, task.train_labels),
            ("test.parquet", task.test_inputs, task.test_labels),
        )
    }


BAD = [
    ({"train.parquet": b"PAR1 not parquet at all"}, "not a readable parquet"),
    ({"train.parquet": _parquet(text=["a", "b"], label=["x", "x"])}, "single class"),
    ({"train.parquet": _parquet(text=["a", "b"], label=[0.5, 1.5])}, "integers or strings"),
    ({"train.parquet": _parquet(text=[["a"], ["b"]], label=["x", "y"])}, "has type list"),
    ({"test.parquet": _parquet(text=["a"], label=["x"])}, "no train.parquet"),
]


def _rss(procs: list[psutil.Popen]) -> int:
    total = 0
    for proc in procs:
        try:
            family = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for p in family:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
    return total


def test_twenty_drops_under_two_watchers_end_once_each_in_arrival_order(
    conn, tiny_backbone_dir, chaos_report, tmp_path
):
    config = TrainConfig(
        backbone=BackboneConfig(name=str(tiny_backbone_dir)), epochs=1, batch_size=16, seed=0
    )
    tasks = split_wordnet20(1993, "ci")
    seed_dir = write_drop(tasks[0], tmp_path / "seed")
    base = train_on_current(
        TaskDataset.from_dir(seed_dir, name="seed"), Registry.connect(conn), config, max_accuracy_drop=1.0
    )

    plan: list[tuple[str, dict, str]] = []  # (task, files, expected state)
    for i in range(DROPS):
        if i % 4 == 3:
            files, _ = BAD[(i // 4) % len(BAD)]
            plan.append((f"load-{i:02d}", files, "quarantined"))
        elif i in (10, 16):  # the bytes of an earlier good drop, under a new name
            plan.append((f"load-{i:02d}", plan[i - 10][1], "duplicate"))
        else:
            plan.append((f"load-{i:02d}", _good(tasks[1 + i % 4], i), "registered"))

    bucket = Bucket.connect(conn)
    for task, files, _ in plan:  # one after the other: arrival order is this order
        put_drop(bucket, task, files)

    started = time.monotonic()
    logs = [tmp_path / f"watcher-{i}.log" for i in range(2)]
    watchers = [
        psutil.Popen(
            [
                sys.executable,
                "-m",
                "pipeline.cli",
                "watch",
                "--workers",
                "0",
                "--poll",
                "0.5",
                "--guard",
                "1",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log.open("wb"),
            env=os.environ.copy(),
        )
        for log in logs
    ]
    peak, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.25):
            peak = max(peak, _rss(watchers))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and bucket.list(INCOMING):
            if any(w.poll() is not None for w in watchers):
                break
            time.sleep(1)
        wall = time.monotonic() - started
    finally:
        done.set()
        sampler.join()
        exited = [w.poll() for w in watchers]
        for w in watchers:
            if w.poll() is None:
                w.send_signal(signal.SIGINT)
        psutil.wait_procs(watchers, timeout=60)
    assert exited == [None, None], "a watcher exited early:\n" + "\n".join(
        log.read_text()[-3000:] for log in logs
    )
    assert bucket.list(INCOMING) == [], "every drop was picked up"

    drops = json.loads(runner.invoke(app, ["status", "--json"]).stdout)["drops"]
    by_task = {}
    for row in drops:
        assert row["task"] not in by_task, f"{row['task']} appears twice in the ledger"
        by_task[row["task"]] = row
    assert {t: by_task[t]["state"] for t, _, _ in plan} == {t: s for t, _, s in plan}
    for (task, files, state), i in zip(plan, range(DROPS), strict=True):
        if state == "quarantined":
            assert BAD[(i // 4) % len(BAD)][1] in by_task[task]["reason"]

    entries = [e for e in Ledger(bucket).entries() if e.task.startswith("load-")]
    assert all(len(e.claims) == 1 for e in entries), "no dataset was claimed twice"
    claimed = sorted(entries, key=lambda e: e.claims[0]["at"])
    assert [e.task for e in claimed] == sorted(e.task for e in entries), "claims follow arrival order"

    lineage = Lineage(conn)
    chain = [v for v in lineage.versions() if v.version != base.version]
    good = [t for t, _, s in plan if s == "registered"]
    assert [v.tags["task"] for v in chain] == good, "one version per good drop, in arrival order"
    assert [v.tags["parent_version"] for v in chain] == [base.version] + [v.version for v in chain[:-1]]
    assert lineage.current().version == chain[-1].version
    names = [log.read_text().split(" as ", 1)[1].split()[0] for log in logs]  # "watching s3://… as watcher-…"
    claims = [sum(1 for e in entries if e.claims[0]["watcher"] == name) for name in names]
    assert sum(claims) == len(entries)
    chaos_report(
        case=f"{DROPS} drops at once, two watcher processes",
        expected="each drop exactly once, in arrival order; one chain of versions",
        observed=f"{len(good)} registered, {sum(s == 'quarantined' for *_, s in plan)} quarantined, "
        f"{sum(s == 'duplicate' for *_, s in plan)} duplicates, in arrival order; the watchers claimed "
        f"{' and '.join(map(str, claims))} (the other found the oldest drop held and waited); "
        f"wall {wall:.0f} s; peak RSS of both watchers {peak / 2**20:.0f} MiB",
        recover_s=None,
    )
    assert peak > 0
