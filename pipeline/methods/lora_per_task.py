"""One independent LoRA per task, selected by the task's name: the storage reference for Share (bench only; its
model is Share's task-selected model storing plain LoRAs, methods/share/)."""

from pipeline.methods.share import TaskSelected

METHOD = TaskSelected(
    "lora-per-task",
    "one independent LoRA per task, chosen by the task's name",
    benchmark_only=True,
    selects_by_task=True,
    kind="lora",
)
