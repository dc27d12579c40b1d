"""The speed benchmark measures what it says: T kept adapters in the core's step, PEFT LoRA beside it."""

from dataclasses import replace

import torch

from pipeline.bench import speed
from pipeline.bench.speed import SpeedPlan, model_with_kept, run_speed, speed_markdown
from pipeline.learn.backbone import BackboneConfig
from pipeline.learn.config import TrainConfig


def test_the_benchmarked_model_carries_exactly_t_kept_adapters_and_one_in_training(tiny_bert, tokenizer):
    model = model_with_kept(TrainConfig(), tiny_bert, tokenizer, kept=3)
    assert model.active_adapters == 3
    assert model.adapters.trainable_parameters(), "a task must be open: the step trains its adapter"


def test_speed_ratios_come_from_the_medians_it_reports_on_one_batch_shape(
    _tiny_bert_template, tokenizer, tmp_path, monkeypatch
):
    _tiny_bert_template.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    config = replace(TrainConfig(), backbone=BackboneConfig(name=str(tmp_path)))
    # Each timed step runs once for real; its "median" is scripted, so every ratio has one right value.
    medians = iter(
        [10.0, 12.0, 16.0, 8.0, 9.0, 6.0]
    )  # PEFT, core (0 kept), core (2 kept), PEFT again, merged, plain
    token_shapes: list[set] = []

    def once(step, device, repeats, warmup):
        seen = set()

        def record(module, args):
            if isinstance(module, torch.nn.Embedding) and module.num_embeddings == tokenizer.vocab_size:
                seen.add(tuple(args[0].shape))

        with torch.nn.modules.module.register_module_forward_pre_hook(record):
            step()
        token_shapes.append(seen)
        return next(medians)

    monkeypatch.setattr(speed, "_median_ms", once)
    result = run_speed(
        SpeedPlan(kept=(0, 2), batch_size=4, repeats=1, warmup=0, config=config), log=lambda _: None
    )
    # PEFT, the core at every kept count, merged and plain inference: all on the same token batch.
    assert len(token_shapes) == 6 and all(len(s) == 1 for s in token_shapes)
    assert len({s for shapes in token_shapes for s in shapes}) == 1
    (shape,) = token_shapes[0]
    assert shape[0] == result["batch_size"] == 4
    # The lower PEFT median is the reference, and every ratio divides the medians reported beside it.
    assert result["peft_step_runs_ms"] == [10.0, 8.0] and result["peft_step_ms"] == 8.0
    assert [(s["kept"], s["step_ms"], s["vs_peft"]) for s in result["steps"]] == [
        (0, 12.0, 1.5),
        (2, 16.0, 2.0),
    ]
    assert result["inference"] == {"kept": 3, "merged_ms": 9.0, "plain_ms": 6.0, "ratio": 1.5}
    table = speed_markdown(result, "litelora bench --speed")
    assert "| 2 | 16.0 | 8.0 | 2.00 |" in table and "| batch 4 | 9.0 | 6.0 | 1.500 |" in table
