"""One independent LoRA per task, selected by the task's name: the storage reference for Share (bench only)."""

from pipeline.methods.base import Method

METHOD = Method(
    "lora-per-task",
    "one independent LoRA per task, chosen by the task's name",
    benchmark_only=True,
    selects_by_task=True,
)
