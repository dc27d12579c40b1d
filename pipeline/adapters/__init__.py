"""SD-LoRA adapter layers, the LiteLoRA gate, model surgery and the adapter-set file format.

Learning core: imports torch, transformers and safetensors only.
"""

from pipeline.adapters.config import AdapterConfig, GateConfig
from pipeline.adapters.gate import GateDecision, LiteLoRAGate
from pipeline.adapters.inject import InjectedAdapters, inject_adapters
from pipeline.adapters.layer import SDLoRALinear

__all__ = [
    "AdapterConfig",
    "GateConfig",
    "GateDecision",
    "InjectedAdapters",
    "LiteLoRAGate",
    "SDLoRALinear",
    "inject_adapters",
]
