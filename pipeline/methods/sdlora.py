"""SD-LoRA: a new adapter every task, every one kept; all magnitudes restart and learn at each task."""

from pipeline.methods.base import Method


class SDLoRA(Method):
    def trains_magnitudes(self, task_index: int) -> bool:
        return True

    def resets_magnitudes(self) -> bool:
        return True


METHOD = SDLoRA("sdlora", "a new adapter every task, every one kept, magnitudes re-learned")
