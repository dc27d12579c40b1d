"""Every figure a version logs is drawn for real from small data (the orchestration tests skip the pixels)."""

import pytest

from pipeline.registry import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TASKS = [
    {"name": "t0", "decision": "recruit", "classes": ["a", "b"]},
    {"name": "t1", "decision": "reuse", "classes": ["c", "d"]},
    {"name": "t2", "decision": "store", "classes": ["e", "f"]},
]
FIGURES = {
    "accuracy_matrix": lambda p: plots.accuracy_heatmap(
        [[0.9, 0.8, 0.7], [0, 0.85, 0.8], [0, 0, 0.9]], ["t0", "t1", "t2"], p
    ),
    "class_accuracy": lambda p: plots.class_accuracy(
        [
            {"class": "a", "accuracy": [0.9, 0.8, 0.7], "frozen_accuracy": 0.6, "rows": 5},
            {"class": "c", "accuracy": [None, 0.85, 0.8], "frozen_accuracy": None, "rows": 5},
        ],
        ["after t0", "after t1", "after t2"],
        p,
    ),
    "adapter_usage": lambda p: plots.adapter_usage(TASKS, [{"slot": 0}, {"slot": 2}], p),
    "adapter_usage_none": lambda p: plots.adapter_usage(TASKS, [], p),
    "subspace_overlap": lambda p: plots.overlap_heatmap([[1.0, 0.3], [0.3, 1.0]], ["t0", "t2"], p),
    "subspace_overlap_none": lambda p: plots.overlap_heatmap([], [], p),
    "lineage": lambda p: plots.lineage_tree(
        [
            {"version": "1", "parent": None, "task": "t0"},
            {"version": "2", "parent": "1", "task": "t1"},
            {"version": "3", "parent": "1", "task": "t2"},
        ],
        "3",
        p,
    ),
    "pareto": lambda p: plots.pareto_plot(
        [(0.8, 1, "a"), (0.85, 2, "b")], [(0.8, 1, "a"), (0.85, 2, "b")], "b", p
    ),
}


@pytest.mark.parametrize("name", FIGURES)
def test_each_figure_is_drawn_as_a_png(name, tmp_path):
    path = FIGURES[name](tmp_path / f"{name}.png")
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 2_000  # drawn pixels, not an empty canvas
