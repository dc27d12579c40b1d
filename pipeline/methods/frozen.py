"""The frozen encoder: no adapters; the same heads fitted on the bare backbone's features. The reference every
adaptation must beat."""

from pipeline.methods.base import Method


class Frozen(Method):
    def adapts(self, task_index: int) -> bool:
        return False


METHOD = Frozen("frozen", "no adapters: the same heads on the bare encoder", task_parameters=0)
