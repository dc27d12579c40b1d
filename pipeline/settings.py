"""The one place that reads the environment: `LITELORA_*` variables and offline defaults."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LITELORA_", extra="ignore")

    home: Path = Path.home() / ".litelora"
    """State directory (logs, local stack data)."""
    device: str = "auto"
    """auto = CUDA when present, else CPU."""


def apply_offline_defaults() -> None:
    """Models and data load from local files: never let transformers reach for a hub at run time."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def load_settings() -> Settings:
    apply_offline_defaults()
    return Settings()
