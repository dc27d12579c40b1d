"""Benchmark figures: accuracy against stored parameters, and every method's accuracy matrix."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from pipeline.registry.plots import (  # also selects the file-only Agg backend
    draw_accuracy_matrix,
    save_figure,
)


def _label(row: dict) -> str:
    return (
        row["method"]
        if row["head"] == "linear" or row["method"] == "ncm-frozen"
        else f"{row['method']}+{row['head']}"
    )


def accuracy_vs_storage(report: dict, path: Path) -> Path:
    """One point per method × ordering: stored adapter parameters per task against A (class- and
    task-incremental side by side; stored parameters are the common currency across Share and SD-LoRA)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    labels = list(dict.fromkeys(_label(r) for r in report["rows"]))
    colours = {label: plt.cm.tab10(i % 10) for i, label in enumerate(labels)}
    for ax, key, title in (
        (axes[0], "avg_accuracy", "class-incremental A"),
        (axes[1], "til_avg_accuracy", "task-incremental A"),
    ):
        for label in labels:
            mine = [r for r in report["rows"] if _label(r) == label and r[key] is not None]
            if mine:
                ax.scatter(
                    [max(r["stored_params_per_task"], 1) for r in mine],
                    [100 * r[key] for r in mine],
                    color=colours[label],
                    label=label,
                    alpha=0.8,
                )
        ax.set_xscale("log")
        ax.set_xlabel("stored adapter parameters per task (log; frozen reference at 1)")
        ax.set_ylabel(f"{title} (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)


def accuracy_matrices(report: dict, path: Path, ordering: int | None = None) -> Path:
    """Each run's R[task][after task] for one ordering (task-incremental for the task-id methods)."""
    ordering = report["orderings"][0] if ordering is None else ordering
    rows = [r for r in report["rows"] if r["ordering"] == ordering]
    cols = min(4, len(rows))
    fig, axes = plt.subplots(
        (len(rows) + cols - 1) // cols,
        cols,
        figsize=(3.3 * cols, 3.0 * ((len(rows) + cols - 1) // cols)),
        squeeze=False,
    )
    for ax, row in zip(axes.flat, rows, strict=False):
        matrix = row["accuracy_matrix"] or row["til_accuracy_matrix"]
        n = len(matrix)
        draw_accuracy_matrix(ax, matrix, fontsize=7)
        ax.set_title(f"{_label(row)}{'' if row['accuracy_matrix'] else ' (TIL)'}", fontsize=9)
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.set_xlabel("after task", fontsize=8)
        ax.set_ylabel("task", fontsize=8)
    for ax in list(axes.flat)[len(rows) :]:
        ax.axis("off")
    fig.subplots_adjust(hspace=0.55)  # room for each panel's axis label above the next row's title
    fig.suptitle(f"Accuracy (%) per task, ordering {ordering}", fontsize=10)
    return save_figure(fig, path)
