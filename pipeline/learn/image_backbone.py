"""Images as the learning core reads them: PNG/JPEG bytes (the task dataset's `image` column) → resized,
ImageNet-normalised tensors → EfficientNet-Lite0 pooled features."""

from __future__ import annotations

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
    """[N, 3, size, size] float pixels in [0, 1]; grey images get three equal channels."""
    from PIL import Image  # only image streams need Pillow

    pixels = [
        np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((size, size), Image.BILINEAR))
        for data in images
    ]
    return torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).float().div_(255.0)


def encode_images(images: list[bytes], size: int) -> dict[str, torch.Tensor]:
    """Encoded images → the normalised pixels the network reads."""
    pixels = decode_images(images, size)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return {"pixel_values": (pixels - mean) / std}


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

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.network.pooled(pixel_values)
