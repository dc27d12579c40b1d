"""Model surgery for convolutional backbones: a 1×1 convolution (stride 1, one group) is a linear map applied to
every pixel's channel vector, so it becomes a module holding that nn.Linear, which `inject_adapters` then wraps
like any other linear layer."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.adapters.inject import name_matches


class PointwiseLinear(nn.Module):
    """A 1×1 convolution as its linear map over channels: [N, C_in, H, W] → [N, C_out, H, W]."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.linear = nn.Linear(
            conv.in_channels,
            conv.out_channels,
            bias=conv.bias is not None,
            device=conv.weight.device,
            dtype=conv.weight.dtype,
        )
        with torch.no_grad():
            self.linear.weight.copy_(conv.weight.flatten(1))
            if conv.bias is not None:
                self.linear.bias.copy_(conv.bias)
        self.linear.requires_grad_(conv.weight.requires_grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.movedim(1, -1)).movedim(-1, 1)


def is_pointwise(module: nn.Module) -> bool:
    return (
        type(module) is nn.Conv2d
        and module.kernel_size == (1, 1)
        and module.stride == (1, 1)
        and module.padding == (0, 0)
        and module.groups == 1
    )


def linearise_pointwise_convs(model: nn.Module, targets: tuple[str, ...] | None = None) -> list[str]:
    """Replace in place every 1×1 convolution of `model` whose name matches `targets` (None: all of them) by a
    PointwiseLinear; returns the names of the new nn.Linear modules. A second call finds nothing to replace."""
    names = [
        n
        for n, m in model.named_modules()
        if is_pointwise(m) and (targets is None or any(name_matches(n, t) for t in targets))
    ]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, PointwiseLinear(getattr(parent, child)))
    return [f"{name}.linear" for name in names]
