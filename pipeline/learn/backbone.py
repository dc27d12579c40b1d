"""The frozen encoder behind a continual model: one small interface over text and image backbones.

    encode(inputs)    raw inputs (texts; PNG/JPEG bytes) → a batch: a dict of tensors, one row per input
    features(**batch) → [N, hidden_size] pooled features

`network` is the nn.Module that receives the adapters. Text: a transformers encoder and its tokenizer,
loaded from local files. Images: EfficientNet-Lite0 (image_backbone.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import nn

from pipeline.learn.backbone_files import resolve_model_path

VISION_BACKBONES = ("efficientnet-lite0",)
"""Backbone names that read images; every other name is a transformers text encoder."""


@dataclass
class BackboneConfig:
    name: str = "sentence-transformers/all-MiniLM-L6-v2"
    revision: str | None = None
    pooling: Literal["mean", "cls"] = "mean"
    """MiniLM sentence embeddings are trained with mean pooling; ViT-style models use [CLS]."""
    max_length: int = 48
    image_size: int = 64
    """Vision backbones: images are resized to this square (grey ones repeated over 3 channels)."""

    @property
    def reads_images(self) -> bool:
        return self.name in VISION_BACKBONES


DEFAULT_BACKBONE = BackboneConfig().name
BACKBONES = (DEFAULT_BACKBONE, *VISION_BACKBONES)
"""What a stream may name: the packaged text encoder or a vision backbone (both load offline)."""


class UnknownBackbone(ValueError):
    pass


def check_backbone_name(name: str) -> str:
    if name not in BACKBONES:
        raise UnknownBackbone(f"backbone {name!r}: choose one of {', '.join(BACKBONES)}")
    return name


class Backbone(Protocol):
    network: nn.Module
    hidden_size: int

    def encode(self, inputs: list) -> dict[str, torch.Tensor]: ...

    def features(self, **batch: torch.Tensor) -> torch.Tensor: ...


@dataclass
class TextBackbone:
    network: nn.Module
    tokenizer: object
    config: BackboneConfig

    @property
    def hidden_size(self) -> int:
        return self.network.config.hidden_size

    def encode(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return encode_texts(self.tokenizer, texts, self.config.max_length)

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.network(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return pool(hidden, attention_mask, self.config.pooling)


def encode_texts(
    tokenizer, texts: list[str], max_length: int, padding: bool | str = True
) -> dict[str, torch.Tensor]:
    # Only ids and mask: BERT's token_type_ids are all zeros for one segment, which is its default.
    enc = tokenizer(texts, padding=padding, truncation=True, max_length=max_length, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def input_encoder(config: BackboneConfig) -> Callable[[list], dict[str, torch.Tensor]]:
    """Raw inputs → the tensors the backbone reads, without loading its network: what a data pipeline runs apart
    from the model. Texts are padded to `max_length`, so rows encoded in different batches stack."""
    if config.reads_images:
        from pipeline.learn.image_backbone import encode_images

        return functools.partial(encode_images, size=config.image_size)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(config.name), revision=config.revision)
    return functools.partial(encode_texts, tokenizer, max_length=config.max_length, padding="max_length")


def load_backbone(config: BackboneConfig, network: nn.Module | None = None, tokenizer=None) -> Backbone:
    """The configured backbone, loaded from local files, or built around a given (fresh) `network`."""
    if config.reads_images:
        from pipeline.learn.image_backbone import ImageBackbone, load_image_network

        return ImageBackbone(
            network if network is not None else load_image_network(config), config.image_size
        )
    if network is None:
        network, tokenizer = load_text_encoder(config)
    return TextBackbone(network, tokenizer, config)


def load_text_encoder(config: BackboneConfig) -> tuple[nn.Module, object]:
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging

    logging.disable_progress_bar()  # a per-load progress bar is noise on the CLI's stderr
    path = resolve_model_path(config.name)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=config.revision)
    # A manifest names its backbone: only ever load safetensors weights, never a pickled .bin.
    model = AutoModel.from_pretrained(path, revision=config.revision, use_safetensors=True)
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


def embed(encoder, inputs: list, batch_size: int, device: torch.device) -> torch.Tensor:
    """Pooled features of `inputs` from anything with `encode` and `features` (a backbone, a continual model),
    in batches, on CPU in float32."""
    chunks = (
        encoder.encode(inputs[start : start + batch_size]) for start in range(0, len(inputs), batch_size)
    )
    return embed_batches(encoder, chunks, device)


@torch.no_grad()
def embed_batches(encoder, batches: Iterable[dict[str, torch.Tensor]], device: torch.device) -> torch.Tensor:
    """Pooled features of already encoded batches, on CPU in float32."""
    out = []
    for batch in batches:
        with autocast(device):
            feats = encoder.features(**{name: tensor.to(device) for name, tensor in batch.items()})
        out.append(feats.float().cpu())
    return torch.cat(out)
