"""Speed of the core: one training step with T kept adapters against a PEFT LoRA step on the same backbone and
batch, and merged inference against the plain backbone. Medians over repeats in one process, as ratios.

Device-agnostic: on CUDA the same code runs under bf16 autocast and synchronises before reading the clock.
PEFT is needed only here (`pip install peft`); the core never imports it.
"""

from __future__ import annotations

import copy
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.data.wordnet import split_wordnet20
from pipeline.learn.backbone import autocast, load_backbone, pick_device, pool
from pipeline.learn.config import TrainConfig
from pipeline.learn.model import ContinualModel
from pipeline.learn.task import Task

KEPT = (0, 1, 5, 10, 20)


@dataclass
class SpeedPlan:
    kept: tuple[int, ...] = KEPT
    batch_size: int = 32
    repeats: int = 20
    warmup: int = 3
    config: TrainConfig = field(default_factory=TrainConfig)


def _median_ms(step: Callable[[], None], device: torch.device, repeats: int, warmup: int) -> float:
    times = []
    for i in range(warmup + repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _dummy_task(i: int) -> Task:
    return Task(f"t{i}", [f"c{i}a", f"c{i}b"], ["x"], [0], ["x"], [0])


def model_with_kept(config: TrainConfig, backbone, tokenizer, kept: int) -> ContinualModel:
    """A model holding `kept` frozen adapters (values do not matter for speed) and a task open for training. It
    scores with its linear heads: every head option is one matmul over the features, and none is fitted here."""
    model = ContinualModel(
        replace(config, head="linear"), backbone=copy.deepcopy(backbone), tokenizer=tokenizer
    )
    for i in range(kept):
        model.begin_task(_dummy_task(i))
        model.end_task(_dummy_task(i), keep=True)
    model.begin_task(_dummy_task(kept))
    model.train()
    return model


def _train_step(
    forward: Callable[[], torch.Tensor], labels: torch.Tensor, optimizer, device
) -> Callable[[], None]:
    def step() -> None:
        with autocast(device):
            logits = forward()
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


@dataclass
class _Batch:
    """One tokenised batch of real text and its (constant) labels, on the device every step runs on."""

    ids: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor
    device: torch.device


def _batch(config: TrainConfig, tokenizer, size: int, device: torch.device) -> _Batch:
    texts = [t for task in split_wordnet20(1993, "ci") for t in task.train_inputs][:size]
    enc = tokenizer(
        texts, padding=True, truncation=True, max_length=config.backbone.max_length, return_tensors="pt"
    )
    labels = torch.zeros(len(texts), dtype=torch.long, device=device)
    return _Batch(enc["input_ids"].to(device), enc["attention_mask"].to(device), labels, device)


def _peft_step(config: TrainConfig, backbone, batch: _Batch) -> Callable[[], None]:
    """PEFT LoRA on the same query/value projections, with a linear head: what one task costs in PEFT."""
    from peft import LoraConfig, get_peft_model

    rank = config.adapter.rank
    peft_model = get_peft_model(
        copy.deepcopy(backbone),
        LoraConfig(r=rank, lora_alpha=rank, target_modules=["query", "value"], lora_dropout=0.0),
    ).to(batch.device)
    head = torch.nn.Linear(backbone.config.hidden_size, 2).to(batch.device)
    peft_opt = torch.optim.AdamW(
        [p for p in peft_model.parameters() if p.requires_grad] + list(head.parameters()), lr=config.lr
    )
    ids, mask = batch.ids, batch.mask
    return _train_step(
        lambda: head(pool(peft_model(input_ids=ids, attention_mask=mask).last_hidden_state, mask, "mean")),
        batch.labels,
        peft_opt,
        batch.device,
    )


def _core_step_ms(plan: SpeedPlan, backbone, tokenizer, kept: int, batch: _Batch) -> float:
    """Median time of one training step of the core holding `kept` frozen adapters."""
    model = model_with_kept(plan.config, backbone, tokenizer, kept).to(batch.device)
    params = (
        model.adapters.trainable_parameters() + [model.gate.alpha] + list(model.heads.heads[-1].parameters())
    )
    model.gate.alpha.requires_grad_(True)
    optimizer = torch.optim.AdamW(params, lr=plan.config.lr)
    offset = model.heads.offsets()[-1]
    return _median_ms(
        _train_step(
            lambda: model(input_ids=batch.ids, attention_mask=batch.mask)[:, offset : offset + 2],
            batch.labels,
            optimizer,
            batch.device,
        ),
        batch.device,
        plan.repeats,
        plan.warmup,
    )


def _inference_ms(plan: SpeedPlan, backbone, tokenizer, batch: _Batch) -> tuple[float, float]:
    """Median forward time with every adapter merged into the backbone, and of the plain backbone."""
    merged = model_with_kept(plan.config, backbone, tokenizer, max(plan.kept))
    merged.end_task(_dummy_task(max(plan.kept)), keep=True)
    merged.merge(unwrap=True)
    merged.eval().to(batch.device)
    plain = copy.deepcopy(backbone).eval().to(batch.device)
    ids, mask, device = batch.ids, batch.mask, batch.device
    with torch.no_grad():
        merged_ms = _median_ms(
            lambda: merged(input_ids=ids, attention_mask=mask), device, plan.repeats, plan.warmup
        )
        plain_ms = _median_ms(
            lambda: plain(input_ids=ids, attention_mask=mask), device, plan.repeats, plan.warmup
        )
    return merged_ms, plain_ms


def run_speed(plan: SpeedPlan, log: Callable[[str], None] = print) -> dict:
    import peft  # noqa: F401 - without PEFT, fail before loading the backbone

    config = plan.config
    device = pick_device(config.device)
    loaded = load_backbone(config.backbone)
    backbone, tokenizer = loaded.network, loaded.tokenizer
    batch = _batch(config, tokenizer, plan.batch_size, device)
    peft_step = _peft_step(config, backbone, batch)
    # Measured before and after the core's sweep; the lower median is the reference, so a passing disturbance
    # (another process, a cold allocator) cannot flatter the ratios.
    peft_runs = [_median_ms(peft_step, device, plan.repeats, plan.warmup)]
    log(f"PEFT LoRA step: {peft_runs[0]:.1f} ms")

    steps = []
    for kept in plan.kept:
        ms = _core_step_ms(plan, backbone, tokenizer, kept, batch)
        steps.append({"kept": kept, "step_ms": ms})
        log(f"core step with {kept} kept adapter(s): {ms:.1f} ms")

    peft_runs.append(_median_ms(peft_step, device, plan.repeats, plan.warmup))
    peft_ms = min(peft_runs)
    for row in steps:
        row["vs_peft"] = row["step_ms"] / peft_ms
    log(f"PEFT LoRA step again: {peft_runs[1]:.1f} ms; reference {peft_ms:.1f} ms")

    merged_ms, plain_ms = _inference_ms(plan, backbone, tokenizer, batch)
    log(
        f"inference, {max(plan.kept) + 1} adapters merged: {merged_ms:.1f} ms; plain backbone {plain_ms:.1f} ms"
    )
    return {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch_size": len(batch.labels),
        "rank": config.adapter.rank,
        "backbone": config.backbone.name,
        "peft_step_ms": peft_ms,
        "peft_step_runs_ms": peft_runs,
        "steps": steps,
        "inference": {
            "kept": max(plan.kept) + 1,
            "merged_ms": merged_ms,
            "plain_ms": plain_ms,
            "ratio": merged_ms / plain_ms,
        },
    }


def speed_markdown(result: dict, command: str) -> str:
    lines = [
        f"# Speed: core vs PEFT LoRA ({result['backbone']}, {result['device']}, {result['threads']} threads)",
        "",
        f"`{command}`; batch {result['batch_size']}, rank {result['rank']}, medians of repeated steps.",
        "",
        "| kept adapters | core step (ms) | PEFT LoRA step (ms) | ratio |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {s['kept']} | {s['step_ms']:.1f} | {result['peft_step_ms']:.1f} | {s['vs_peft']:.2f} |"
        for s in result["steps"]
    ]
    inf = result["inference"]
    row = f"| batch {result['batch_size']} | {inf['merged_ms']:.1f} | {inf['plain_ms']:.1f} | {inf['ratio']:.3f} |"
    lines += [
        "",
        f"| inference | merged, {inf['kept']} adapters (ms) | plain backbone (ms) | ratio |",
        "|---|---|---|---|",
        row,
    ]
    return "\n".join(lines) + "\n"


def write_speed_report(result: dict, out: Path, command: str) -> tuple[Path, Path]:
    """`speed.json` and `speed.md` in `out` (the paths in that order, as `write_report` returns them)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.md").write_text(speed_markdown(result, command))
    (out / "speed.json").write_text(json.dumps({**result, "command": command}, indent=2))
    return out / "speed.json", out / "speed.md"
