"""LiteLoRA Pipeline: continual fine-tuning with gated SD-LoRA adapter sets.

Layers (inner to outer): `pipeline.adapters` and `pipeline.learn` are the learning core (torch and
transformers only); `pipeline.data` reads task datasets; `pipeline.bench` and `pipeline.cli` sit on top.
"""

__version__ = "0.1.0"
