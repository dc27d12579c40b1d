"""Does adaptation pay when the domain changes? Split-Domains-27 (WordNet nouns, WordNet verbs, Debian package
descriptions) on one ordering, the frozen encoder beside the gated methods and the joint ceiling, every one with the
shipped defaults, scored on validation rows cut from each task's training rows (never the test rows).

    python benchmarks/domain_shift.py [--stream domains|domains-alternating] [--ordering 1993] [--out benchmarks/reports]

Writes `<out>/<stream>-o<ordering>.{md,json}`, stamped with the commit it ran on and the snapshot's SHA-256.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from levers import HEADS, run_lever  # the same one-run harness, so the numbers sit beside the levers' tables

from pipeline.bench.continual import STREAMS
from pipeline.bench.stamp import commit_stamp
from pipeline.data.domain_shift import POOL_SHA256, recorded_sources, sha256, shipped_pool_path

RUNS: dict[str, dict] = {
    "frozen": {"method": "frozen"},
    "joint (ceiling)": {"joint": True},
    "litelora": {},
    "adapt-once": {"method": "adapt-once"},
    "sdlora": {"method": "sdlora"},
}
"""Method → its changes to the shipped defaults; the ceiling second, so the headroom is known early."""


def markdown(report: dict) -> str:
    lines = [
        f"# {report['title']}, ordering {report['ordering']} (validation rows)",
        "",
        (
            f"`{report['command']}` at commit {report['commit']}, {report['cores']} cores, OMP threads "
            f"{report['omp_threads']}. Snapshot `{report['snapshot']}` sha256 `{report['snapshot_sha256']}`."
        ),
        "",
        (
            "Class-incremental accuracy in %; A = average anytime accuracy, final = after the last task, ΔA frozen = "
            "A minus the frozen encoder's A with the same head; #Ad = adapters kept; decisions = the gate's per task."
        ),
        "",
        "| method | head | A | ΔA frozen | final | A (TIL) | #Ad | decisions | CPU s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    frozen = report["runs"]["frozen"]["rows"]
    for name, run in report["runs"].items():
        for head, row in run["rows"].items():
            delta = (
                "—"
                if name == "frozen"
                else f"{100 * (row['avg_accuracy'] - frozen[head]['avg_accuracy']):+.1f}"
            )
            lines.append(
                f"| {name} | {head} | {100 * row['avg_accuracy']:.1f} | {delta} | "
                f"{100 * row['final_accuracy']:.1f} | {100 * row['til_avg_accuracy']:.1f} | "
                f"{row['active_adapters']} | {' '.join(row['decisions'])} | {run['cpu_s']:.0f} |"
            )
    lines += ["", "Tasks in order: " + ", ".join(report["tasks"]), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream", default="domains", choices=("domains", "domains-alternating"))
    parser.add_argument("--ordering", type=int, default=1993)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/reports"))
    args = parser.parse_args()
    spec = STREAMS[args.stream]
    report = {
        "title": spec.title,
        "ordering": args.ordering,
        "command": "python " + " ".join(sys.argv),
        "commit": commit_stamp(),
        "cores": os.cpu_count(),
        "omp_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "snapshot": shipped_pool_path().name,
        "snapshot_sha256": sha256(shipped_pool_path()),
        "snapshot_pinned": POOL_SHA256,
        "sources": recorded_sources(),
        "tasks": [f"{t.name} ({' '.join(t.classes)})" for t in spec.tasks(args.ordering, "quick")],
        "heads": list(HEADS),
        "runs": {},
    }
    stem = args.out / f"{args.stream}-o{args.ordering}"
    args.out.mkdir(parents=True, exist_ok=True)
    for name, settings in RUNS.items():
        report["runs"][name] = run_lever(args.stream, args.ordering, settings, test=False)
        row = report["runs"][name]["rows"][HEADS[0]]
        print(
            f"{name}: A {100 * row['avg_accuracy']:.1f}, final {100 * row['final_accuracy']:.1f}", flush=True
        )
        stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")  # after every run
        stem.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
