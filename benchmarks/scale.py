"""How the service scales with the size of a task: the same stream at 1×, 4× and all of its training rows, each task
trained by a 2-worker Ray Train job that streams its shard through Ray Data, on the real embedded stack.

    python benchmarks/scale.py [--streams fashion-mnist,wordnet] [--sizes 1x,4x,all] [--tasks 3] [--out benchmarks/reports]

Real data: the full Split-FashionMNIST training set (Debian's dataset-fashion-mnist) and the Split-WordNet-20 full
tier (Debian's wordnet-base). "all" is every training row of each task; 1× is a class-stratified tenth, 4× four
tenths. Every size scores on the same 400 test rows per task, so what changes between sizes is the training rows
alone. After the `--tasks` tasks at a size comes one more task of the stream at 1× whatever the size (the probe):
the same new drop after 10× more earlier rows, which is what "overhead must not grow with history" is about. Each
(stream, size) runs in its own process, so the driver's peak RSS is its own. Training is one epoch per phase:
this measures cost, not accuracy. Writes `<out>/scale.{md,json,png}`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

SIZES = {"1x": 0.1, "4x": 0.4, "all": 1.0}
TEST_ROWS = 400
BACKBONES = {"fashion-mnist": "efficientnet-lite0", "wordnet": "sentence-transformers/all-MiniLM-L6-v2"}


def stream_tasks(stream: str, size: str, count: int):
    """The stream's first `count` tasks at `size` and the next at 1× (the probe), as drops (TaskDataset)."""
    from pipeline.data.fashion_mnist import split_fashion_mnist
    from pipeline.data.task_dataset import TaskDataset
    from pipeline.data.wordnet import split_wordnet20

    tasks = (split_fashion_mnist if stream == "fashion-mnist" else split_wordnet20)(1993, "full")[: count + 1]
    column = "image" if stream == "fashion-mnist" else "text"
    drops = []
    for t, task in enumerate(tasks):
        task = task.subsample(SIZES[size] if t < count else SIZES["1x"], seed=0)
        step = max(1, len(task.test_labels) // TEST_ROWS)
        files = {}
        for split, xs, ys in (
            ("train", task.train_inputs, task.train_labels),
            ("test", task.test_inputs[::step][:TEST_ROWS], task.test_labels[::step][:TEST_ROWS]),
        ):
            buffer = io.BytesIO()
            pq.write_table(pa.table({column: xs, "label": [task.classes[y] for y in ys]}), buffer)
            files[f"{split}.parquet"] = buffer.getvalue()
        files["task.json"] = json.dumps({"backbone": BACKBONES[stream]}).encode()
        drops.append(TaskDataset.from_files(task.name, files))
    return drops


def run_one(stream: str, size: str, count: int, out: Path) -> None:
    """One (stream, size) in this process: a bucket and registered model of its own, `count` tasks trained."""
    from pipeline.learn.config import TrainConfig
    from pipeline.orchestrator.ray_train import ScalingSpec, ray_fit
    from pipeline.orchestrator.transaction import train_on_current
    from pipeline.registry.bucket import Bucket
    from pipeline.registry.store import Registry
    from pipeline.settings import connection, load_settings

    name = f"scale-{uuid.uuid4().hex[:8]}"
    os.environ["LITELORA_BUCKET"] = os.environ["LITELORA_REGISTERED_MODEL"] = name
    # A feature cache of its own: the probe is the same drop at every size, and must not find its features cached.
    conn = replace(
        connection(load_settings()), cache_dir=Path(tempfile.mkdtemp(prefix="litelora-scale-cache-"))
    )
    Bucket.connect(conn).client.create_bucket(Bucket=name)
    registry = Registry.connect(conn)
    config = replace(TrainConfig.for_backbone(BACKBONES[stream]), epochs=1, first_examples=None)
    drops, rows, earlier = stream_tasks(stream, size, count), [], 0
    for t, dataset in enumerate(drops):
        started = time.perf_counter()
        result = train_on_current(
            dataset, registry, config if t == 0 else None, fit=ray_fit(conn, ScalingSpec(num_workers=2))
        )
        step_s = time.perf_counter() - started
        timings = result.timings
        rows.append(
            {
                "task": t,
                "probe": t == count,
                "train_rows": dataset.train.num_rows,
                "earlier_train_rows": earlier,
                "step_s": step_s,
                # Everything but the workers' training loops and the frozen reference's fit on the new rows:
                # Ray start-up, worker set-up, scoring every task, registry.
                "overhead_s": step_s - timings.get("compute_s", 0.0) - timings.get("frozen_reference_s", 0.0),
                "final_accuracy": result.final_accuracy,
                "frozen_final_accuracy": result.frozen_final_accuracy,
                **timings,
            }
        )
        earlier += dataset.train.num_rows
        print(json.dumps(rows[-1]), flush=True)
    driver_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out.write_text(
        json.dumps({"stream": stream, "size": size, "driver_peak_rss_mb": driver_mb, "tasks": rows})
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", default="fashion-mnist,wordnet")
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--tasks", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/reports"))
    parser.add_argument("--one", nargs=2, metavar=("STREAM", "SIZE"), help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        run_one(*args.one, args.tasks, args.result)
        return

    from pipeline.stack import embedded
    from pipeline.stack.process import free_port

    args.out.mkdir(parents=True, exist_ok=True)
    report_path = args.out / "scale.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {"runs": []}
    with tempfile.TemporaryDirectory(prefix="litelora-scale-") as home:
        embedded.up(Path(home), ports={"s3": free_port(), "mlflow": free_port()})
        try:
            env = (
                os.environ | embedded.env_exports(Path(home)) | {"LITELORA_HOME": home, "HF_HUB_OFFLINE": "1"}
            )
            for stream in args.streams.split(","):
                for size in args.sizes.split(","):
                    result = Path(home) / f"{stream}-{size}.json"
                    command = [
                        sys.argv[0],
                        "--one",
                        stream,
                        size,
                        "--tasks",
                        str(args.tasks),
                        "--result",
                        result,
                    ]
                    print(f"== {stream} {size}", flush=True)
                    subprocess.run([sys.executable, *map(str, command)], env=env, check=True)
                    run = json.loads(result.read_text())
                    report["runs"] = [
                        r for r in report["runs"] if (r["stream"], r["size"]) != (stream, size)
                    ] + [run]
                    report_path.write_text(json.dumps(report, indent=1))
        finally:
            embedded.down(Path(home))
    write_report(report, args.out)


def write_report(report: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    intro = (
        "`python benchmarks/scale.py`; 2 CPU cores, no GPU, the embedded stack. Per task, one epoch per phase; "
        f"every size scores on the same {TEST_ROWS} test rows per task. Worker figures are rank 0's (the ranks do "
        "the same work). Peak RSS is the kernel's high-water mark of the worker process, which counts the pages of "
        "Ray's object store it mapped while blocks streamed through it; private memory is its resident memory "
        "without shared pages, sampled after every pass. Throughput is training rows per second per worker once an epoch's batches flow; an "
        "epoch's start is the wait for its first batch (a streamed epoch starts by reading and shuffling). "
        "The frozen reference is fitting the frozen encoder's head on the new task's rows (features cached by "
        "content hash, earlier stages kept), reported beside every adapter number. Overhead is the step's wall "
        "time minus the workers' training loops and the frozen reference: Ray start-up, worker set-up, scoring "
        "every task on its held-out rows, registry. Evaluation is scoring every task so far."
    )
    header = (
        "| stream | size | rows / task | worker peak RSS (MB) | worker peak private (MB) | driver peak RSS (MB) "
        "| rows/s/worker | epoch (s) "
        "| epoch start (s) | frozen reference (s) | overhead per task (s) | evaluation per task (s) |"
    )
    lines = [
        "# Scaling: 2-worker Ray Train jobs streaming through Ray Data, by task size",
        "",
        intro,
        "",
        header,
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in report["runs"]:
        tasks = run["tasks"]

        def listed(key: str, digits: int = 0, tasks: list[dict] = tasks) -> str:
            return " / ".join(
                f"{t.get(key, float('nan')):.{digits}f}" + (" (p)" if t.get("probe") else "") for t in tasks
            )

        lines.append(
            f"| {run['stream']} | {run['size']} | {listed('train_rows')} | {listed('worker_peak_rss_mb')} | "
            f"{listed('worker_peak_private_mb')} | "
            f"{run['driver_peak_rss_mb']:.0f} | {listed('worker_rows_per_s', 1)} | {listed('worker_epoch_s', 1)} | "
            f"{listed('worker_epoch_start_s', 1)} | {listed('frozen_reference_s', 1)} | "
            f"{listed('overhead_s', 1)} | {listed('evaluate_s', 1)} |"
        )
    lines += [
        "",
        (
            "Each cell lists tasks 0 / 1 / 2 … of the stream; (p) marks the probe, the next task of the stream at "
            "1× whatever the size."
        ),
        "",
    ]
    by_stream: dict[str, list[dict]] = {}
    for run in report["runs"]:
        by_stream.setdefault(run["stream"], []).append(run)
    for stream, runs in by_stream.items():
        runs = sorted(runs, key=lambda r: r["tasks"][0]["train_rows"])
        small, large = runs[0], runs[-1]
        ratio = large["tasks"][0]["train_rows"] / small["tasks"][0]["train_rows"]
        probe_small, probe_large = probe(small), probe(large)
        summary = (
            f"**{stream}** ({small['size']} → {large['size']}: rows per task × {ratio:.1f}): worker peak RSS × "
            f"{peak(large) / peak(small):.2f}, its private memory × "
            f"{peak(large, 'worker_peak_private_mb') / peak(small, 'worker_peak_private_mb'):.2f}; rows/s per "
            f"worker {speed(small):.1f} → {speed(large):.1f} ({100 * (speed(large) / speed(small) - 1):+.0f}%)."
        )
        if probe_small and probe_large:
            summary += (
                f" The probe, the same {probe_small['train_rows']}-row drop, costs {probe_small['overhead_s']:.1f} s "
                f"of overhead after {probe_small['earlier_train_rows']} earlier training rows and "
                f"{probe_large['overhead_s']:.1f} s after {probe_large['earlier_train_rows']} "
                f"(× {probe_large['earlier_train_rows'] / probe_small['earlier_train_rows']:.1f}); its frozen "
                f"reference {probe_small['frozen_reference_s']:.1f} s and {probe_large['frozen_reference_s']:.1f} s."
            )
        lines += [summary, ""]
    (out / "scale.md").write_text("\n".join(lines))

    fig, axes = plt.subplots(1, 4, figsize=(20, 4))
    for stream, runs in by_stream.items():
        runs = sorted(runs, key=lambda r: r["tasks"][0]["train_rows"])
        rows = [r["tasks"][0]["train_rows"] for r in runs]
        for key, kind, style in (
            ("worker_peak_rss_mb", "RSS", "o-"),
            ("worker_peak_private_mb", "private", "s--"),
        ):
            axes[0].plot(rows, [peak(r, key) for r in runs], style, label=f"{stream} {kind}")
        axes[1].plot(rows, [speed(r) for r in runs], "o-", label=stream)
        for r in runs:
            axes[2].plot(
                [t["earlier_train_rows"] for t in r["tasks"]],
                [t["overhead_s"] for t in r["tasks"]],
                "o-",
                label=f"{stream} {r['size']}",
            )
            axes[3].plot(
                range(len(r["tasks"])),
                [t["evaluate_s"] - t.get("frozen_reference_s", 0.0) for t in r["tasks"]],
                "o-",
                label=f"{stream} {r['size']}",
            )
        probes = [p for p in map(probe, runs) if p]
        axes[2].plot(
            [p["earlier_train_rows"] for p in probes],
            [p["overhead_s"] for p in probes],
            "k*",
            markersize=12,
            label=f"{stream} probe (same 1x drop)",
        )
    for ax, title, x, scale in zip(
        axes,
        (
            "worker peak memory (MB)",
            "training rows/s per worker",
            "overhead per task (s)",
            "scoring every task so far (s)",
        ),
        ("training rows per task", "training rows per task", "earlier tasks' training rows", "earlier tasks"),
        ("log", "log", "linear", "linear"),
        strict=True,
    ):
        ax.set(title=title, xlabel=x, xscale=scale)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "scale.png", dpi=110)


def trained(run: dict) -> list[dict]:
    """The run's tasks at its size (without the probe)."""
    return [t for t in run["tasks"] if not t.get("probe")]


def probe(run: dict) -> dict | None:
    return next((t for t in run["tasks"] if t.get("probe")), None)


def peak(run: dict, key: str = "worker_peak_rss_mb") -> float:
    return max(t[key] for t in trained(run))


def speed(run: dict) -> float:
    return sum(t["worker_rows_per_s"] for t in trained(run)) / len(trained(run))


if __name__ == "__main__":
    main()
