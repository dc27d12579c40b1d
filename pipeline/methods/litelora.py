"""LiteLoRA: SD-LoRA adapters plus a learned gate that keeps a task's adapter only if it is worth it
(adapters/gate.py; docs/method.md)."""

from pipeline.methods.base import Method


class LiteLoRA(Method):
    def trains_magnitudes(self, task_index: int) -> bool:
        return task_index > 0

    def only_the_task_magnitude(self, relearn_magnitudes: bool) -> bool:
        return not relearn_magnitudes

    def selects(self, task_index: int) -> bool:
        return task_index > 0


METHOD = LiteLoRA(
    "litelora",
    "SD-LoRA adapters; a learned gate keeps a task's adapter or reuses the earlier ones",
    task_parameters=2,
)
