"""Share: one shared basis per side and layer, per-task coefficients; a prediction names its task
(learn/task_selected.py, adapters/share_layer.py; docs/method.md §8)."""

from pipeline.methods.base import Method

METHOD = Method(
    "share",
    "a shared low-rank basis with per-task coefficients; predictions name their task",
    selects_by_task=True,
    defaults={"epochs": 5, "first_examples": 0, "head": "linear"},
)
"""Five epochs a task and per-task heads: what Share's storage-accuracy frontier was measured with."""
