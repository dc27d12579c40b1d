"""The continual-learning methods, one module each, and the mapping from name to method (registry.py)."""

from pipeline.methods.base import Method
from pipeline.methods.registry import (
    DEFAULT_METHOD,
    METHODS,
    UnknownMethod,
    check_stream_method,
    every_class_methods,
    method_of,
    stream_methods,
)

__all__ = [
    "DEFAULT_METHOD",
    "METHODS",
    "Method",
    "UnknownMethod",
    "check_stream_method",
    "every_class_methods",
    "method_of",
    "stream_methods",
]
