"""The learning core: backbone, heads, the continual model, the per-task recipe, evaluation and metrics.

Imports torch and transformers only, so it runs on a bare GPU box without Ray, MLflow or S3.
"""
