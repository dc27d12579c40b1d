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


LONG = 60
LONG_FIGURES = {
    "accuracy_matrix": lambda p: plots.accuracy_heatmap(
        [[0.8] * LONG for _ in range(LONG)], [f"t{i}" for i in range(LONG)], p
    ),
    "class_accuracy": lambda p: plots.class_accuracy(
        [{"class": f"c{i}", "accuracy": [0.8] * LONG, "frozen_accuracy": 0.6} for i in range(2 * LONG)],
        [f"after t{i}" for i in range(LONG)],
        p,
    ),
    "adapter_usage": lambda p: plots.adapter_usage(
        [{"name": f"t{i}", "decision": "recruit"} for i in range(LONG)], [{"slot": i} for i in range(LONG)], p
    ),
    "lineage": lambda p: plots.lineage_tree(
        [
            {"version": str(v), "parent": str(v - 1) if v > 1 else None, "task": f"t{v}"}
            for v in range(1, LONG)
        ],
        str(LONG - 1),
        p,
    ),
}


@pytest.mark.parametrize("name", LONG_FIGURES)
def test_a_long_lineage_s_figures_stay_the_size_of_a_short_one_s(name, tmp_path):
    """Every drop redraws its figures: a figure that grew with the lineage would cost each drop more than the last."""
    from PIL import Image

    with Image.open(LONG_FIGURES[name](tmp_path / f"{name}.png")) as image:
        width, height = image.size
    most = 1.5 * plots.MAX_INCHES * 110  # tight bounding boxes take in tick labels past the axes
    assert width <= most and height <= most, (width, height)
