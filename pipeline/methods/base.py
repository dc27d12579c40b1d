"""What a continual-learning method is to the code around it: one `Method` entry per method (registry.py).

The recipe (learn/recipe.py), the model (learn/model.py), the orchestrator, Tune, serving, export and the bench
ask an entry what to do instead of testing a method's name: whether a task trains adapters, which adapter it
opens, which magnitudes learn, whether the gate selects, what the task's decision is called, and whether a
prediction needs the task's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Opening = Literal["none", "new", "continue"]
"""What a task does to the adapters when it begins: nothing, a new adapter, or the latest adapter trained on."""


@dataclass(frozen=True)
class Method:
    name: str
    summary: str
    benchmark_only: bool = False
    """Not a stream's method: the bench runs it (a reference or a ceiling), a drop's task.json may not name it."""
    selects_by_task: bool = False
    """Predictions name their task (Share, one LoRA per task): scored task-incrementally only."""
    task_parameters: int = 1
    """Parameters a set stores per task beside the adapters (a magnitude; LiteLoRA also its gate logit)."""
    normalises_directions: bool = True
    """A finished task's direction is used normalised from the next task on (SD-LoRA); else it keeps its scale."""
    initial_magnitude: float | None = None
    """Each task's magnitude α starts here (None: the gate's `init_alpha`)."""
    defaults: dict = field(default_factory=dict)
    """Training options a new lineage of this method starts from where the generic defaults would not do."""

    def adapts(self, task_index: int) -> bool:
        """Whether task `task_index` trains adapters of the encoder (else only heads, on fixed features)."""
        return True

    def opening(self, task_index: int) -> Opening:
        return "new" if self.adapts(task_index) else "none"

    def trains_magnitudes(self, task_index: int) -> bool:
        """Whether the magnitudes α learn in phase 1 of task `task_index`."""
        return False

    def only_the_task_magnitude(self, relearn_magnitudes: bool) -> bool:
        """Whether only α_t learns (the earlier magnitudes, and so earlier features, stay as they were)."""
        return False

    def resets_magnitudes(self) -> bool:
        """Whether every magnitude restarts at `sdlora_alpha_init` when a task begins."""
        return False

    def selects(self, task_index: int) -> bool:
        """Whether the gate decides (phase 2) if task `task_index`'s adapter is kept."""
        return False

    def decision(self, task_index: int, gate_decision: str) -> str:
        """The word for what task `task_index` did to the set: recruit, reuse, continue or none."""
        return gate_decision if self.adapts(task_index) else "none"
