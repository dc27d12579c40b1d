"""What a LiteLoRA search may change, as typed, validated data; Ray Tune sees it only through `to_tune`.

Every knob is optional: `None` keeps the value the task would be trained with anyway (its parent set's
configuration, or the defaults), so a space can be as small as one range. A JSON file with the same fields
overrides the defaults (`litelora tune --space space.json`).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator


class InvalidSearchSpace(ValueError):
    """The space is empty or contradicts itself; the message says which field and why."""


class Range(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low > self.high:
            raise ValueError(f"low {self.low} is above high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log-uniform range needs low > 0 (got {self.low})")
        return self


class SearchSpace(BaseModel):
    """Defaults: the knobs the paper says matter (rank, λ, τ) plus the two that decide recruitment speed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rank: list[int] | None = [4, 8, 16]
    """Rank of the task's new adapter (earlier adapters keep theirs)."""
    sparsity: Range | None = Range(low=0.05, high=2.0, log=True)
    """λ, weight of the gate's L1 term: higher prunes more adapters."""
    temperature: Range | None = Range(low=0.5, high=2.0)
    """τ of the gate's sigmoid. The keep test (l_t > 0) does not depend on it; it sets how sharply the
    straight-through gradient reacts near the threshold, hence how fast l_t crosses it."""
    init_logit: Range | None = Range(low=0.1, high=2.0)
    """Where l_t starts: the distance the sparsity term must push it to prune."""
    lr: Range | None = Range(low=5e-4, high=5e-3, log=True)
    phase2_lr: Range | None = None

    @field_validator("rank")
    @classmethod
    def _ranks(cls, ranks: list[int] | None) -> list[int] | None:
        if ranks is not None:
            if not ranks:
                raise ValueError("the list of ranks is empty")
            if any(r < 1 for r in ranks):
                raise ValueError(f"ranks must be >= 1 (got {ranks})")
        return ranks

    @model_validator(mode="after")
    def _bounds(self) -> SearchSpace:
        if self.init_logit is not None and self.init_logit.low <= 0:
            raise ValueError("init_logit must stay > 0, or the new adapter never trains in phase 1")
        for name in ("sparsity", "temperature", "lr", "phase2_lr"):
            value = getattr(self, name)
            if value is not None and (value.low < 0 or value.low == 0 and name != "sparsity"):
                raise ValueError(
                    f"{name} must be {'>=' if name == 'sparsity' else '>'} 0 (got low {value.low})"
                )
        if not self.knobs():
            raise ValueError("every knob is fixed (all fields null): there is nothing to search")
        return self

    def knobs(self) -> list[str]:
        return [name for name in type(self).model_fields if getattr(self, name) is not None]

    @classmethod
    def parse(cls, data: dict) -> SearchSpace:
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'space'}: {e['msg']}" for e in err.errors()
            )
            raise InvalidSearchSpace(f"invalid search space: {problems}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> SearchSpace:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise InvalidSearchSpace(f"cannot read search space {path}: {err}") from None
        return cls.parse(data)

    def samples(self, count: int, seed: int) -> list[dict]:
        """The search's `count` configurations, drawn from `seed`: the same list every time, so a resumed search
        knows which of them it has already trained (Tune runs exactly these, as its points to evaluate)."""
        rng, configs = random.Random(seed), []
        for _ in range(count):
            config = {}
            for name in self.knobs():
                value = getattr(self, name)
                if isinstance(value, list):
                    config[name] = rng.choice(value)
                elif value.log:
                    drawn = math.exp(rng.uniform(math.log(value.low), math.log(value.high)))
                    config[name] = min(max(drawn, value.low), value.high)
                else:
                    config[name] = rng.uniform(value.low, value.high)
            configs.append(config)
        return configs

    def to_tune(self) -> dict:
        """The Ray Tune `param_space`: one sampler per searched knob."""
        from ray import tune

        space = {}
        for name in self.knobs():
            value = getattr(self, name)
            if isinstance(value, list):
                space[name] = tune.choice(value)
            elif value.low == value.high:
                space[name] = value.low
            else:
                space[name] = (tune.loguniform if value.log else tune.uniform)(value.low, value.high)
        return space
