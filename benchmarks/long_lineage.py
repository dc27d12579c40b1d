"""What a lineage's length costs a drop: a stream of two-class text tasks through `train --register`'s path on the
real embedded stack (SeaweedFS + MLflow on loopback), one after another, each on top of `current`.

    OMP_NUM_THREADS=1 python benchmarks/long_lineage.py [--tasks 40] [--train 16] [--test 8] [--out benchmarks/reports]

Tasks: WordNet 3.0's noun and verb lexicographer files (Debian's wordnet-base), two files a task, each file's
synsets cut into disjoint slices, so a file comes back with new rows (the default ridge head keeps one entry per
class). Per drop: its wall time and parts (`train_on_current`'s timings), the manifest's size, and the time of the
calls behind `litelora lineage --json` (every version and every alias move). The transaction runs in this process
(what `litelora train --register` runs, without the CLI's start-up), with the promotion guard off so every drop
extends the chain: this measures cost, not accuracy. Writes `<out>/long-lineage.{md,json,png}`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

BACKBONE = "sentence-transformers/all-MiniLM-L6-v2"
MIN_SYNSETS = 200


def lexicographer_files() -> dict[str, list[str]]:
    """Supersense → texts, nouns and verbs, the files with at least MIN_SYNSETS synsets."""
    from pipeline.data.domain_shift import DATA_VERB, VERB_LEXNAMES
    from pipeline.data.wordnet import parse_data_noun, parse_synsets

    files = parse_data_noun() | parse_synsets(DATA_VERB, VERB_LEXNAMES)
    return {name: texts for name, texts in sorted(files.items()) if len(texts) >= MIN_SYNSETS}


def stream_drops(count: int, train: int, test: int, seed: int = 0):
    """`count` two-class drops (TaskDataset): task t takes the next two files of a seeded order, each with the next
    unused slice of its synsets."""
    from pipeline.data.task_dataset import TaskDataset

    files = lexicographer_files()
    rng = random.Random(seed)
    for texts in files.values():
        rng.shuffle(texts)
    order = list(files)
    rng.shuffle(order)
    used = dict.fromkeys(order, 0)
    drops = []
    for t in range(count):
        pair = [order[(2 * t) % len(order)], order[(2 * t + 1) % len(order)]]
        split = {"train": ([], []), "test": ([], [])}
        for name in pair:
            start = used[name]
            used[name] += train + test
            rows = files[name][start : start + train + test]
            if len(rows) < train + test:
                raise ValueError(f"{name} has too few synsets for {count} tasks: lower --tasks or --train")
            for part, chunk in (("train", rows[:train]), ("test", rows[train:])):
                split[part][0].extend(chunk)
                split[part][1].extend([name] * len(chunk))
        payload = {}
        for part, (xs, ys) in split.items():
            buffer = io.BytesIO()
            pq.write_table(pa.table({"text": xs, "label": ys}), buffer)
            payload[f"{part}.parquet"] = buffer.getvalue()
        payload["task.json"] = json.dumps({"backbone": BACKBONE}).encode()
        drops.append(TaskDataset.from_files(f"lex-{t:03d}", payload))
    return drops


def lineage_listing_s(registry) -> float:
    """The calls `litelora lineage --json` makes: `current`, every version as a node, every alias move."""
    clock = time.perf_counter()
    registry.current(reconcile=False)
    registry.lineage.nodes()
    registry.lineage.moves()
    return time.perf_counter() - clock


def run(count: int, train: int, test: int, epochs: int) -> list[dict]:
    from pipeline.learn.config import TrainConfig
    from pipeline.orchestrator.transaction import train_on_current
    from pipeline.registry.bucket import Bucket
    from pipeline.registry.store import Registry
    from pipeline.settings import connection, load_settings

    name = f"lineage-{uuid.uuid4().hex[:8]}"
    os.environ["LITELORA_BUCKET"] = os.environ["LITELORA_REGISTERED_MODEL"] = name
    conn = connection(load_settings())
    Bucket.connect(conn).client.create_bucket(Bucket=name)
    registry = Registry.connect(conn)
    config = replace(TrainConfig.for_backbone(BACKBONE), epochs=epochs)
    rows = []
    for t, dataset in enumerate(stream_drops(count, train, test)):
        started = time.perf_counter()
        result = train_on_current(
            dataset, registry, config if t == 0 else None, overrides={"epochs": epochs}, max_accuracy_drop=1.0
        )
        step_s = time.perf_counter() - started
        set_id = registry.sets.set_id_from_uri(result.set_uri)
        manifest = registry.bucket.get(registry.sets.manifest_key(set_id))
        rows.append(
            {
                "task": t,
                "version": result.version,
                "decision": result.decision,
                "active_adapters": result.active_adapters,
                "step_s": step_s,
                "outside_training_s": step_s - result.timings.get("compute_s", 0.0),
                "manifest_bytes": len(manifest),
                "lineage_s": lineage_listing_s(registry),
                "final_accuracy": result.final_accuracy,
                **result.timings,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--train", type=int, default=16, help="Training rows per class.")
    parser.add_argument("--test", type=int, default=8, help="Held-out rows per class.")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/reports"))
    args = parser.parse_args()

    from pipeline.bench.stamp import commit_stamp
    from pipeline.stack import embedded
    from pipeline.stack.process import free_port

    stamp = commit_stamp()
    with tempfile.TemporaryDirectory(prefix="litelora-lineage-") as home:
        embedded.up(Path(home), ports={"s3": free_port(), "mlflow": free_port()})
        try:
            os.environ.update(
                embedded.env_exports(Path(home)) | {"LITELORA_HOME": home, "HF_HUB_OFFLINE": "1"}
            )
            rows = run(args.tasks, args.train, args.test, args.epochs)
        finally:
            embedded.down(Path(home))
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "commit": stamp,
        "command": " ".join(["python", *sys.argv]),
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "cpus": os.cpu_count(),
        "tasks": rows,
    }
    (args.out / "long-lineage.json").write_text(json.dumps(report, indent=1))
    write_report(report, args.out)


def at(rows: list[dict], task: int, key: str) -> float:
    """`key` at task index `task` (1-based, as "task 5" reads), the mean over it and its neighbours."""
    window = [r[key] for r in rows[max(0, task - 2) : task + 1] if key in r]
    return sum(window) / len(window) if window else float("nan")


PARTS = ("load_s", "compute_s", "evaluate_s", "frozen_reference_s", "register_s")


def write_report(report: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["tasks"]
    last = len(rows)
    early = min(5, last)
    ratio = at(rows, last, "step_s") / at(rows, early, "step_s")
    lines = [
        "# A long lineage: what a drop costs against the number of tasks before it",
        "",
        (
            f"`{report['command']}` at commit {report['commit']}; {report['cpus']} CPUs shared with other work, "
            f"OMP_NUM_THREADS={report['threads']}, the embedded stack on loopback, MiniLM, one epoch per phase, in "
            "one process (what `litelora train --register` runs, without its start-up), the promotion guard off. "
            "Times in seconds; evaluation is scoring every task so far (frozen reference included), lineage is the "
            "calls behind `litelora lineage --json`."
        ),
        "",
        (
            f"**Per-drop wall time at task {last} / at task {early}: × {ratio:.2f}** (each the mean of that task and "
            "the two before it)."
        ),
        "",
        (
            "| task | decision | adapters | wall | load | training | evaluation | frozen ref. | register "
            "| manifest (KB) | lineage |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        parts = " | ".join(f"{r.get(k, float('nan')):.1f}" for k in PARTS)
        lines.append(
            f"| {r['task'] + 1} | {r['decision']} | {r['active_adapters']} | {r['step_s']:.1f} | {parts} | "
            f"{r['manifest_bytes'] / 1024:.1f} | {r['lineage_s']:.2f} |"
        )
    (out / "long-lineage.md").write_text("\n".join(lines) + "\n")

    index = [r["task"] + 1 for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for key, label in (("step_s", "wall"), ("evaluate_s", "evaluation"), ("register_s", "register")):
        axes[0].plot(index, [r.get(key, float("nan")) for r in rows], "o-", label=label)
    axes[0].set(xlabel="task", ylabel="seconds", title="per drop")
    axes[0].legend()
    axes[1].plot(index, [r["manifest_bytes"] / 1024 for r in rows], "o-")
    axes[1].set(xlabel="task", ylabel="KB", title="manifest size")
    axes[2].plot(index, [r["lineage_s"] for r in rows], "o-")
    axes[2].set(xlabel="task", ylabel="seconds", title="`litelora lineage` calls")
    fig.tight_layout()
    fig.savefig(out / "long-lineage.png", dpi=100)


if __name__ == "__main__":
    main()
