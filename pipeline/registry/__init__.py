"""Adapter sets and datasets in S3 (immutable, content-addressed) and their lineage in MLflow.

Knows boto3/pyarrow and mlflow; never imports ray.
"""
