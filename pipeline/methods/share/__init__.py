"""Share: one shared basis per side and layer, per-task coefficients; a prediction names its task (model.py: the
task-selected model, layer.py: the shared basis and the coefficients, runner.py: the bench's runner for it and for
one LoRA per task; docs/method.md §8)."""

from dataclasses import dataclass

from pipeline.methods.base import Method


@dataclass(frozen=True)
class TaskSelected(Method):
    kind: str = "share"
    """How a task's factors are stored: in the shared basis (share) or as a LoRA of their own (lora)."""


METHOD = TaskSelected(
    "share",
    "a shared low-rank basis with per-task coefficients; predictions name their task",
    selects_by_task=True,
    defaults={"epochs": 5, "first_examples": 0, "head": "linear"},
)
"""Five epochs a task and per-task heads: what Share's storage-accuracy frontier was measured with."""
