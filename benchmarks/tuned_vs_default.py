"""Tuned vs default hyperparameters on the quick Split-WordNet-20 stream, through the real registry.

    litelora up && python benchmarks/tuned_vs_default.py [--trials 8] [--ordering 1993]

Each arm trains the five tasks in order into a bucket and registered model of its own, in this process (no
Ray Train), with the promotion guard off so that both arms see the same stream. The tuned arm runs
`litelora tune`'s search (Ray Tune, ASHA, nested MLflow runs) before every task. Writes
benchmarks/reports/tuned-vs-default.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import uuid
from dataclasses import replace
from pathlib import Path

from pipeline.data.task_dataset import TaskDataset, write_drop
from pipeline.data.wordnet import split_wordnet20
from pipeline.orchestrator.transaction import train_on_current
from pipeline.registry.bucket import Bucket
from pipeline.registry.store import Registry
from pipeline.settings import connection, load_settings
from pipeline.tuning.search import TuneSpec, tune_then_train
from pipeline.tuning.space import SearchSpace


def arm(name: str, datasets: list[TaskDataset], tuned: bool, trials: int) -> dict:
    tag = f"bench-{name}-{uuid.uuid4().hex[:6]}"
    conn = replace(connection(load_settings()), bucket=tag, registered_model=tag)
    Bucket.connect(conn).client.create_bucket(Bucket=tag)
    clock, steps = time.perf_counter(), []
    for dataset in datasets:
        if tuned:
            outcome, result = tune_then_train(
                dataset, conn, SearchSpace(), TuneSpec(trials=trials), max_accuracy_drop=1.0, log=print
            )
            chosen = outcome.best
        else:
            result, chosen = train_on_current(dataset, Registry.connect(conn), max_accuracy_drop=1.0), {}
        steps.append(
            {
                "task": dataset.name,
                "decision": result.decision,
                "active_adapters": result.active_adapters,
                "avg_accuracy": result.avg_accuracy,
                "final_accuracy": result.final_accuracy,
                "config": chosen,
            }
        )
        print(f"{name}: {dataset.name} {result.decision}, A {100 * result.avg_accuracy:.1f}", flush=True)
    last = steps[-1]
    return {
        "arm": name,
        "registered_model": tag,
        "A": last["avg_accuracy"],
        "final": last["final_accuracy"],
        "active_adapters": last["active_adapters"],
        "wall_s": time.perf_counter() - clock,
        "steps": steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--ordering", type=int, default=1993)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "reports")
    args = parser.parse_args()
    tmp = Path(f"/tmp/tuned-vs-default-{args.ordering}")
    datasets = [
        TaskDataset.from_dir(write_drop(task, tmp / f"wordnet-{i}"))
        for i, task in enumerate(split_wordnet20(args.ordering, "quick"))
    ]
    arms = [arm("default", datasets, False, args.trials), arm("tuned", datasets, True, args.trials)]
    print(write_report(arms, args.trials, args.ordering, args.out))


def write_report(arms: list[dict], trials: int, ordering: int, out: Path) -> str:
    command = f"python benchmarks/tuned_vs_default.py --trials {trials} --ordering {ordering}"
    lines = [
        f"# Tuned vs default hyperparameters (Split-WordNet-20 quick, ordering {ordering})",
        "",
        (
            f"`{command}` on {platform.node()} ({platform.processor() or platform.machine()}); "
            f"{trials} Ray Tune trials per task on half of its training rows, objective = mean accuracy "
            "− 0.01 × adapters kept; promotion guard off."
        ),
        "",
        "| arm | A (%) | final (%) | adapters kept | decisions | wall (s) |",
        "|---|---|---|---|---|---|",
    ]
    for a in arms:
        decisions = ", ".join(s["decision"] for s in a["steps"])
        lines.append(
            f"| {a['arm']} | {100 * a['A']:.1f} | {100 * a['final']:.1f} | {a['active_adapters']} | "
            f"{decisions} | {a['wall_s']:.0f} |"
        )
    lines += ["", "Chosen configuration per task (tuned arm):", ""]
    lines += [
        f"- {s['task']}: "
        + ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(s["config"].items())
        )
        for s in arms[1]["steps"]
    ]
    out.mkdir(parents=True, exist_ok=True)
    (out / "tuned-vs-default.md").write_text("\n".join(lines) + "\n")
    (out / "tuned-vs-default.json").write_text(json.dumps({"command": command, "arms": arms}, indent=2))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
