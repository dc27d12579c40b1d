"""Orchestration: watch the bucket, claim each drop once, train it on the current set, register and promote it
(docs/architecture.md §2)."""
