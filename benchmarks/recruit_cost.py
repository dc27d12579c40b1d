"""What a recruit costs the earlier classes, with the recruit acting on every input direction ("full") or only
outside the inputs earlier tasks fed each adapted layer ("null"), and the head's statistics following the drift by
their means or by a fitted linear map: one stream's quick tier, one ordering, scored on validation rows cut from
each task's training rows (never the test rows).

    python benchmarks/recruit_cost.py [--stream wordnet] [--ordering 1993] [--parts cost,streams] [--out …]

cost: a trunk that adapts on task 0 and then reuses (adapt-once, which records the input bases); before each later
task t the trunk is copied and t trained as a forced recruit (LiteLoRA, λ = 0, gate logit 5) under each of
`RECRUITS`. Recruit cost at t = CIL accuracy on the rows of tasks < t right after the recruit minus right after the
trunk's reuse of the same task, from the same state.
streams: A over the whole stream for LiteLoRA (shipped λ = 0.5, and λ = 0.1) and SD-LoRA under full and null, and
the frozen encoder; ridge head everywhere. Writes `<out>/recruit-cost-<stream>-o<ordering>.{md,json}`, stamped
with the commit.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

from pipeline.bench.continual import STREAMS, validation_tasks
from pipeline.bench.stamp import commit_stamp
from pipeline.learn.config import TrainConfig
from pipeline.learn.evaluate import evaluate_heads
from pipeline.learn.model import ContinualModel
from pipeline.learn.recipe import train_task
from pipeline.learn.sequence import run_sequence

SHIPPED = {"relearn_magnitudes": False, "first_examples": 3000, "sparsity": 0.5}
RECRUIT = {"method": "litelora", "sparsity": 0.0, "init_logit": 5.0}
STREAM_RUNS = {
    "frozen": {"method": "frozen"},
    "litelora full": {"recruit_space": "full"},
    "litelora null": {"recruit_space": "null"},
    "sdlora full": {"method": "sdlora", "recruit_space": "full"},
    "sdlora null": {"method": "sdlora", "recruit_space": "null"},
    "litelora λ=0.1 null": {"sparsity": 0.1, "recruit_space": "null"},
}


RECRUITS = {
    "full": {"recruit_space": "full"},
    "null": {"recruit_space": "null"},
    "full + linear drift": {"recruit_space": "full", "drift": "linear"},
    "null + linear drift": {"recruit_space": "null", "drift": "linear"},
    "routed": {"recruit_space": "routed"},
}
"""How a forced recruit may act (every input direction, or outside earlier inputs) and how the head's statistics
follow the drift it causes (class means, or the whole second moment along a fitted map)."""


def base_config(stream: str, ordering: int) -> TrainConfig:
    spec = STREAMS[stream]
    config = replace(TrainConfig(backbone=spec.backbone, seed=ordering), head="ridge")
    return config.with_overrides(rank=spec.rank).with_overrides(**SHIPPED)


def old_accuracy(model: ContinualModel, tasks, t: int) -> float:
    """CIL accuracy on the validation rows of tasks before t, after task t."""
    scores = evaluate_heads(model, tasks[: t + 1], ("ridge",))["ridge"]
    return sum(scores.cil_correct[:t]) / sum(scores.counts[:t])


def basis_bytes(model: ContinualModel) -> tuple[int, list[int]]:
    bases = model.adapters.input_bases()
    return sum(b.numel() * b.element_size() for b in bases.values()), [b.shape[1] for b in bases.values()]


def recruit_cost(tasks, stream: str, ordering: int, variants: list[str]) -> dict:
    # A routed recruit needs a set that routes from its first task; its reuses are the other trunk's exactly
    # (one expert owns every class, so every row goes to it).
    trunks = {
        space: ContinualModel(
            base_config(stream, ordering).with_overrides(method="adapt-once", recruit_space=space)
        )
        for space in ("null", "routed")
        if space == "null" or "routed" in variants
    }
    for model in trunks.values():
        train_task(model, tasks[0])
    trunk = trunks["null"]
    stages = []
    for t in range(1, len(tasks)):
        stage = {"task": t}
        for variant in variants:
            settings = RECRUITS[variant]
            branch = copy.deepcopy(trunks["routed" if settings["recruit_space"] == "routed" else "null"])
            branch.reconfigure(branch.config.with_overrides(**RECRUIT, **settings))
            clock = time.process_time()
            train_task(branch, tasks[t])
            stage[variant] = {
                "old": old_accuracy(branch, tasks, t),
                "decision": branch.tasks[-1].decision,
                "cpu_s": time.process_time() - clock,
            }
            del branch
        for model in trunks.values():
            train_task(model, tasks[t])
        stage["reuse"] = {"old": old_accuracy(trunk, tasks, t), "decision": trunk.tasks[-1].decision}
        stage["basis_bytes"], stage["basis_k"] = basis_bytes(trunk)
        stages.append(stage)
        print(json.dumps(stage), flush=True)
    return {"stages": stages}


def stream_run(tasks, stream: str, ordering: int, settings: dict) -> dict:
    config = base_config(stream, ordering).with_overrides(**settings)
    clock = time.process_time()
    results, model = run_sequence(tasks, config, head_options=("ridge",))
    row = results["ridge"].row()
    size, ks = basis_bytes(model)
    return {
        "avg_accuracy": row["avg_accuracy"],
        "final_accuracy": row["final_accuracy"],
        "active_adapters": row["active_adapters"],
        "decisions": row["decisions"],
        "basis_bytes": size,
        "basis_k": ks,
        "cpu_s": time.process_time() - clock,
    }


def markdown(report: dict) -> str:
    lines = [
        (
            f"# What a recruit costs the earlier classes ({STREAMS[report['stream']].title} quick, ordering "
            f"{report['ordering']}, validation rows)"
        ),
        "",
        f"Ran on commit {report['commit']}. Commands: "
        + "; ".join(f"`{c}`" for c in report.get("commands", {}).values()),
        "",
    ]
    if "cost" in report:
        stages = report["cost"]["stages"]
        variants = [v for v in RECRUITS if v in stages[0]]
        lines += [
            (
                "Accuracy (%, CIL, ridge head) of the classes of tasks < t right after task t, from the same state: "
                "recruited (LiteLoRA λ = 0) under each variant, or reused (adapt-once). Cost = recruit − reuse."
            ),
            "",
            "| t | reuse | "
            + " | ".join(f"recruit {v} (cost)" for v in variants)
            + " | basis k | basis bytes |",
            "|---|---|" + "---|" * len(variants) + "---|---|",
        ]
        for st in stages:
            reuse = 100 * st["reuse"]["old"]
            cells = [f"{100 * st[v]['old']:.1f} ({100 * st[v]['old'] - reuse:+.1f})" for v in variants]
            lines.append(
                f"| {st['task']} | {reuse:.1f} | {' | '.join(cells)} | "
                f"{min(st['basis_k'])}–{max(st['basis_k'])} | {st['basis_bytes']:,} |"
            )
        means = [
            statistics.mean(100 * (st[v]["old"] - st["reuse"]["old"]) for st in stages) for v in variants
        ]
        lines += ["| mean cost | | " + " | ".join(f"{m:+.1f}" for m in means) + " | | |", ""]
    if report.get("streams"):
        lines += [
            "Whole stream, ridge head: A = average anytime accuracy, final after task 4; #Ad = adapters kept.",
            "",
            "| run | A | final | #Ad | decisions | basis bytes | CPU s |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, r in report["streams"].items():
            lines.append(
                f"| {name} | {100 * r['avg_accuracy']:.1f} | {100 * r['final_accuracy']:.1f} | "
                f"{r['active_adapters']} | {' '.join(d[:3] for d in r['decisions'])} | {r['basis_bytes']:,} | "
                f"{r['cpu_s']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", default="wordnet", choices=sorted(STREAMS))
    parser.add_argument("--ordering", type=int, default=1993)
    parser.add_argument("--parts", default="cost,streams")
    parser.add_argument("--streams", default=",".join(STREAM_RUNS), help="comma-separated stream runs")
    parser.add_argument(
        "--recruits", default=",".join(RECRUITS), help="comma-separated recruit variants of the cost part"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/reports"))
    args = parser.parse_args()
    tasks = validation_tasks(STREAMS[args.stream].tasks(args.ordering, "quick"), args.ordering)
    variants = args.recruits.split(",")
    unknown = [v for v in variants if v not in RECRUITS]
    if unknown:
        parser.error(f"unknown recruit variant(s) {unknown}; choose from {', '.join(RECRUITS)}")
    # A subset of the variants is a report of its own: it never overwrites the full one's cost table.
    subset = "" if set(variants) == set(RECRUITS) else "-" + "-".join(v.replace(" + ", "-") for v in variants)
    stem = args.out / f"recruit-cost-{args.stream}-o{args.ordering}{subset}"
    args.out.mkdir(parents=True, exist_ok=True)

    def record(key: str, name: str | None, value) -> dict:
        """Add one result to the report on disk (the parts may run as separate processes at once)."""
        path = stem.with_suffix(".json")
        report = json.loads(path.read_text()) if path.exists() else {}
        report |= {"stream": args.stream, "ordering": args.ordering, "commit": commit_stamp()}
        report.setdefault("commands", {})[key] = "python " + " ".join(sys.argv)
        if name is None:
            report[key] = value
        else:
            report.setdefault(key, {})[name] = value
        path.write_text(json.dumps(report, indent=2) + "\n")
        stem.with_suffix(".md").write_text(markdown(report))
        return report

    report: dict = {}
    if "cost" in args.parts:
        report = record("cost", None, recruit_cost(tasks, args.stream, args.ordering, variants))
    if "streams" in args.parts:
        for name in args.streams.split(","):
            result = stream_run(tasks, args.stream, args.ordering, STREAM_RUNS[name])
            print(name, json.dumps(result), flush=True)
            report = record("streams", name, result)
    print(markdown(report))


if __name__ == "__main__":
    main()
