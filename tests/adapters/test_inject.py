"""Model surgery on tiny models of three architecture families: which layers get adapters, and that the
adapted model trains only what it should."""

import pytest
import torch
from torch import nn

from pipeline.adapters import AdapterConfig, LiteLoRAGate, SDLoRALinear, inject_adapters
from pipeline.adapters.inject import detect_targets


def _tiny(family: str) -> nn.Module:
    import transformers as tf

    torch.manual_seed(0)
    if family == "bert":
        return tf.BertModel(
            tf.BertConfig(
                vocab_size=50,
                hidden_size=16,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=32,
            )
        )
    if family == "vit":
        return tf.ViTModel(
            tf.ViTConfig(
                image_size=8,
                patch_size=4,
                hidden_size=16,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=32,
            )
        )
    return tf.LlamaModel(
        tf.LlamaConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            intermediate_size=32,
        )
    )


def _inputs(family: str) -> dict:
    if family == "vit":
        return {"pixel_values": torch.randn(2, 3, 8, 8)}
    return {"input_ids": torch.randint(0, 50, (2, 5))}


@pytest.mark.parametrize(
    "family, targets",
    [("bert", ("query", "value")), ("vit", ("q_proj", "v_proj")), ("llama", ("q_proj", "v_proj"))],
)
def test_default_targets_are_the_query_and_value_projections_of_every_block(family, targets):
    model = _tiny(family)
    assert detect_targets(model) == targets
    adapters = inject_adapters(model, LiteLoRAGate())
    assert len(adapters) == 2 * 2  # q and v in each of 2 blocks
    assert all(name.endswith(targets) for name, _ in adapters)
    assert sum(isinstance(m, SDLoRALinear) for m in model.modules()) == 4


@pytest.mark.parametrize("family", ["bert", "vit", "llama"])
@pytest.mark.parametrize("rank", [1, 4])
def test_only_the_new_adapter_trains_and_it_starts_as_a_no_op(family, rank):
    model, inputs = _tiny(family).eval(), _inputs(family)
    before = model(**inputs).last_hidden_state
    gate = LiteLoRAGate()
    adapters = inject_adapters(model, gate, AdapterConfig(rank=rank))
    gate.begin_task()
    adapters.new_adapter(rank)
    # Bit for bit by construction: every wrapped layer runs the same nn.Linear on the same input and adds
    # x·Aᵀ·0, which is exactly zero whatever the BLAS does (no other adapter shares the matmul).
    assert torch.equal(model(**inputs).last_hidden_state, before)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.endswith(("lora_a", "lora_b")) for n in trainable)
    assert sum(p.numel() for p in adapters.trainable_parameters()) == adapters.adapter_parameter_count(rank)


def test_explicit_targets_accept_suffixes_and_regexes():
    model = _tiny("llama")
    adapters = inject_adapters(
        model, LiteLoRAGate(), AdapterConfig(targets=(r".*layers\.0\.self_attn\.[qk]_proj",))
    )
    assert sorted(n for n, _ in adapters) == ["layers.0.self_attn.k_proj", "layers.0.self_attn.q_proj"]


def test_unknown_targets_and_double_injection_fail_clearly():
    model = _tiny("bert")
    with pytest.raises(ValueError, match="no nn.Linear module matches"):
        inject_adapters(model, LiteLoRAGate(), AdapterConfig(targets=("nothing_here",)))
    inject_adapters(model, LiteLoRAGate())
    with pytest.raises(ValueError, match="already carries adapters"):
        inject_adapters(model, LiteLoRAGate())
