"""The learning core runs on a bare GPU box: importing it never imports Ray, MLflow or boto3."""

import subprocess
import sys

CORE = [
    "pipeline.adapters",
    "pipeline.learn.recipe",
    "pipeline.learn.model",
    "pipeline.learn.frozen",
    "pipeline.learn.peft_export",
    "pipeline.methods",
    "pipeline.methods.share.model",
    "pipeline.data.task_dataset",
    "pipeline.data.wordnet",
    "pipeline.data.fashion_mnist",
]


def test_the_learning_core_imports_neither_ray_nor_mlflow_nor_boto3():
    code = (
        "import importlib, sys\n"
        f"for name in {CORE!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in ('ray', 'mlflow', 'boto3') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
