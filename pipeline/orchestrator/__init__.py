"""Orchestration: turn a validated task dataset into a registered adapter set (and, later, watch the bucket)."""
