"""LiteLoRA Pipeline: continual fine-tuning with gated SD-LoRA adapter sets.

Layers (inner to outer, docs/architecture.md §1): `pipeline.adapters` and `pipeline.learn` are the learning core
(torch and transformers only); `pipeline.data` reads task datasets; `pipeline.registry` keeps sets in the bucket
and lineage in MLflow; `pipeline.orchestrator`, `pipeline.tuning` and `pipeline.serving` run on Ray around them;
`pipeline.bench` and `pipeline.baselines` measure; `pipeline.cli` maps commands onto all of it.
"""

import os

__version__ = "0.1.0"
PRODUCT = "litelora"
"""The product's name wherever it names a thing of ours: the console script, the embedded stack's bucket and
logins, the Serve application."""

# Ray reads this once, when it is imported, and without it a local node listens on every interface whatever
# `_node_ip_address` says. So it is set here, before any of our modules imports ray. A driver joining a cluster
# (RAY_ADDRESS) must advertise its routable address instead.
if not os.environ.get("RAY_ADDRESS"):
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
