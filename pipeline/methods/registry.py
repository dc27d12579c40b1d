"""Every method by name: the one mapping the code around the methods reads (PEFT's `mapping.py` for us)."""

from __future__ import annotations

from pipeline.methods.adapt_once import METHOD as ADAPT_ONCE
from pipeline.methods.base import Method
from pipeline.methods.frozen import METHOD as FROZEN
from pipeline.methods.joint import METHOD as JOINT
from pipeline.methods.litelora import METHOD as LITELORA
from pipeline.methods.lora_per_task import METHOD as LORA_PER_TASK
from pipeline.methods.sdlora import METHOD as SDLORA
from pipeline.methods.seq_lora import METHOD as SEQ_LORA
from pipeline.methods.share import METHOD as SHARE

METHODS: dict[str, Method] = {
    m.name: m for m in (LITELORA, SDLORA, SEQ_LORA, FROZEN, ADAPT_ONCE, SHARE, LORA_PER_TASK, JOINT)
}
DEFAULT_METHOD = LITELORA.name


class UnknownMethod(ValueError):
    pass


def method_of(name: str) -> Method:
    if name not in METHODS:
        raise UnknownMethod(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def stream_methods() -> tuple[str, ...]:
    """What a stream (a drop's task.json, `litelora train`) may run."""
    return tuple(name for name, m in METHODS.items() if not m.benchmark_only)


def check_stream_method(name: str) -> str:
    """`name` if a stream may run it (LiteLoRA, the other gated methods, Share), else `UnknownMethod` saying which may."""
    if name not in stream_methods():
        raise UnknownMethod(f"method {name!r}: choose one of {', '.join(stream_methods())}")
    return name


def every_class_methods() -> tuple[str, ...]:
    """The stream methods whose one set of adapters scores every class (`ContinualModel`), no task name needed."""
    return tuple(name for name in stream_methods() if not METHODS[name].selects_by_task)
