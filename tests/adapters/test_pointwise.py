"""1×1 convolutions become nn.Linear modules that compute exactly what the convolutions computed, so the
unchanged injection wraps them like any linear layer."""

import pytest
import torch
from torch import nn

from pipeline.adapters import AdapterConfig, LiteLoRAGate, SDLoRALinear, inject_adapters
from pipeline.adapters.inject import detect_targets
from pipeline.adapters.pointwise import PointwiseLinear, linearise_pointwise_convs
from pipeline.learn.efficientnet import EfficientNetLite0


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    net = EfficientNetLite0().eval()
    for m in net.modules():  # non-trivial batch-norm statistics, so a wrong channel order would show
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return net


def test_a_pointwise_linear_computes_what_its_convolution_computed_bias_included():
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, 1, bias=True).double()
    x = torch.randn(3, 6, 7, 4, dtype=torch.float64)
    assert torch.allclose(PointwiseLinear(conv)(x), conv(x), atol=1e-12, rtol=0)


def test_the_linearised_network_gives_the_same_features(network):
    import copy

    linearised = copy.deepcopy(network)
    names = linearise_pointwise_convs(linearised)
    # 15 expansions + 16 projections + the head conv; the stem and depthwise convs stay convolutions.
    assert len(names) == 15 + 16 + 1
    assert not any(type(m) is nn.Conv2d and m.kernel_size == (1, 1) for m in linearised.modules())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(linearised.pooled(x), network.pooled(x), atol=1e-5, rtol=1e-4)
    assert linearise_pointwise_convs(linearised) == []  # idempotent: nothing left to replace


def test_targets_pick_which_convolutions_become_linear(network):
    import copy

    names = linearise_pointwise_convs(copy.deepcopy(network), ("_project_conv",))
    assert len(names) == 16 and all(n.endswith("._project_conv.linear") for n in names)


def test_default_targets_are_the_expansion_and_projection_maps_of_every_block(network):
    import copy

    model = copy.deepcopy(network)
    linearise_pointwise_convs(model)
    assert detect_targets(model) == ("_expand_conv.linear", "_project_conv.linear")
    gate = LiteLoRAGate()
    adapters = inject_adapters(model, gate, AdapterConfig(rank=2))
    assert len(adapters) == 15 + 16
    assert sum(isinstance(m, SDLoRALinear) for m in model.modules()) == 31
    gate.begin_task()
    adapters.new_adapter(2)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # a new adapter starts as an exact no-op
        assert torch.allclose(model.pooled(x), network.pooled(x), atol=1e-5, rtol=1e-4)
