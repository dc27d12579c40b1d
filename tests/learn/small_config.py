"""The configuration the learning-core tests train the tiny BERT with."""

from pipeline.learn.config import TrainConfig


def small_config(**changes) -> TrainConfig:
    """One short epoch a phase, and a gate whose logit starts high enough to keep every adapter (unless a test's
    `changes` say otherwise: any TrainConfig, adapter or gate field by name)."""
    base = TrainConfig(epochs=1, batch_size=8, phase2_batch_size=4, lr=5e-3, seed=0)
    return base.with_overrides(init_logit=5.0).with_overrides(**changes)
