"""What a drop's `task.json` may name beyond its task: the stream it belongs to and, for a new stream, its backbone
and method.

Streams themselves (records, registered models) live in `registry/streams.py`; these are the naming rules a
drop is validated against before anything is stored.
"""

from __future__ import annotations

import re

from pipeline.learn.backbone import VISION_BACKBONES, BackboneConfig
from pipeline.methods import stream_methods

DEFAULT_STREAM = "default"
STREAM_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}\Z")
"""Lower case, digits and '-': a stream name becomes part of an MLflow model name and of bucket keys."""
DEFAULT_BACKBONE = BackboneConfig().name


class StreamError(ValueError):
    """A stream name or backbone that cannot be used; the message says what to do."""


def check_stream_name(name: str) -> str:
    if not isinstance(name, str) or not STREAM_NAME.match(name):
        raise StreamError(
            f"stream name {name!r}: 1-40 lower-case letters, digits or '-', not starting with '-'"
        )
    return name


def check_backbone_name(name: str) -> str:
    """Backbones a stream may name: the packaged text encoder or a vision backbone (both load offline)."""
    known = (DEFAULT_BACKBONE, *VISION_BACKBONES)
    if name not in known:
        raise StreamError(f"backbone {name!r}: choose one of {', '.join(known)}")
    return name


def check_method_name(name: str) -> str:
    """Methods a stream may run: LiteLoRA (the default), the other gated methods, or Share."""
    if name not in stream_methods():
        raise StreamError(f"method {name!r}: choose one of {', '.join(stream_methods())}")
    return name
