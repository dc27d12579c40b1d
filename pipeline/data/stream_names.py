"""The rule a stream's name obeys, checked where a drop names it (its `task.json`) before anything is stored.

Streams themselves (records, registered models) live in `registry/streams.py`; the backbone and method a new
stream may name are checked by `learn/backbone.py` and `methods/registry.py`.
"""

from __future__ import annotations

import re

DEFAULT_STREAM = "default"
STREAM_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}\Z")
"""Lower case, digits and '-': a stream name becomes part of an MLflow model name and of bucket keys."""


class StreamError(ValueError):
    """A stream name, or a stream a drop cannot join; the message says what to do."""


def check_stream_name(name: str) -> str:
    if not isinstance(name, str) or not STREAM_NAME.match(name):
        raise StreamError(
            f"stream name {name!r}: 1-40 lower-case letters, digits or '-', not starting with '-'"
        )
    return name
