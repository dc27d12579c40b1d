"""A gated model's features of every task's held-out rows, kept on local disk by what the encoder computes.

Scoring every task after each drop would run the adapted encoder over every earlier task's held-out rows: a cost
that grows with the lineage. A task that leaves the encoder as it was (a reuse with fixed magnitudes) leaves
every earlier feature as it was, bit for bit, so the features are kept under a fingerprint of the encoder's
computation (pretrained weights and each adapted layer's ΔW = B diag(s) A) and the dataset id: only the heads'
scores are recomputed. A task that changes the encoder changes the fingerprint, and every task is embedded again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pipeline.learn.adapted_features import features_of
from pipeline.learn.task import Task

ADAPTER_STATE = ("frozen_a", "frozen_b", "norms", "slots", "row_owner", "input_basis", "lora_a", "lora_b")
"""An adapted layer's own tensors: what they add to the layer's output is hashed as its ΔW factors instead (the
input basis and the factors' split into slots change on a reuse without changing ΔW)."""


def _update(digest, tensor: torch.Tensor) -> None:
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    digest.update(str((tensor.dtype, tuple(tensor.shape))).encode())
    digest.update(flat.view(torch.uint8).numpy() if flat.numel() else b"")


@torch.no_grad()
def encoder_fingerprint(model) -> str:
    """Names what the model's encoder computes: equal fingerprints, equal features of any rows."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps(asdict(model.config.backbone), sort_keys=True, default=str).encode())
    for name, tensor in model.backbone.state_dict().items():
        if name.rsplit(".", 1)[-1] not in ADAPTER_STATE:
            digest.update(name.encode())
            _update(digest, tensor)
    for name, layer in model.adapters:
        digest.update(f"{name} merged={layer.merged}".encode())
        for factor in (layer.delta_factors() or ()) if not layer.merged else ():
            _update(digest, factor)
    if model.routes is not None:  # which adapters a row meets depends on the router, which every task refits
        digest.update(json.dumps(model.routes.manifest()).encode())
        for tensor in model.routes.router.tensors().values() if model.routes.router.num_classes else ():
            _update(digest, tensor)
    return digest.hexdigest()


def held_out_features(model, tasks: list[Task], directory: Path | None) -> list[torch.Tensor]:
    """`model`'s features of each task's held-out rows, read from `directory` where this encoder computed them
    before (tasks without a dataset id are always embedded)."""
    if directory is None:
        return [features_of(model, task.test_inputs) for task in tasks]
    kept = directory / encoder_fingerprint(model)
    out = []
    for task in tasks:
        path = kept / f"{task.dataset_id}-test.safetensors" if task.dataset_id else None
        if path is not None and path.exists():
            cached = load_file(path)["features"]
            if len(cached) == len(task.test_inputs):
                out.append(cached)
                continue
        features = features_of(model, task.test_inputs)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.partial")
            save_file({"features": features.contiguous()}, partial)
            partial.replace(path)  # atomic: a reader never sees half a file
        out.append(features)
    return out
