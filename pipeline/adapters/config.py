"""Typed configuration of the adapters and the gate (every default is the one the method runs with)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Module-name suffixes that receive adapters, by architecture family. The method adapts the query and
# value projections of every attention block and nothing else (docs/method.md §2).
DEFAULT_TARGETS: dict[str, tuple[str, ...]] = {
    "bert": ("query", "value"),  # BERT, RoBERTa, MiniLM (`attention.self.query`)
    "decoder-vit": ("q_proj", "v_proj"),  # LLaMA, Mistral, Qwen, and ViT/DeiT in transformers >= 5
    # EfficientNet / MobileNetV2-style MBConv blocks, their 1×1 convolutions turned into nn.Linear by
    # pointwise.linearise_pointwise_convs. Two maps per block, as q/v are two per attention block: the expansion
    # reads the block's input (the role of the query) and the projection writes its output back into the
    # residual stream (the role of the value). Depthwise convs filter each channel alone: no map over channels.
    "efficientnet": ("_expand_conv.linear", "_project_conv.linear"),
}


@dataclass
class AdapterConfig:
    rank: int = 8
    """LoRA rank of each new adapter (the papers use 10; 8 is the usual PEFT default)."""
    targets: tuple[str, ...] | None = None
    """Module-name suffixes or regexes of the nn.Linear layers to adapt; None = detect from the model."""
    norm: Literal["factors", "product", "none"] = "factors"
    """How a frozen direction is normalised: ‖B‖_F·‖A‖_F (official code), ‖BA‖_F (paper), or not at all."""
    norm_eps: float = 1e-8


@dataclass
class GateConfig:
    init_logit: float = 0.5
    """Initial gate logit l_t of a new task; must be > 0 or the new adapter is off in phase 1."""
    init_alpha: float = 1.0
    """Initial magnitude α_t of a new task's direction."""
    temperature: float = 1.0
    noise: Literal["gumbel", "logistic"] = "gumbel"
    """Official code: one standard Gumbel sample (biased towards 'on'); logistic is binary-concrete."""
    sampling: Literal["per_matrix", "shared"] = "per_matrix"
    """Official code: an independent sample for every adapted matrix at every step."""
    sparsity: float = 0.5
    """λ, weight of the L1 term on the sampled gate values in phase 2."""

    def __post_init__(self) -> None:
        if self.init_logit <= 0:
            raise ValueError(
                f"init_logit must be > 0 (got {self.init_logit}): the new adapter would never train"
            )
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 (got {self.temperature})")
        if self.sparsity < 0:
            raise ValueError(f"sparsity weight λ must be >= 0 (got {self.sparsity})")
