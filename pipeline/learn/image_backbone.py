"""Images as the learning core reads them: PNG/JPEG bytes (the task dataset's `image` column) → resized 8-bit
pixels → ImageNet-normalised on the model's device → EfficientNet-Lite0 pooled features.

Pixels travel as bytes and become floats only where the network runs: a batch moves a quarter of the bytes
through Ray's object store and onto a GPU."""

from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.adapters.pointwise import linearise_pointwise_convs
from pipeline.learn.efficientnet import EfficientNetLite0, load_efficientnet_lite0

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_image_network(config) -> EfficientNetLite0:
    if config.name != "efficientnet-lite0":
        raise ValueError(f"unknown vision backbone {config.name!r}")
    return load_efficientnet_lite0()


def decode_images(images: list[bytes], size: int) -> torch.Tensor:
    """[N, 3, size, size] uint8 pixels; grey images get three equal channels."""
    from PIL import Image  # only image streams need Pillow

    pixels = [
        np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((size, size), Image.BILINEAR))
        for data in images
    ]
    return torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous()


def encode_images(images: list[bytes], size: int) -> dict[str, torch.Tensor]:
    """Encoded images → the pixels the backbone reads (`ImageBackbone.features`)."""
    return {"pixels": decode_images(images, size)}


def normalised(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels → the ImageNet-normalised floats the network reads, on the pixels' device."""
    mean, std = _mean_std(pixels.device)
    return (pixels.float().div_(255.0) - mean) / std


@functools.lru_cache(maxsize=8)
def _mean_std(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Made once a device: a copy onto a GPU every step would wait for it."""
    return (
        torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1),
        torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1),
    )


@dataclass
class ImageBackbone:
    network: EfficientNetLite0
    image_size: int = 64

    def __post_init__(self) -> None:
        # Its 1×1 convolutions become nn.Linear so the adapters wrap them like any linear layer (idempotent).
        linearise_pointwise_convs(self.network)

    @property
    def hidden_size(self) -> int:
        return self.network.hidden_size

    def encode(self, images: list[bytes]) -> dict[str, torch.Tensor]:
        return encode_images(images, self.image_size)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.network.pooled(normalised(pixels))
