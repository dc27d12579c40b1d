"""Every method by name: the one mapping the code around the methods reads (PEFT's `mapping.py` for us)."""

from __future__ import annotations

from pipeline.methods import adapt_once, frozen, joint, litelora, lora_per_task, sdlora, seq_lora, share
from pipeline.methods.base import Method

METHODS: dict[str, Method] = {
    m.METHOD.name: m.METHOD
    for m in (litelora, sdlora, seq_lora, frozen, adapt_once, share, lora_per_task, joint)
}
DEFAULT_METHOD = "litelora"


class UnknownMethod(ValueError):
    pass


def method_of(name: str) -> Method:
    if name not in METHODS:
        raise UnknownMethod(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def stream_methods() -> tuple[str, ...]:
    """What a stream (a drop's task.json, `litelora train`) may run."""
    return tuple(name for name, m in METHODS.items() if not m.benchmark_only)


def every_class_methods() -> tuple[str, ...]:
    """The stream methods whose one set of adapters scores every class (`ContinualModel`), no task name needed."""
    return tuple(name for name in stream_methods() if not METHODS[name].selects_by_task)
