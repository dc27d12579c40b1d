"""Share's PEFT export: each task of a Share (or one-LoRA-per-task) set as its own PEFT LoRA plus its head
(learn/peft_export.py writes the sets whose adapters serve every class)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from pipeline.learn.peft_export import adapter_dir, input_labels, peft_name, peft_target, task_folder


@torch.no_grad()
def export_task_selected(model, directory: str | Path) -> dict:
    """Write each task of a Share (or one-LoRA-per-task) set as its own PEFT LoRA plus its head."""
    out = Path(directory)
    base, convolutional = model.config.backbone.name, model.config.backbone.reads_images
    targets = [peft_target(name, convolutional) for name in model.layers]
    tasks = []
    for j, record in enumerate(model.tasks):
        tensors = {}
        for name, layer in model.layers.items():
            tall_a, b = (t.detach().float().cpu() for t in layer.stored_factors(j))
            key, a, b = peft_name(name, tall_a.T.contiguous(), b, convolutional)
            tensors |= {
                f"base_model.model.{key}.lora_A.weight": a,
                f"base_model.model.{key}.lora_B.weight": b,
            }
        folder = task_folder(j, record.name)
        rank = next(iter(tensors.values())).shape[0]  # lora_A's rows: the rank the task was trained at
        adapter_dir(out / "adapters" / folder, targets, rank, base, tensors)
        head = model.heads.heads[j]
        (out / "heads").mkdir(parents=True, exist_ok=True)
        save_file(
            {"weight": head.weight.detach().float().cpu(), "bias": head.bias.detach().float().cpu()},
            out / "heads" / f"{folder}.safetensors",
        )
        tasks.append(
            {
                "task": record.name,
                "classes": record.classes,
                "adapter": f"adapters/{folder}",
                "head": f"heads/{folder}.safetensors",
                "rank": rank,
            }
        )
    labels = {
        "method": model.config.method,
        "tasks": tasks,
        "classes": model.classes,
        **input_labels(model),
        "head": "linear",  # logits = features @ weightᵀ + bias, per task
        "normalize_features": False,
        "base_model": base,
        "adapters": [Path(t["adapter"]).name for t in tasks],
        "ranks": [t["rank"] for t in tasks],
    }
    (out / "labels.json").write_text(json.dumps(labels, indent=2))
    return labels
