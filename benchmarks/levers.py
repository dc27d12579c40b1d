"""What moves the features: one lever at a time against the shipped recipe, on one ordering, scored on validation rows
cut from each task's training rows (never on the test rows the reports and the promotion guard use).

    python benchmarks/levers.py [--stream wordnet|fashion-mnist] [--ordering 1993] [--test] [--out benchmarks/reports]

Every lever is a full configuration written out below (not a change to whatever the defaults are today), so the
table regenerates the same runs. `--test` scores the test rows instead (for the final check of a choice, never
to make it). Writes `<out>/levers-<stream>-o<ordering>[-test].{md,json}`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from pipeline.bench.continual import STREAMS, validation_tasks
from pipeline.bench.stamp import commit_stamp
from pipeline.learn.config import TrainConfig
from pipeline.learn.sequence import run_sequence
from pipeline.methods.joint.runner import run_joint

QKVO_MLP = (
    "query",
    "key",
    "value",
    "attention.output.dense",
    "intermediate.dense",
    r".*layer\.[0-9]+\.output\.dense",
)
PAPER = {"relearn_magnitudes": True, "first_examples": 0}
SHIPPED = {"relearn_magnitudes": False, "first_examples": 3000, "sparsity": 0.5}
LEVERS: dict[str, tuple[str, dict]] = {
    "frozen": ("no adapters: the same heads on the bare backbone", {"method": "frozen", **SHIPPED}),
    "paper": (
        "LiteLoRA as the paper runs it: every α re-learned on normalised directions, 2 epochs per task",
        PAPER,
    ),
    "paper + first task": (
        "the paper's α handling with the shipped first task (≥ 3,000 examples)",
        {**PAPER, "first_examples": 3000},
    ),
    "shipped": (
        "fixed magnitudes (a reused task changes nothing), task 0 ≥ 3,000 examples, 2 epochs after, λ = 0.5",
        SHIPPED,
    ),
    "adapt-once": (
        "the shipped first task, then no adapter ever again (APER/RanPAC): what the gate must beat",
        {"method": "adapt-once", **SHIPPED},
    ),
    "no-regret": (
        "a recruit is kept only if the set scores better with it than with a reuse, on cuts of the training rows",
        {**SHIPPED, "no_regret": True},
    ),
    "λ = 0.1": ("a lighter sparsity weight: the gate recruits more", {**SHIPPED, "sparsity": 0.1}),
    "λ = 0.1 + no-regret": (
        "the gate asks for more recruits; the no-regret rule weighs each",
        {**SHIPPED, "sparsity": 0.1, "no_regret": True},
    ),
    "null-space recruits": (
        "a recruit acts only outside the inputs earlier tasks fed each adapted layer (GPM/InfLoRA)",
        {**SHIPPED, "recruit_space": "null"},
    ),
    "λ = 0.1 + null-space": (
        "the gate asks for more recruits; each acts only outside earlier tasks' inputs",
        {**SHIPPED, "sparsity": 0.1, "recruit_space": "null"},
    ),
    "λ = 0.1 + null-space + no-regret": (
        "more recruits asked for, each outside earlier inputs and weighed against a reuse",
        {**SHIPPED, "sparsity": 0.1, "recruit_space": "null", "no_regret": True},
    ),
    "λ = 0.1 + linear drift": (
        "more recruits asked for; the head's whole second moment follows each along one fitted map",
        {**SHIPPED, "sparsity": 0.1, "drift": "linear"},
    ),
    "λ = 0.1 + all three": (
        "more recruits asked for: null-space recruits, linear drift compensation, the no-regret rule",
        {**SHIPPED, "sparsity": 0.1, "recruit_space": "null", "drift": "linear", "no_regret": True},
    ),
    "routed recruits": (
        "a recruit acts only on the rows routed to it (by the bare encoder's features); a reuse joins its parent",
        {**SHIPPED, "recruit_space": "routed"},
    ),
    "λ = 0.1 + routed": (
        "the gate asks for more recruits; each acts only on the rows routed to it",
        {**SHIPPED, "sparsity": 0.1, "recruit_space": "routed"},
    ),
    "λ = 0.1 + routed + no-regret": (
        "more recruits asked for, each on its routed rows, kept only if it gains more than the router would confuse",
        {**SHIPPED, "sparsity": 0.1, "recruit_space": "routed", "no_regret": True},
    ),
    "λ = 0.1 + routed + no-regret + 7 epochs": (
        "the same, every task trained about as long as the first (a recruit starts an expert as task 0 did)",
        {**SHIPPED, "sparsity": 0.1, "recruit_space": "routed", "no_regret": True, "epochs": 7},
    ),
    "adapt-once + routed": (
        "the first task's adapter for the rows routed to it; every other row the bare encoder",
        {"method": "adapt-once", **SHIPPED, "recruit_space": "routed"},
    ),
    "λ = 2": ("a heavier sparsity weight", {**SHIPPED, "sparsity": 2.0}),
    "slow learner": ("adapter learning rate 5e-4, head 2e-3 (SLCA)", {**SHIPPED, "adapter_lr": 5e-4}),
    "5 epochs every task": ("later tasks trained as long as the first", {**SHIPPED, "epochs": 5}),
    "rank 16": ("twice the adapter rank", {**SHIPPED, "rank": 16}),
    "q/k/v/o + MLP": (
        "adapters on every linear map of each block, not query/value only",
        {**SHIPPED, "targets": QKVO_MLP},
    ),
    "SGD": (
        "SGD with momentum 0.9 (the papers' optimiser), lr 0.05",
        {**SHIPPED, "optimizer": "sgd", "lr": 0.05, "alpha_lr": 0.05},
    ),
    "joint (ceiling)": (
        "every task at once, the shipped task-0 recipe (not continual)",
        {**SHIPPED, "joint": True},
    ),
}
HEADS = ("ridge", "linear")
TEXT_ONLY = {
    "q/k/v/o + MLP"
}  # module names of a BERT-style encoder; the vision backbone adapts its 1×1 convs


def run_lever(stream: str, ordering: int, settings: dict, test: bool) -> dict:
    spec = STREAMS[stream]
    tasks = spec.tasks(ordering, "quick")
    tasks = tasks if test else validation_tasks(tasks, ordering)
    settings = dict(settings)
    joint = settings.pop("joint", False)
    config = replace(TrainConfig(backbone=spec.backbone, seed=ordering), head=HEADS[0])
    config = config.with_overrides(rank=spec.rank).with_overrides(**settings)
    clock = time.process_time()
    wall = time.perf_counter()
    # A routed set scores with the ridge head only: its per-task linear heads never see a routed row.
    heads = HEADS[:1] if config.recruit_space == "routed" else HEADS
    results = run_joint(tasks, config, heads) if joint else run_sequence(tasks, config, head_options=heads)[0]
    return {
        "config": config.to_dict(),
        "cpu_s": time.process_time() - clock,
        "wall_s": time.perf_counter() - wall,
        "rows": {head: result.row() for head, result in results.items()},
    }


def markdown(report: dict) -> str:
    lines = [
        f"# Levers on {report['title']}, ordering {report['ordering']} ({report['split']} rows)",
        "",
        f"Command: `{report['command']}` at commit {report.get('commit', 'unrecorded')}  ",
        "",
        (
            "Class-incremental accuracy in %; A = average anytime accuracy, final = after the last task, A (TIL) = "
            "task-incremental; ΔA frozen = A minus the frozen encoder's A with the same head; #Ad = adapters kept; "
            f"CPU s = process CPU time of the whole stream ({report.get('threads', 2)} thread(s))."
        ),
        "",
        "| lever | what changes | head | A | ΔA frozen | final | A (TIL) | #Ad | decisions | CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    frozen = report["levers"].get("frozen", {}).get("rows", {})
    for name, lever in report["levers"].items():
        for head, row in lever["rows"].items():
            base = frozen.get(head) if name != "frozen" else None
            delta = "—" if base is None else f"{100 * (row['avg_accuracy'] - base['avg_accuracy']):+.1f}"
            lines.append(
                f"| {name} | {LEVERS[name][0]} | {head} | {100 * row['avg_accuracy']:.1f} | {delta} | "
                f"{100 * row['final_accuracy']:.1f} | {100 * row['til_avg_accuracy']:.1f} | "
                f"{row['active_adapters']} | {' '.join(d[:3] for d in row['decisions'])} | "
                f"{lever['cpu_s']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", default="wordnet", choices=sorted(STREAMS))
    parser.add_argument("--ordering", type=int, default=1993)
    parser.add_argument("--levers", default=None, help="comma-separated names (default: all that apply)")
    parser.add_argument("--test", action="store_true", help="score the test rows (only to check a choice)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/reports"))
    args = parser.parse_args()
    split = "test" if args.test else "validation"
    report = {
        "title": STREAMS[args.stream].title,
        "ordering": args.ordering,
        "split": split,
        "command": "python " + " ".join(sys.argv),
        "commit": commit_stamp(),
        "threads": torch.get_num_threads(),
        "levers": {},
    }
    text = not STREAMS[args.stream].backbone.reads_images
    names = args.levers.split(",") if args.levers else [n for n in LEVERS if text or n not in TEXT_ONLY]
    unknown = [n for n in names if n not in LEVERS]
    if unknown:
        parser.error(f"unknown lever(s) {unknown}; choose from {', '.join(LEVERS)}")
    stem = (
        args.out
        / f"levers-{STREAMS[args.stream].report_prefix}o{args.ordering}{'-test' if args.test else ''}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        report["levers"][name] = run_lever(args.stream, args.ordering, LEVERS[name][1], args.test)
        row = report["levers"][name]["rows"][HEADS[0]]
        print(
            f"{name}: A {100 * row['avg_accuracy']:.1f}, final {100 * row['final_accuracy']:.1f}, "
            f"{row['active_adapters']} adapter(s)",
            flush=True,
        )
        # after every lever: an hour of runs is not lost to the last one failing
        stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        stem.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
