"""Adapt once: the first task trains an adapter with the first-task recipe, then the encoder stays as it is and
every later task only adds its classes to the head (first-session adaptation: APER, RanPAC). The reference a gate
must beat: where LiteLoRA equals it, the gate added nothing."""

from pipeline.methods.base import Method


class AdaptOnce(Method):
    def adapts(self, task_index: int) -> bool:
        return task_index == 0

    def decision(self, task_index: int, gate_decision: str) -> str:
        return gate_decision if task_index == 0 else "reuse"


METHOD = AdaptOnce(
    "adapt-once", "the first task's adapter, then the encoder stays; later tasks fit heads only"
)
