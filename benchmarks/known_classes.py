"""More data for known classes: the same classes delivered in two drops at different times against one drop
holding all their data, on real data with the shipped defaults.

    python benchmarks/known_classes.py [--tier quick] [--ordering 1993] [--out benchmarks/reports]

Split-WordNet-20, MiniLM. One stream is the five tasks as they are. In the other, task 0's training rows are
split in two drops of the same classes: the first half arrives first, the second half after task 1. Both end
having seen the same rows; both are scored on the same held-out rows (every class, class-incremental), for
LiteLoRA and for the frozen encoder with the same head. Writes `<out>/known-classes.{md,json}`.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from pipeline.data.wordnet import split_wordnet20
from pipeline.learn.config import TrainConfig
from pipeline.learn.evaluate import predict_logits
from pipeline.learn.model import ContinualModel
from pipeline.learn.recipe import train_task


def final_accuracy(model: ContinualModel, tasks) -> float:
    """Class-incremental accuracy over every class, on the held-out rows of the original tasks."""
    inputs = [x for t in tasks for x in t.test_inputs]
    truth = [t.classes[y] for t in tasks for y in t.test_labels]
    with torch.no_grad():
        best = predict_logits(model, inputs).argmax(1).tolist()
    return sum(model.classes[i] == c for i, c in zip(best, truth, strict=True)) / len(truth)


def run(stream, scored, method: str, seed: int) -> tuple[float, float, int]:
    """Train `stream` in order; (final accuracy on `scored`'s held-out rows, seconds, adapters kept)."""
    model = ContinualModel(TrainConfig(method=method, seed=seed))
    start = time.perf_counter()
    for task in stream:
        train_task(model, task)
    return final_accuracy(model, scored), time.perf_counter() - start, model.active_adapters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", default="quick")
    parser.add_argument("--ordering", type=int, default=1993)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "reports")
    args = parser.parse_args()
    original = split_wordnet20(args.ordering, args.tier)
    first = original[0]
    halves = [
        replace(
            first,
            name=f"{first.name}-{part}",
            train_inputs=first.train_inputs[i::2],
            train_labels=first.train_labels[i::2],
        )
        for i, part in enumerate(("a", "b"))
    ]
    streams = {"one drop": original, "two drops": [halves[0], original[1], halves[1], *original[2:]]}
    rows = []
    for method in ("litelora", "frozen"):
        for name, stream in streams.items():
            accuracy, seconds, kept = run(stream, original, method, args.ordering)
            rows.append(
                {
                    "method": method,
                    "stream": name,
                    "final_accuracy": accuracy,
                    "seconds": seconds,
                    "adapters": kept,
                }
            )
            print(
                f"{method:9s} {name:10s} final {100 * accuracy:.1f}%  {kept} adapter(s)  {seconds:.0f} s",
                flush=True,
            )
    lines = [
        "# More data for known classes: two drops against one",
        "",
        (
            f"`python benchmarks/known_classes.py --tier {args.tier} --ordering {args.ordering}` · Split-WordNet-20 "
            f"({args.tier} tier, ordering {args.ordering}), MiniLM, shipped defaults (ridge head). Task 0's training rows "
            "arrive either in one drop or in two (half first, half after task 1); final class-incremental accuracy over "
            "all 20 classes on the same held-out rows."
        ),
        "",
        "| method | one drop | two drops | margin | adapters kept (one / two) |",
        "|---|---|---|---|---|",
    ]
    for method in ("litelora", "frozen"):
        one, two = (r for r in rows if r["method"] == method)
        lines.append(
            f"| {method} | {100 * one['final_accuracy']:.1f} | {100 * two['final_accuracy']:.1f} | "
            f"{100 * (two['final_accuracy'] - one['final_accuracy']):+.1f} | {one['adapters']} / {two['adapters']} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "known-classes.md").write_text("\n".join(lines) + "\n")
    (args.out / "known-classes.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
