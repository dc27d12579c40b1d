"""Share as the official code runs it, the choices where we differ one at a time, and its frontier of
task-incremental accuracy against stored parameters per task, beside one LoRA per task trained the same way.

    python benchmarks/share_frontier.py [--stream fashion-mnist|wordnet] [--ordering 1993] [--epochs 5]
                                        [--runs 'NAME|NAME…'] [--test] [--out benchmarks/reports]

Runs already in the report (same epochs and rows) are kept, so an interrupted study resumes where it stopped.
Scored on validation rows cut from each task's training rows (`--test`: the test rows, only to check a choice).
Every run trains with the official optimiser settings (AdamW lr 4e-3, weight decay 0.1, 6% warm-up) for `--epochs`
per task, one LoRA per task too, so the rows differ only in how Share stores the tasks. Writes
`<out>/share-<stream prefix>o<ordering>[-test].{md,json,png}`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from pipeline.bench.continual import STREAMS, validation_tasks
from pipeline.learn.config import TrainConfig
from pipeline.methods.share.model import ShareConfig, TaskSelectedModel
from pipeline.methods.share.runner import run_task_id_stream

OURS = {"fold_expansion": True, "reproject": "all"}
ABLATIONS: dict[str, tuple[str, dict]] = {
    "official": (
        "the official code: k = 32 padded, φ = 2, only U L kept, the previous task re-projected",
        {},
    ),
    "+ fold φ-terms": ("the task keeps U L + P Q (ours)", {"fold_expansion": True}),
    "+ re-project all": ("every earlier task re-projected onto the new basis (ours)", {"reproject": "all"}),
    "+ both": ("both of ours", OURS),
    "+ both − padding": (
        "k = 32 but only the informative directions (a basis from task 0 alone)",
        {**OURS, "pad": False},
    ),
    "+ both + k by variance": (
        "k from 60% explained variance, unpadded (the paper's guidance)",
        {**OURS, "basis": 0.6, "pad": False},
    ),
}
FRONTIER = {
    f"k={k} φ={phi}": {**OURS, "basis": k, "expansion": phi}
    for k in (2, 3, 4, 8, 16, 32, 64)
    for phi in (0, 2, 4)
}


def share_settings(name: str, epochs: int) -> ShareConfig:
    changes = ABLATIONS[name][1] if name in ABLATIONS else FRONTIER[name]
    return replace(ShareConfig.official(epochs), **changes)


def run(stream: str, ordering: int, name: str, epochs: int, test: bool) -> dict:
    spec = STREAMS[stream]
    tasks = spec.tasks(ordering, "quick")
    tasks = tasks if test else validation_tasks(tasks, ordering)
    config = TrainConfig(backbone=spec.backbone, seed=ordering).with_overrides(rank=spec.rank)
    lora = name == "one LoRA per task"
    method = "lora-per-task" if lora else "share"
    share = share_settings("official" if lora else name, epochs)  # LoRA trains with the same optimiser
    model = TaskSelectedModel(config, "lora" if lora else "share", share)
    clock = time.process_time()
    result = run_task_id_stream(tasks, config, method, model=model)
    layers = list(model.layers.values())
    basis = sum(
        layer.basis_a.numel() + layer.basis_b.numel() for layer in layers if layer.basis_a is not None
    )
    per_task = sum(t.numel() for layer in layers for t in layer.stored_a[:1] + layer.stored_b[:1])
    return {
        "share": share.__dict__,
        "til_avg_accuracy": result.til.average_accuracy,
        "til_final_accuracy": result.til.final_accuracy,
        "stored_params": result.stored_params,
        "stored_params_per_task": result.stored_params / len(tasks),
        "basis_params": basis,
        "increment_per_task": per_task,
        "reprojection_error": (
            sum(result.reprojection_errors[1:]) / max(len(result.reprojection_errors) - 1, 1)
            if not lora
            else None
        ),
        "decisions": result.decisions,
        "cpu_s": time.process_time() - clock,
    }


def markdown(report: dict) -> str:
    runs = report["runs"]
    lora = runs.get("one LoRA per task")
    lines = [
        f"# Share on {report['title']}, ordering {report['ordering']} ({report['split']} rows)",
        "",
        f"Command: `{report['command']}`  ",
        "",
        (
            f"Every run: AdamW lr 4e-3, weight decay 0.1, 6% warm-up, {report['epochs']} epochs per task, rank/p "
            f"{report['rank']}. A (TIL) = task-incremental average anytime accuracy (the task id selects the "
            "factors and head); per task = stored adapter parameters / tasks (the basis amortised over this "
            "stream's tasks); increment = what one more task adds; re-proj = mean relative error of earlier "
            "tasks' factors re-projected onto each new basis."
        ),
        "",
        "| run | what | A (TIL) | ΔA vs LoRA | final (TIL) | per task | vs LoRA | increment | re-proj | k chosen | CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, row in runs.items():
        what = (
            ABLATIONS[name][0]
            if name in ABLATIONS
            else ("one LoRA per task, kept as trained" if name not in FRONTIER else "frontier, ours")
        )
        delta = (
            "—"
            if lora is None or row is lora
            else f"{100 * (row['til_avg_accuracy'] - lora['til_avg_accuracy']):+.1f}"
        )
        ratio = (
            "—" if lora is None else f"{row['stored_params_per_task'] / lora['stored_params_per_task']:.2f}"
        )
        error = "—" if row["reprojection_error"] is None else f"{row['reprojection_error']:.3f}"
        k = row["decisions"][-1] if row["decisions"] and row["decisions"][-1].startswith("k=") else "—"
        lines.append(
            f"| {name} | {what} | {100 * row['til_avg_accuracy']:.1f} | {delta} | "
            f"{100 * row['til_final_accuracy']:.1f} | {row['stored_params_per_task']:,.0f} | {ratio} | "
            f"{row['increment_per_task']:,} | {error} | {k} | {row['cpu_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    runs = report["runs"]
    lora = runs.get("one LoRA per task")
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for phi, marker in ((0, "v"), (2, "o"), (4, "^")):
        points = [
            (r["stored_params_per_task"], 100 * r["til_avg_accuracy"], n)
            for n, r in runs.items()
            if n in FRONTIER and r["share"]["expansion"] == phi
        ]
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=marker, label=f"Share, φ = {phi}")
            for x, y, n in points:
                ax.annotate(n.split()[0], (x, y), xytext=(3, 3), textcoords="offset points", fontsize=7)
    for name, style in (("official", "s"), ("+ both + k by variance", "D")):
        if name in runs:
            r = runs[name]
            ax.scatter(
                [r["stored_params_per_task"]],
                [100 * r["til_avg_accuracy"]],
                marker=style,
                s=60,
                label=name,
                zorder=3,
            )
    if lora:
        ax.axhline(
            100 * lora["til_avg_accuracy"], color="k", linestyle="--", linewidth=1, label="one LoRA per task"
        )
        ax.axhline(
            100 * lora["til_avg_accuracy"] - 2, color="grey", linestyle=":", linewidth=1, label="− 2 points"
        )
        ax.axvline(
            lora["stored_params_per_task"] / 5,
            color="tab:red",
            linestyle=":",
            linewidth=1,
            label="1/5 of its storage",
        )
    ax.set_xscale("log")
    ax.set_xlabel("stored adapter parameters per task (basis amortised)")
    ax.set_ylabel("task-incremental A (%)")
    ax.set_title(f"Share frontier, {report['title']}, ordering {report['ordering']}", fontsize=10)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", default="fashion-mnist", choices=sorted(STREAMS))
    parser.add_argument("--ordering", type=int, default=1993)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--runs", default=None, help="names separated by '|' (default: all)")
    parser.add_argument("--test", action="store_true", help="score the test rows (only to check a choice)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/reports"))
    args = parser.parse_args()
    names = args.runs.split("|") if args.runs else ["one LoRA per task", *ABLATIONS, *FRONTIER]
    spec = STREAMS[args.stream]
    report = {
        "title": spec.title,
        "ordering": args.ordering,
        "split": "test" if args.test else "validation",
        "epochs": args.epochs,
        "rank": spec.rank or TrainConfig().adapter.rank,
        "command": "python " + shlex.join(sys.argv),
        "runs": {},
    }
    stem = args.out / f"share-{spec.report_prefix}o{args.ordering}{'-test' if args.test else ''}"
    args.out.mkdir(parents=True, exist_ok=True)
    if stem.with_suffix(".json").exists():  # runs of the same settings already made are kept, not redone
        earlier = json.loads(stem.with_suffix(".json").read_text())
        if earlier["epochs"] == args.epochs and earlier["split"] == report["split"]:
            report["runs"] = earlier["runs"]
    for name in names:
        if name in report["runs"]:
            continue
        report["runs"][name] = run(args.stream, args.ordering, name, args.epochs, args.test)
        row = report["runs"][name]
        print(
            f"{name}: A (TIL) {100 * row['til_avg_accuracy']:.1f}, per task {row['stored_params_per_task']:,.0f}",
            flush=True,
        )
        # after every run: an hour of runs is not lost to the last one failing
        stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        stem.with_suffix(".md").write_text(markdown(report))
    plot(report, stem.with_suffix(".png"))
    print(markdown(report))


if __name__ == "__main__":
    main()
