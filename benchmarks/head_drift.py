"""How much stale class statistics cost the aligned head, and how much drift compensation wins back.

After every task of a LiteLoRA stream, the aligned classifier is re-fitted three ways and scored
class-incrementally on every task seen:

    stale      each class's statistics as measured when its task closed (no compensation)
    drift      the product path: means moved along the feature drift of each later task's own data
    refreshed  statistics recomputed from every seen task's training rows under the current model — an
               oracle that keeps examples, which a set never does; it bounds what better compensation can win

Run: python benchmarks/head_drift.py [--orderings 1993,1995,2000] — writes benchmarks/reports/head-drift.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace
from pathlib import Path

import torch

from pipeline.data.wordnet import split_wordnet20
from pipeline.learn.adapted_features import features_of
from pipeline.learn.class_stats import ClassStatistics
from pipeline.learn.config import TrainConfig
from pipeline.learn.head_options import align_classifier
from pipeline.learn.model import ContinualModel
from pipeline.learn.recipe import train_task

VARIANTS = ("stale", "drift", "refreshed")


def cil_accuracy(
    weight: torch.Tensor,
    bias: torch.Tensor,
    tests: list[tuple[torch.Tensor, torch.Tensor]],
    offsets: list[int],
) -> float:
    accs = [
        float(((x @ weight.T + bias).argmax(1) == y + off).float().mean())
        for (x, y), off in zip(tests, offsets)
    ]
    return statistics.fmean(accs)


def run(ordering: int) -> dict:
    tasks = split_wordnet20(ordering, "quick")
    model = ContinualModel(replace(TrainConfig(), seed=ordering))
    dim, rank = model.encoder.hidden_size, model.config.stats_rank
    stats = {v: ClassStatistics.empty(dim, rank) for v in ("stale", "drift")}
    curve = {v: [] for v in VARIANTS}
    for t, task in enumerate(tasks):
        before = features_of(model, task.train_inputs) if t else None
        train_task(model, task)
        after, labels = features_of(model, task.train_inputs), torch.tensor(task.train_labels)
        if before is not None:
            stats["drift"].compensate_drift(before, after)
        for s in stats.values():
            s.add_classes(after, labels, len(task.classes))
        refreshed = ClassStatistics.empty(dim, rank)
        for seen in tasks[: t + 1]:
            refreshed.add_classes(
                features_of(model, seen.train_inputs), torch.tensor(seen.train_labels), len(seen.classes)
            )
        tests = [
            (features_of(model, seen.test_inputs), torch.tensor(seen.test_labels)) for seen in tasks[: t + 1]
        ]
        for name, s in (("stale", stats["stale"]), ("drift", stats["drift"]), ("refreshed", refreshed)):
            weight, bias = align_classifier(model.heads, s, steps=model.config.align_steps, seed=ordering + t)
            curve[name].append(cil_accuracy(weight, bias, tests, model.heads.offsets()))
        print(
            f"o{ordering} task {t}: " + " ".join(f"{v} {100 * curve[v][-1]:.1f}" for v in VARIANTS),
            flush=True,
        )
    return {
        "ordering": ordering,
        "adapters": model.active_adapters,
        **{
            v: {"avg_accuracy": statistics.fmean(c), "final_accuracy": c[-1], "curve": c}
            for v, c in curve.items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orderings", default="1993,1995,2000")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "reports")
    args = parser.parse_args()
    runs = [run(int(o)) for o in args.orderings.split(",")]
    lines = [
        "# Aligned head: stale vs drift-compensated vs refreshed class statistics",
        "",
        "LiteLoRA, Split-WordNet-20 quick tier, default configuration; class-incremental accuracy in %.",
        f"Command: `python benchmarks/head_drift.py --orderings {args.orderings}`",
        "",
        "| ordering | adapters | " + " | ".join(f"A {v} | final {v}" for v in VARIANTS) + " |",
        "|---|---|" + "---|---|" * len(VARIANTS),
    ]
    for r in runs:
        lines.append(
            f"| {r['ordering']} | {r['adapters']} | "
            + " | ".join(
                f"{100 * r[v]['avg_accuracy']:.1f} | {100 * r[v]['final_accuracy']:.1f}" for v in VARIANTS
            )
            + " |"
        )
    mean = {
        v: (
            statistics.fmean(r[v]["avg_accuracy"] for r in runs),
            statistics.fmean(r[v]["final_accuracy"] for r in runs),
        )
        for v in VARIANTS
    }
    lines.append(
        "| mean | | " + " | ".join(f"{100 * a:.1f} | {100 * f:.1f}" for a, f in mean.values()) + " |"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "head-drift.md").write_text("\n".join(lines) + "\n")
    (args.out / "head-drift.json").write_text(json.dumps({"runs": runs, "mean": mean}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
