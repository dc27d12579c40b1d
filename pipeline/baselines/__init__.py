"""Benchmark-only baselines beside what production runs: frozen nearest class mean, Share and one LoRA per task
(task id needed), and the joint-training ceiling. Nothing in the service imports them."""
