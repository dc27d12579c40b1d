"""Sequential LoRA: one adapter trained on each task in turn (the forgetting lower bound)."""

from pipeline.methods.base import Method, Opening


class SequentialLoRA(Method):
    def opening(self, task_index: int) -> Opening:
        return "new" if task_index == 0 else "continue"

    def decision(self, task_index: int, gate_decision: str) -> str:
        return gate_decision if task_index == 0 else "continue"


METHOD = SequentialLoRA(
    "seq-lora", "one adapter trained on each task in turn", normalises_directions=False, initial_magnitude=1.0
)
