"""The self-written EfficientNet-Lite0 matches the shipped ImageNet weights key for key and shape for shape."""

import pytest
import torch

from pipeline.learn.efficientnet import EfficientNetLite0, load_efficientnet_lite0, weights_path

pytestmark = pytest.mark.model


def test_shipped_imagenet_weights_load_strictly_into_the_self_written_network():
    net = load_efficientnet_lite0()  # load_state_dict(strict=True) raises on any missing or unexpected key
    assert sum(p.numel() for p in net.parameters()) == 4_652_008  # EfficientNet-Lite0's published size
    assert not net.training
    assert net.pooled(torch.zeros(1, 3, 32, 32)).shape == (1, EfficientNetLite0.hidden_size)


def test_weights_are_read_as_tensors_only():
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
