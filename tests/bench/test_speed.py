"""The speed benchmark measures what it says: T kept adapters in the core's step, PEFT LoRA beside it."""

from dataclasses import replace

from pipeline.bench.speed import SpeedPlan, model_with_kept, run_speed, speed_markdown
from pipeline.learn.backbone import BackboneConfig
from pipeline.learn.config import TrainConfig


def test_the_benchmarked_model_carries_exactly_t_kept_adapters_and_one_in_training(tiny_bert, tokenizer):
    model = model_with_kept(TrainConfig(), tiny_bert, tokenizer, kept=3)
    assert model.active_adapters == 3
    assert model.adapters.trainable_parameters(), "a task must be open: the step trains its adapter"


def test_speed_report_has_a_row_per_kept_count_and_the_inference_ratio(
    _tiny_bert_template, tokenizer, tmp_path
):
    _tiny_bert_template.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    config = replace(TrainConfig(), backbone=BackboneConfig(name=str(tmp_path)))
    result = run_speed(
        SpeedPlan(kept=(0, 2), batch_size=4, repeats=1, warmup=0, config=config), log=lambda _: None
    )
    assert [s["kept"] for s in result["steps"]] == [0, 2]
    assert all(s["step_ms"] > 0 and s["vs_peft"] > 0 for s in result["steps"])
    assert result["inference"]["kept"] == 3 and result["inference"]["ratio"] > 0
    assert "| 2 |" in speed_markdown(result, "litelora bench --speed")
