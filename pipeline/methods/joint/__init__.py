"""The joint ceiling: the first-task recipe trained on every task at once (not continual; bench only)."""

from pipeline.methods.base import Method

METHOD = Method("joint", "every task at once with the first-task recipe: the ceiling", benchmark_only=True)
