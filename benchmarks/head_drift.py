"""How much stale head statistics cost after a task moves the features, and how much drift compensation wins back.

One LiteLoRA stream (a light sparsity weight, so later tasks recruit and move every earlier class's features);
after every task the ridge head and the aligned head are fitted four ways from the same features and scored
class-incrementally on every task seen:

    stale    each class's sums / statistics as measured when its task closed (no compensation)
    means    each class mean moved along the kernel-weighted drift of the new task's own rows (drift="means")
    linear   every row moved by one affine map fitted on the new task's own rows (drift="linear", drift_map.py)
    oracle   sums / statistics recomputed from every seen task's training rows under the current model: keeps
             examples, which a set never does; it bounds what any compensation can win

Scored on validation rows cut from each task's training rows (`validation_tasks`), where a choice is made;
`--test` scores the test rows instead (only to check a choice).

Run: python benchmarks/head_drift.py [--ordering 1993] [--sparsity 0.1] [--test]
Writes benchmarks/reports/head-drift.{md,json}, stamped with the commit it ran on.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from pipeline.bench.continual import validation_tasks
from pipeline.bench.stamp import commit_stamp
from pipeline.data.wordnet import split_wordnet20
from pipeline.learn.adapted_features import features_of
from pipeline.learn.class_stats import ClassStatistics
from pipeline.learn.config import TrainConfig
from pipeline.learn.head_options import align_classifier
from pipeline.learn.model import ContinualModel
from pipeline.learn.recipe import train_task
from pipeline.learn.ridge import RidgeHead, held_out

VARIANTS = ("stale", "means", "linear", "oracle")
HEADS = ("ridge", "aligned")


class Heads:
    """The ridge head and the class statistics of one variant, fed the same rows."""

    def __init__(self, model: ContinualModel):
        self.ridge = RidgeHead()
        self.stats = ClassStatistics.empty(model.encoder.hidden_size, model.config.stats_rank)

    def add(self, features: torch.Tensor, labels: torch.Tensor, inputs: list, num_classes: int) -> None:
        self.ridge.add(features, labels, num_classes, held_out(inputs))
        self.stats.add_rows(features, labels, num_classes)

    def accuracies(self, model, seed: int, scored: list[tuple[torch.Tensor, torch.Tensor]]) -> dict:
        """Per head: (pooled accuracy over every seen task, pooled accuracy over all but the newest)."""
        self.ridge.fit()
        weight, bias = align_classifier(
            model.heads, self.stats, steps=model.config.align_steps, seed=seed, rows=model.first_head_rows()
        )
        predict = {
            "ridge": lambda x: self.ridge.scores(x).argmax(1),
            "aligned": lambda x: (x @ weight.T + bias).argmax(1),
        }
        out = {}
        for head, fn in predict.items():
            hits = [(fn(x) == y).float() for x, y in scored]
            old = torch.cat(hits[:-1]).mean().item() if len(hits) > 1 else None
            out[head] = (torch.cat(hits).mean().item(), old)
        return out


def run(ordering: int, sparsity: float, test: bool, tier: str = "quick") -> dict:
    tasks = split_wordnet20(ordering, tier)
    tasks = tasks if test else validation_tasks(tasks, ordering)
    model = ContinualModel(TrainConfig(seed=ordering).with_overrides(sparsity=sparsity))
    heads = {v: Heads(model) for v in ("stale", "means", "linear")}
    stages, map_seconds = [], []
    for t, task in enumerate(tasks):
        before = features_of(model, task.train_inputs) if t else None
        result = train_task(model, task, head_options=("linear",))  # the variants are fitted here, below
        after = features_of(model, task.train_inputs)
        labels = model.class_index(task.classes)[torch.tensor(task.train_labels)]
        if before is not None and not torch.equal(before, after):
            heads["means"].ridge.compensate_drift(before, after, "means")
            heads["means"].stats.compensate_drift(before, after, "means")
            clock = time.process_time()
            heads["linear"].ridge.compensate_drift(before, after, "linear")
            heads["linear"].stats.compensate_drift(before, after, "linear")
            map_seconds.append(time.process_time() - clock)
        for h in heads.values():
            h.add(after, labels, task.train_inputs, len(model.classes))
        oracle = Heads(model)
        for seen in tasks[: t + 1]:
            rows = after if seen is task else features_of(model, seen.train_inputs)
            seen_labels = model.class_index(seen.classes)[torch.tensor(seen.train_labels)]
            oracle.add(rows, seen_labels, seen.train_inputs, int(seen_labels.max()) + 1)
        scored = [
            (
                features_of(model, seen.test_inputs),
                model.class_index(seen.classes)[torch.tensor(seen.test_labels)],
            )
            for seen in tasks[: t + 1]
        ]
        stage = {"task": t, "decision": result.decision.decision}
        for name, h in {**heads, "oracle": oracle}.items():
            stage[name] = h.accuracies(model, ordering + t, scored)
        stages.append(stage)
        print(
            f"o{ordering} task {t} ({stage['decision']}): "
            + "; ".join(
                f"{head} " + " ".join(f"{v} {100 * stage[v][head][0]:.1f}" for v in VARIANTS)
                for head in HEADS
            ),
            flush=True,
        )
    return {
        "ordering": ordering,
        "tier": tier,
        "sparsity": sparsity,
        "adapters": model.active_adapters,
        "decisions": [s["decision"] for s in stages],
        "stages": stages,
        "linear_map_cpu_s": map_seconds,
        "avg_accuracy": {
            head: {v: statistics.fmean(s[v][head][0] for s in stages) for v in VARIANTS} for head in HEADS
        },
    }


def markdown(report: dict) -> list[str]:
    r = report["run"]
    lines = [
        "# Head statistics under feature drift: stale vs means vs linear vs oracle",
        "",
        f"> Ran on commit {report['commit']}.",
        "",
        (
            f"LiteLoRA, Split-WordNet-20 {r['tier']} tier, ordering {r['ordering']}, sparsity λ = {r['sparsity']} "
            f"(so later tasks recruit; decisions {' '.join(d[:3] for d in r['decisions'])}, {r['adapters']} "
            f"adapters kept); scored on **{report['split']} rows**. Class-incremental accuracy in %, pooled over "
            "the rows of every task seen; A = mean over stages."
        ),
        f"Command: `{report['command']}`",
        "",
        "| head | " + " | ".join(f"A {v}" for v in VARIANTS) + " |",
        "|---|" + "---|" * len(VARIANTS),
    ]
    for head in HEADS:
        lines.append(
            f"| {head} | " + " | ".join(f"{100 * r['avg_accuracy'][head][v]:.1f}" for v in VARIANTS) + " |"
        )
    lines += [
        "",
        "Right after each task: accuracy over every seen task / over the earlier tasks' rows only (old classes).",
        "",
        "| task | decision | head | " + " | ".join(f"{v} all / old" for v in VARIANTS) + " |",
        "|---|---|---|" + "---|" * len(VARIANTS),
    ]
    for s in r["stages"][1:]:
        for head in HEADS:
            cells = [f"{100 * s[v][head][0]:.1f} / {100 * s[v][head][1]:.1f}" for v in VARIANTS]
            lines.append(f"| {s['task']} | {s['decision']} | {head} | " + " | ".join(cells) + " |")
    seconds = r["linear_map_cpu_s"]
    if seconds:
        lines += [
            "",
            (
                "Linear map (fit on the task's rows, ridge and class statistics moved): "
                f"{statistics.fmean(seconds):.2f} CPU s per drifting task (mean of {len(seconds)}); the map is "
                "used once and never stored."
            ),
        ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ordering", type=int, default=1993)
    parser.add_argument("--sparsity", type=float, default=0.1)
    parser.add_argument("--test", action="store_true", help="score the test rows (only to check a choice)")
    parser.add_argument("--tier", default="quick", choices=("ci", "quick"), help="ci: a smoke run")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "reports")
    args = parser.parse_args()
    report = {
        "commit": commit_stamp(),
        "command": "python " + " ".join(sys.argv),
        "split": "test" if args.test else "validation",
        "run": run(args.ordering, args.sparsity, args.test, args.tier),
    }
    lines = markdown(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "head-drift.md").write_text("\n".join(lines) + "\n")
    (args.out / "head-drift.json").write_text(json.dumps(report, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
