"""The figures logged with every adapter-set version (matplotlib, written as PNG files)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt

MAX_INCHES = 14.0
"""The longest side of a figure: a figure that grew with the lineage would cost every drop more pixels to draw
(quadratically, for a task × task grid) than the one before."""
LABELLED_CELLS = 400
"""Grids with more cells than this (a 20 × 20 accuracy matrix) are drawn without a number in each cell: past
that they are unreadable, and each is a text to lay out on every drop."""
LABELLED_NODES = 40
"""The lineage tree names its newest versions (and `current`) only."""


def figure(width: float, height: float):
    """A figure of `width` × `height` inches, scaled down (keeping its shape) to at most MAX_INCHES a side."""
    scale = min(1.0, MAX_INCHES / max(width, height))
    return plt.subplots(figsize=(width * scale, height * scale))


def labelled(rows: int, columns: int) -> bool:
    return rows * columns <= LABELLED_CELLS


def save_figure(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def draw_accuracy_matrix(ax, matrix: list[list[float]], fontsize: float | None = None):
    """R[task][after task] in % on `ax`, each cell labelled, the upper triangle (future tasks) blank."""
    n = len(matrix)
    data = [[100 * matrix[j][t] if t >= j else float("nan") for t in range(n)] for j in range(n)]
    im = ax.imshow(data, vmin=0, vmax=100, cmap="viridis")
    for j in range(n if labelled(n, n) else 0):
        for t in range(j, n):
            ax.text(
                t,
                j,
                f"{data[j][t]:.0f}",
                ha="center",
                va="center",
                fontsize=fontsize,
                color="w" if data[j][t] < 60 else "k",
            )
    return im


def accuracy_heatmap(matrix: list[list[float]], tasks: list[str], path: Path) -> Path:
    """R[task][after task] in %, upper triangle (future tasks) left blank."""
    n = len(matrix)
    fig, ax = figure(3.5 + 0.9 * n, 2.5 + 0.7 * n)
    im = draw_accuracy_matrix(ax, matrix)
    ax.set_xticks(range(n), [f"after {i}" for i in range(n)], rotation=45, ha="right")
    ax.set_yticks(range(n), tasks)
    ax.set_title("Accuracy (%) per task\n(rows: task; columns: after training task …)", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return save_figure(fig, path)


def class_accuracy(rows: list[dict], stages: list[str], path: Path) -> Path:
    """Each class's accuracy (%) on its latest held-out rows after each stage, the frozen encoder's beside the
    last; blank before a class was known (`ClassHistory.rows`)."""
    cells = [[*r["accuracy"], r["frozen_accuracy"]] for r in rows]
    data = [[float("nan") if v is None else 100 * v for v in row] for row in cells]
    n, k = max(len(rows), 1), len(stages) + 1
    fig, ax = figure(3.5 + 0.8 * k, 1.5 + 0.35 * n)
    im = ax.imshow(data or [[float("nan")] * k], vmin=0, vmax=100, cmap="viridis", aspect="auto")
    for i, row in enumerate(cells if labelled(n, k) else []):
        for j, value in enumerate(row):
            if value is not None:
                value = 100 * value
                ax.text(
                    j,
                    i,
                    f"{value:.0f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="w" if value < 60 else "k",
                )
    ax.axvline(k - 1.5, color="w", linewidth=3)
    ax.set_xticks(range(k), [*stages, "frozen encoder,\nsame head"], rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), [r["class"] for r in rows], fontsize=8)
    ax.set_title("Accuracy (%) per class, on its latest held-out rows", fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return save_figure(fig, path)


def adapter_usage(tasks: list[dict], adapters: list[dict], path: Path) -> Path:
    """Which kept adapters serve each task: task t uses every kept adapter trained at or before t."""
    slots = [a["slot"] for a in adapters]
    n, k = len(tasks), max(len(slots), 1)
    fig, ax = figure(4.0 + 0.9 * k, 2.0 + 0.5 * n)
    grid = [[1.0 if s <= t else 0.0 for s in slots] or [0.0] for t in range(n)]
    ax.imshow(grid, vmin=0, vmax=1.8, cmap="Greens", aspect="auto")
    for t in range(n if labelled(n, k) else 0):
        for i in range(len(slots)):
            ax.text(i, t, "used" if grid[t][i] else "", ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(slots)), [f"adapter of\n{tasks[s]['name']}" for s in slots], fontsize=8)
    ax.set_yticks(range(n), [f"{t['name']} ({t['decision']})" for t in tasks], fontsize=8)
    ax.set_title("Kept adapters serving each task", fontsize=10)
    return save_figure(fig, path)


def overlap_heatmap(matrix: list[list[float]], labels: list[str], path: Path) -> Path:
    k = len(matrix)
    fig, ax = figure(4.0 + 0.8 * max(k, 1), 3.0 + 0.7 * max(k, 1))
    if k:
        im = ax.imshow(matrix, vmin=0, vmax=1, cmap="magma")
        for i in range(k if labelled(k, k) else 0):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    f"{matrix[i][j]:.2f}",
                    ha="center",
                    va="center",
                    color="w" if matrix[i][j] < 0.6 else "k",
                )
        ax.set_xticks(range(k), labels, rotation=45, ha="right")
        ax.set_yticks(range(k), labels)
        fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(
        "Subspace overlap of kept adapters\nmean cos² of principal angles,\naveraged over layers", fontsize=10
    )
    return save_figure(fig, path)


def lineage_tree(nodes: list[dict], current: str | None, path: Path) -> Path:
    """Versions as a tree (parent → child), the one under `current` highlighted."""
    children: dict[str | None, list[dict]] = {}
    for node in nodes:
        children.setdefault(node.get("parent") or None, []).append(node)
    pos: dict[str, tuple[int, int]] = {}
    row = [0]

    def place(node: dict, depth: int) -> None:
        pos[node["version"]] = (depth, row[0])
        row[0] += 1
        for child in children.get(node["version"], []):
            place(child, depth + 1)

    for root in children.get(None, []):
        place(root, 0)
    fig, ax = figure(2.5 + 2.2 * max((d for d, _ in pos.values()), default=0), 1.0 + 0.6 * max(row[0], 1))
    named = {n["version"] for n in sorted(nodes, key=lambda n: int(n["version"]))[-LABELLED_NODES:]}
    for node in nodes:
        parent = node.get("parent")
        if parent in pos and node["version"] in pos:
            (x0, y0), (x1, y1) = pos[parent], pos[node["version"]]
            ax.plot([x0, x1], [y0, y1], color="grey", zorder=1)
    for node in nodes:
        if node["version"] not in pos:
            continue
        x, y = pos[node["version"]]
        live = node["version"] == current
        ax.scatter([x], [y], s=300, color="tab:orange" if live else "tab:blue", zorder=2)
        if node["version"] not in named and not live:
            continue
        ax.annotate(
            f"v{node['version']} {node.get('task', '')}\n{node.get('decision', '')}"
            + (" ← current" if live else ""),
            (x, y),
            xytext=(12, -4),
            textcoords="offset points",
            fontsize=9,
        )
    ax.margins(x=0.3, y=0.2)
    ax.invert_yaxis()
    ax.axis("off")
    ax.set_title("Adapter-set lineage")
    return save_figure(fig, path)


def pareto_plot(
    points: list[tuple[float, int, str]], front: list[tuple[float, int, str]], chosen: str | None, path: Path
) -> Path:
    """Search trials as (accuracy, adapters kept, trial id); the Pareto front joined, the chosen trial ringed."""
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    ax.scatter([p[1] for p in points], [100 * p[0] for p in points], color="0.6", label="trial")
    ax.plot([p[1] for p in front], [100 * p[0] for p in front], "o-", color="tab:blue", label="Pareto front")
    for acc, adapters, trial in points:
        if trial == chosen:
            ax.scatter(
                [adapters], [100 * acc], s=180, facecolors="none", edgecolors="tab:red", label="chosen"
            )
    ax.set_xlabel("adapters kept")
    ax.set_ylabel("mean accuracy over tasks so far (%)")
    counts = [p[1] for p in points] or [0]
    ax.set_xticks(range(min(counts), max(counts) + 1))
    ax.set_xlim(min(counts) - 0.5, max(counts) + 0.5)
    ax.legend(fontsize=8)
    ax.set_title("Accuracy vs adapters kept", fontsize=10)
    return save_figure(fig, path)
