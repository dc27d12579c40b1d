"""Subspace redundancy: how much the adapters overlap, and whether the gate prunes the tasks already covered.

Two sources: a registered adapter set (its kept adapters, per layer, and the coverage every task's adapter had
when the gate decided), or a bench report (coverage against decision over every LiteLoRA run, and the overlap
of SD-LoRA's adapters, which keeps them all).
"""

from __future__ import annotations

import statistics
from pathlib import Path

import matplotlib.pyplot as plt

from pipeline.learn.subspace import mean_overlap, overlap_matrices
from pipeline.methods import DEFAULT_METHOD, method_of
from pipeline.methods.sdlora import METHOD as SDLORA_METHOD
from pipeline.registry.plots import save_figure  # also selects the file-only Agg backend

SDLORA = SDLORA_METHOD.name


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _off_diagonal(matrix: list[list[float]]) -> list[float]:
    return [v for i, row in enumerate(matrix) for j, v in enumerate(row) if i < j]


def analyze_model(model) -> dict:
    """Per-layer overlap between kept adapters and, per task, the coverage its adapter had at the decision."""
    per_layer = overlap_matrices(model)
    owners = [model.tasks[slot].name for slot in model.adapter_slots()]
    tasks = [
        {
            "task": t.name,
            "decision": t.decision,
            "gate_logit": t.logit,
            "coverage": t.coverage,
            "chance_coverage": t.chance_coverage,
        }
        for t in model.tasks
    ]
    return {
        "adapters": owners,
        "overlap_per_layer": per_layer,
        "overlap": mean_overlap(per_layer),
        "mean_pairwise_overlap": _mean([v for m in per_layer.values() for v in _off_diagonal(m)]),
        "tasks": tasks,
        **_by_decision(tasks),
    }


def _by_decision(tasks: list[dict]) -> dict:
    scored = [t for t in tasks if t["coverage"] is not None]
    return {
        "coverage_reused": _mean([t["coverage"] for t in scored if t["decision"] == "reuse"]),
        "coverage_recruited": _mean([t["coverage"] for t in scored if t["decision"] == "recruit"]),
        "chance_coverage": _mean([t["chance_coverage"] for t in scored]),
    }


def analyze_report(report: dict) -> dict:
    """Coverage against decision over every LiteLoRA run of a bench report, and SD-LoRA's pairwise overlap."""
    tasks = [
        {
            "task": f"o{r['ordering']} t{i}",
            "decision": d,
            "coverage": c,
            "chance_coverage": ch,
            "gate_logit": None,
        }
        for r in report["rows"]
        if r["method"] == DEFAULT_METHOD and r["head"] == "linear"
        for i, (d, c, ch) in enumerate(zip(r["decisions"], r["coverage"], r["chance_coverage"], strict=True))
    ]
    sdlora = [r for r in report["rows"] if r["method"] == SDLORA and r["head"] == "linear"]
    return {
        "tasks": tasks,
        **_by_decision(tasks),
        "sdlora_mean_pairwise_overlap": _mean([v for r in sdlora for v in _off_diagonal(r["overlap"])]),
        "sdlora_overlap": {r["ordering"]: r["overlap"] for r in sdlora},
    }


def markdown(analysis: dict, title: str, figures: tuple[str, ...] = ()) -> str:
    def pct(x: float | None) -> str:
        return "—" if x is None else f"{100 * x:.1f}%"

    lines = [
        f"# Subspace redundancy: {title}",
        "",
        (
            "Coverage of a task's adapter = mean cos² of the principal angles between its column space and the span"
            " of the adapters kept before it (1 = already covered), measured when the gate decided;"
            " chance = what a random subspace of the same rank would get."
        ),
        "",
        f"- mean coverage of **pruned** (reused) tasks: {pct(analysis['coverage_reused'])}",
        f"- mean coverage of **recruited** tasks: {pct(analysis['coverage_recruited'])}",
        f"- chance level: {pct(analysis['chance_coverage'])}",
    ]
    if analysis.get("sdlora_mean_pairwise_overlap") is not None:
        lines.append(
            f"- SD-LoRA, mean pairwise overlap of its (all kept) adapters: "
            f"{pct(analysis['sdlora_mean_pairwise_overlap'])}"
        )
    if analysis.get("mean_pairwise_overlap") is not None:
        lines.append(
            f"- mean pairwise overlap of the kept adapters over all layers: "
            f"{pct(analysis['mean_pairwise_overlap'])}"
        )
    lines += ["", "| task | decision | coverage | chance |", "|---|---|---|---|"]
    lines += [
        f"| {t['task']} | {t['decision']} | {pct(t['coverage'])} | {pct(t['chance_coverage'])} |"
        for t in analysis["tasks"]
    ]
    lines += [line for name in figures for line in ("", f"![{name}]({name})")]
    return "\n".join(lines) + "\n"


def coverage_plot(analysis: dict, path: Path) -> Path:
    """Coverage of each task's adapter by decision, with the chance level."""
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for x, decision in enumerate(("recruit", "reuse")):
        values = [
            t["coverage"]
            for t in analysis["tasks"]
            if t["decision"] == decision and t["coverage"] is not None
        ]
        ax.scatter(
            [x + 0.05 * (i % 5 - 2) for i in range(len(values))],
            [100 * v for v in values],
            alpha=0.7,
            label=f"{decision} ({len(values)})",
        )
    if analysis["chance_coverage"] is not None:
        ax.axhline(100 * analysis["chance_coverage"], color="grey", linestyle="--", label="chance")
    ax.set_xticks([0, 1], ["recruited", "pruned (reused)"])
    ax.set_ylabel("coverage by kept adapters (%)")
    ax.set_title("Does the gate prune tasks already covered?", fontsize=10)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def layer_overlap_plot(analysis: dict, path: Path) -> Path:
    """One overlap heatmap per adapted layer."""
    layers = list(analysis["overlap_per_layer"].items())
    cols = min(4, max(len(layers), 1))
    rows = max(1, (len(layers) + cols - 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.8 * cols, 2.6 * rows), squeeze=False)
    for ax, (name, matrix) in zip(axes.flat, layers, strict=False):
        if matrix:
            ax.imshow(matrix, vmin=0, vmax=1, cmap="magma")
        ax.set_title(name.replace("encoder.layer.", "L").replace("attention.self.", ""), fontsize=8)
        ax.set_xticks(range(len(matrix)))
        ax.set_yticks(range(len(matrix)))
    for ax in list(axes.flat)[len(layers) :]:
        ax.axis("off")
    fig.suptitle("Overlap of kept adapters per layer (mean cos², 0–1)", fontsize=10)
    return save_figure(fig, path)


def write_report_analysis(report_path: Path, out: Path | None = None) -> tuple[dict, Path]:
    """Analyse a bench JSON report; markdown and figure beside it (or in `out`). Returns (analysis, markdown)."""
    import json

    try:
        result = analyze_report(json.loads(report_path.read_text()))
    except (OSError, json.JSONDecodeError, KeyError) as e:
        raise ValueError(f"{report_path}: not a bench report with LiteLoRA rows ({e})") from e
    directory = out or report_path.parent
    figure = coverage_plot(result, directory / f"{report_path.stem}-coverage.png")
    path = directory / f"{report_path.stem}-analysis.md"
    path.write_text(markdown(result, f"bench report {report_path.name}", (figure.name,)))
    return result, path


def write_version_analysis(registry, version: str | None, out: Path | None = None) -> tuple[dict, Path]:
    """Analyse a registered version (default `current`); files in `out` (default a new temporary directory),
    also logged to the version's MLflow run under analysis/. Returns (analysis, markdown)."""
    import json
    import tempfile

    from pipeline.registry.current import load_current
    from pipeline.registry.lineage import LineageError

    registered = registry.lineage.get(version) if version else registry.current()
    if registered is None:
        raise LineageError("no adapter set is `current` yet: train and register a task first")
    if method_of(
        json.loads(registered.tags.get("config", "{}")).get("method", DEFAULT_METHOD)
    ).selects_by_task:
        raise ValueError(
            f"v{registered.version} is a Share set: the analysis measures the gate's kept adapters, which it has "
            "none of (each task's delta is in `litelora export`)"
        )
    found = load_current(registry, registered.version)
    result = analyze_model(found.model)
    directory = out or Path(tempfile.mkdtemp(prefix="litelora-analysis-"))
    figures = (
        layer_overlap_plot(result, directory / "layer_overlap.png"),
        coverage_plot(result, directory / "coverage.png"),
    )
    path = directory / "analysis.md"
    path.write_text(markdown(result, f"v{found.version}", tuple(f.name for f in figures)))
    (directory / "analysis.json").write_text(json.dumps(result, indent=2))
    registry.lineage.run(registry.lineage.get(found.version).run_id).log_artifacts(str(directory), "analysis")
    return result, path
