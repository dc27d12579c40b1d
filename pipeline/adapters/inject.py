"""Model surgery: find the nn.Linear layers to adapt by name and wrap them in SDLoRALinear (or another layer)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator

import torch
from torch import nn

from pipeline.adapters.config import DEFAULT_TARGETS, AdapterConfig
from pipeline.adapters.gate import LiteLoRAGate
from pipeline.adapters.layer import SDLoRALinear


def name_matches(name: str, pattern: str) -> bool:
    """A pattern is a module-name suffix (`query`, `attn.q_proj`) or a regex matched against the full name."""
    return name == pattern or name.endswith("." + pattern) or re.fullmatch(pattern, name) is not None


def detect_targets(model: nn.Module) -> tuple[str, ...]:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    for targets in DEFAULT_TARGETS.values():
        if all(any(name_matches(n, t) for n in names) for t in targets):
            return targets
    raise ValueError(
        "could not find the default adapter targets (tried "
        + ", ".join("/".join(t) for t in DEFAULT_TARGETS.values())
        + "); set AdapterConfig.targets to the names of the nn.Linear layers to adapt"
    )


class InjectedAdapters:
    """The adapted layers of one model, addressed by module name, with task lifecycle operations."""

    def __init__(self, layers: dict[str, SDLoRALinear]):
        self.layers = layers

    def __iter__(self) -> Iterator[tuple[str, SDLoRALinear]]:
        return iter(self.layers.items())

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def num_frozen(self) -> int:
        return next(iter(self.layers.values())).num_frozen

    def new_adapter(self, rank: int, null_space: bool = False) -> None:
        for layer in self.layers.values():
            layer.new_adapter(rank, null_space=null_space)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for layer in self.layers.values() for p in (layer.lora_a, layer.lora_b) if p is not None]

    def freeze_adapter(self, slot: int) -> None:
        for layer in self.layers.values():
            layer.freeze_adapter(slot)

    def drop_adapter(self) -> None:
        for layer in self.layers.values():
            layer.drop_adapter()

    def resume_latest(self) -> None:
        """Turn the latest frozen adapter back into the trainable one (sequential LoRA)."""
        for layer in self.layers.values():
            layer.new_adapter(layer.ranks[-1], init=layer.pop_frozen())

    def normalise(self) -> None:
        """At a task boundary the latest kept adapter starts being used in normalised form."""
        for layer in self.layers.values():
            layer.latest_unnormalised = False

    @contextlib.contextmanager
    def masked(self, row_mask: torch.Tensor) -> Iterator[None]:
        """Within: row i of a forward uses the kept adapters where `row_mask[i]` is 1 (the trainable one: its
        last column), and no other (SDLoRALinear.row_mask)."""
        for layer in self.layers.values():
            layer.row_mask = row_mask
        try:
            yield
        finally:
            for layer in self.layers.values():
                layer.row_mask = None

    def merge(self) -> None:
        for layer in self.layers.values():
            layer.merge()

    def adapter_tensors(self, index: int) -> dict[str, torch.Tensor]:
        """The factors of frozen adapter `index` in every layer, keyed `<module>.lora_A|lora_B`."""
        out = {}
        for name, layer in self.layers.items():
            a, b = layer.frozen_factors(index)
            out[f"{name}.lora_A"], out[f"{name}.lora_B"] = a.contiguous(), b.contiguous()
        return out

    def push_frozen(self, tensors: dict[str, torch.Tensor], slot: int) -> None:
        for name, layer in self.layers.items():
            layer.push_frozen(tensors[f"{name}.lora_A"], tensors[f"{name}.lora_B"], slot)

    def input_bases(self) -> dict[str, torch.Tensor]:
        """Each layer's basis of the earlier tasks' inputs, keyed `<module>.input_basis` (empty: none yet)."""
        bases = {f"{name}.input_basis": layer.input_basis.contiguous() for name, layer in self.layers.items()}
        return bases if any(b.shape[1] for b in bases.values()) else {}

    def load_input_bases(self, tensors: dict[str, torch.Tensor]) -> None:
        for name, layer in self.layers.items():
            layer.input_basis = tensors[f"{name}.input_basis"].to(layer.input_basis)

    def adapter_parameter_count(self, rank: int) -> int:
        """Parameters of one rank-`rank` adapter over all adapted matrices: Σ r·(d_in + d_out)."""
        return sum(rank * (m.in_features + m.out_features) for m in self.layers.values())


def replace_linears(
    model: nn.Module, targets: tuple[str, ...] | None, wrap: Callable[[nn.Linear], nn.Module]
) -> dict[str, nn.Module]:
    """Replace every targeted nn.Linear of `model` in place by `wrap(linear)`; the rest of the model is frozen."""
    targets = targets or detect_targets(model)
    for p in model.parameters():
        p.requires_grad_(False)
    names = [
        n
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and any(name_matches(n, t) for t in targets)
    ]
    if not names:
        raise ValueError(f"no nn.Linear module matches targets {list(targets)}")
    layers = {}
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        layers[name] = wrap(getattr(parent, child))
        setattr(parent, child, layers[name])
    return layers


def inject_adapters(
    model: nn.Module, gate: LiteLoRAGate, config: AdapterConfig | None = None
) -> InjectedAdapters:
    """Wrap every targeted nn.Linear of `model` in an SDLoRALinear sharing `gate`."""
    config = config or AdapterConfig()
    if any(isinstance(m, SDLoRALinear) for m in model.modules()):
        raise ValueError("this model already carries adapters; inject into a fresh copy of the backbone")
    return InjectedAdapters(
        replace_linears(
            model,
            config.targets,
            lambda linear: SDLoRALinear(linear, gate, norm=config.norm, norm_eps=config.norm_eps),
        )
    )
