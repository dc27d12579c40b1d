"""What a task fed each adapted layer, kept as statistics: Σ xxᵀ over the inputs' real positions (never an example),
folded into the layer's basis of earlier tasks' inputs when the task closes (adapters/null_space.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist


class InputGrams:
    """Per adapted layer, Σ xxᵀ (float64) of the inputs it saw while recording."""

    def __init__(self) -> None:
        self.grams: dict[str, torch.Tensor] = {}
        self.mask: torch.Tensor | None = None
        """The attention mask of the batch being run: padded positions feed a layer nothing a task means."""

    def add(self, name: str, x: torch.Tensor) -> None:
        x = x.detach()
        if self.mask is not None and x.dim() == 3 and self.mask.shape == x.shape[:2]:
            rows = x[self.mask.bool()]
        else:  # images: every position (pixel, patch) is real
            rows = x.reshape(-1, x.shape[-1])
        rows = rows.double()
        gram = rows.T @ rows
        self.grams[name] = self.grams[name] + gram if name in self.grams else gram


@contextlib.contextmanager
def recording_inputs(model) -> Iterator[InputGrams]:
    """Record Σ xxᵀ of every adapted layer's input over the forwards `model` runs inside the block."""
    seen = InputGrams()

    def keep_mask(_module, _args, kwargs) -> None:
        seen.mask = kwargs.get("attention_mask")

    hooks = [model.backbone.register_forward_pre_hook(keep_mask, with_kwargs=True)]
    for name, layer in model.adapters:
        hooks.append(layer.register_forward_pre_hook(lambda _m, args, name=name: seen.add(name, args[0])))
    try:
        yield seen
    finally:
        for hook in hooks:
            hook.remove()


def extend_input_bases(model, seen: InputGrams, energy: float) -> None:
    """Fold a finished task's recorded inputs into each adapted layer's basis. Under DDP each rank saw its own
    shard: the sums are all-reduced first, so every rank folds in the whole task and keeps the same basis."""
    distributed = dist.is_available() and dist.is_initialized()
    for name, layer in model.adapters:
        gram = seen.grams.get(name)
        if distributed:
            if gram is None:  # every rank joins every reduction, in the adapters' order
                d = layer.in_features
                gram = torch.zeros(d, d, dtype=torch.float64, device=layer.base.weight.device)
            dist.all_reduce(gram)
        if gram is not None:
            layer.extend_input_basis(gram, energy)
