"""Benchmark-only baselines beside what production runs: frozen nearest class mean, the task-id stream runner (Share
and one LoRA per task, whose model is `methods/share/model.py`), and the joint-training ceiling. Nothing in the
service imports them."""
