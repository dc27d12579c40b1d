"""Render a benchmark report: a terminal table and a markdown file."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from pipeline.bench import plots
from pipeline.methods.frozen import METHOD as FROZEN_METHOD

FROZEN = FROZEN_METHOD.name


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def _title(report: dict) -> str:
    return report.get("title", "Split-WordNet-20")  # reports written before the stream was recorded


def frozen_gaps(report: dict, entry: dict) -> tuple[float | None, float | None]:
    """A of `entry` (a summary entry) minus A of the frozen encoder with the same head, and minus ncm-frozen."""

    def mean_a(method: str, head: str | None) -> float | None:
        found = [
            s for s in report["summary"] if s["method"] == method and (head is None or s["head"] == head)
        ]
        return found[0]["avg_accuracy"] if found and found[0]["avg_accuracy"] is not None else None

    a = entry["avg_accuracy"]
    same, ncm = mean_a(FROZEN, entry["head"]), mean_a("ncm-frozen", None)
    return (
        None if a is None or same is None or entry["method"] == FROZEN else a - same,
        None if a is None or ncm is None or entry["method"] == "ncm-frozen" else a - ncm,
    )


def _delta(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:+.1f}"


def rows_table(report: dict) -> Table:
    table = Table(title=f"{_title(report)} ({report['tier']} tier), class-incremental; accuracies in %")
    for col in (
        "method",
        "head",
        "ordering",
        "A",
        "final",
        "F",
        "A (TIL)",
        "#Ad",
        "stored/task",
        "time s",
        "decisions",
    ):
        table.add_column(col, justify="left" if col in ("method", "head", "decisions") else "right")
    for r in report["rows"]:
        table.add_row(
            r["method"],
            r["head"],
            str(r["ordering"]),
            _pct(r["avg_accuracy"]),
            _pct(r["final_accuracy"]),
            _pct(r["forgetting"]),
            _pct(r["til_avg_accuracy"]),
            str(r["active_adapters"]),
            f"{r['stored_params_per_task']:,.0f}",
            f"{r['wall_time']:.0f}",
            " ".join(d[:3] for d in r["decisions"]),
        )
    return table


def print_report(report: dict, console: Console | None = None) -> None:
    console = console or Console()
    console.print(rows_table(report))
    for r in report["rows"]:
        cil = r["accuracy_matrix"] is not None
        console.print(
            f"\n{r['method']} ({r['head']} head) o{r['ordering']}: "
            f"{'' if cil else 'task-incremental '}accuracy matrix R[task][after task] (%)"
        )
        for j, row in enumerate(r["accuracy_matrix"] if cil else r["til_accuracy_matrix"]):
            console.print(
                f"  task {j}: " + " ".join(f"{_pct(v):>5}" if t >= j else "    ." for t, v in enumerate(row))
            )


def markdown(report: dict, command: str, figures: tuple[str, ...] = ()) -> str:
    lines = [
        f"# {_title(report)} benchmark ({report['tier']} tier)",
        "",
        f"Command: `{command}`  ",
        (
            f"Started {report['started']}, took {report['duration_s']:.0f} s on {report['environment']['platform']} "
            f"({report['environment']['device']}, {report['environment']['cpu_count']} threads).  "
        ),
        "Versions: " + ", ".join(f"{k} {v}" for k, v in report["environment"]["packages"].items()) + ".",
        "",
        (
            "Class-incremental accuracy in %: A = average anytime accuracy, final = after the last task, F = forgetting;"
            " A (TIL) = task-incremental (the only protocol for share and lora-per-task, which need the task id: — marks"
            " the class-incremental scores they do not have); ΔA frozen = A minus A of the frozen encoder (`frozen`: no"
            " adapters) with the same head, ΔA NCM = A minus A of the frozen nearest class mean (`ncm-frozen`): a gain"
            " that disappears against them is not a gain; `joint` trains every task at once (the ceiling, not"
            " continual); #Ad = adapters kept; stored/task = adapter parameters stored per task;"
            " head bytes/set = what the head option keeps beyond its linear heads (statistics, sums, calibration,"
            " classifier; never examples)."
        ),
        "",
        "## Mean ± spread over orderings",
        "",
        (
            "| method | head | runs | A | ΔA frozen | ΔA NCM | final | F | A (TIL) | F (TIL) | #Ad | stored/task"
            " | head bytes/set | time s |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def cell(s: dict, k: str) -> str:
        return "—" if s[k] is None else f"{_pct(s[k])} ± {_pct(s[k + '_std'])}"

    for s in report["summary"]:
        same, ncm = frozen_gaps(report, s)
        lines.append(
            f"| {s['method']} | {s['head']} | {s['runs']} | {cell(s, 'avg_accuracy')} | {_delta(same)} | {_delta(ncm)}"
            f" | {cell(s, 'final_accuracy')} | {cell(s, 'forgetting')} | {cell(s, 'til_avg_accuracy')}"
            f" | {cell(s, 'til_forgetting')} | {s['active_adapters']:.1f} | {s['stored_params_per_task']:,.0f}"
            f" | {s.get('scoring_bytes') or 0:,.0f} | {s['wall_time']:.0f} |"
        )
    lines += [
        "",
        "## Every run",
        "",
        "| method | head | ordering | A | final | F | A (TIL) | #Ad | decisions | time s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['method']} | {r['head']} | {r['ordering']} | {_pct(r['avg_accuracy'])} | {_pct(r['final_accuracy'])}"
            f" | {_pct(r['forgetting'])} | {_pct(r['til_avg_accuracy'])} | {r['active_adapters']}"
            f" | {' '.join(r['decisions'])} | {r['wall_time']:.0f} |"
        )
    lines += [line for name in figures for line in ("", f"![{name}]({name})")]
    lines += ["", "## Configuration", "", "```json", json.dumps(report["config"], indent=2), "```", ""]
    return "\n".join(lines)


def write_report(report: dict, directory: str | Path, name: str, command: str) -> tuple[Path, Path]:
    """JSON, markdown and two figures (accuracy against stored parameters, accuracy matrices)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    report = {**report, "command": command}
    json_path, md_path = directory / f"{name}.json", directory / f"{name}.md"
    storage = plots.accuracy_vs_storage(report, directory / f"{name}-storage.png")
    matrices = plots.accuracy_matrices(report, directory / f"{name}-matrices.png")
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(markdown(report, command, (storage.name, matrices.name)))
    return json_path, md_path


def report_name(
    stream_prefix: str,
    tier: str,
    orderings: tuple[int, ...],
    heads: tuple[str, ...],
    default_head: str,
    quick: bool = False,
    full: bool = False,
) -> str:
    """The file stem of a bench report: `quick`, `full-<tier>`, or `<tier>-o<orderings>[-heads]`, after the
    stream's prefix (`fashion-…`)."""
    if full:
        return f"{stream_prefix}full-{tier}"
    name = "quick" if quick else f"{tier}-o{'-'.join(map(str, orderings))}"
    return stream_prefix + name + ("-heads" if heads != (default_head,) else "")
