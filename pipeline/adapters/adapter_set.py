"""The adapter-set file format: content-addressed safetensors files plus one JSON manifest, written last.

    <set>/manifest.json
    <set>/adapters/<sha256>.safetensors   one per kept adapter: `<module>.lora_A`, `<module>.lora_B`
    <set>/heads/<sha256>.safetensors      one per task: `weight`, `bias`
    <set>/scoring/<sha256>.safetensors    optional: class statistics, calibration, aligned classifier
    <set>/spaces/<sha256>.safetensors     optional (TrainConfig.recruit_space "null"): each adapted layer's basis of
                                          the earlier tasks' inputs, `<module>.input_basis` [d_in × k]
    <set>/deltas/<sha256>.safetensors     format 2 (method `share`): each layer's basis and every task's
                                          coefficients, `<module>.basis_a|basis_b|a|b`

A file's name is the SHA-256 of its bytes, so sets that share an adapter share its file and a corrupt or
substituted file is detected on load. Tensors are only ever read with safetensors, never with pickle.

The manifest's `format` names its version. Format 2 adds task-selected sets (Share: no gate, no kept adapters, a
delta per task); every other set is still written as format 1, which holds it, so earlier releases keep reading
those. A release reads every version it knows (each upgraded in memory to
the current shape by `UPGRADES`) and refuses a newer one with a message that says to upgrade; a committed
fixture of each version (tests/learn/fixtures/) keeps old sets loading.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from pipeline.errors import UserError

FORMAT_NAME, FORMAT_VERSION = "litelora-adapter-set", 2
FORMAT = f"{FORMAT_NAME}/1"
TASK_SELECTED_FORMAT = f"{FORMAT_NAME}/2"
MANIFEST = "manifest.json"
UPGRADES = {1: lambda manifest: manifest, 2: lambda manifest: manifest}
"""Manifest format version → a function that brings such a manifest to the current shape."""


class AdapterSetError(ValueError, UserError):
    """An adapter set on disk is missing, corrupt or not an adapter set."""


def tensor_file(kind: str, tensors: dict[str, torch.Tensor]) -> tuple[str, bytes]:
    """(relative path, bytes) of a content-addressed tensor file."""
    data = save_safetensors({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()})
    return f"{kind}/{hashlib.sha256(data).hexdigest()}.safetensors", data


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_adapter_set(directory: str | Path, manifest: dict, files: dict[str, bytes]) -> Path:
    """Write tensor files first, the manifest last: a set is visible only once it is complete."""
    directory = Path(directory)
    for rel, data in files.items():
        target = directory / rel
        if not target.exists():  # content-addressed: an existing file already holds these bytes
            _atomic_write(target, data)
    _atomic_write(directory / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
    return directory


def read_manifest(directory: str | Path) -> dict:
    path = Path(directory) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as err:
        raise AdapterSetError(
            f"{directory}: no {MANIFEST} (not an adapter set, or not completely written)"
        ) from err
    except json.JSONDecodeError as err:
        raise AdapterSetError(f"{path}: manifest is not valid JSON ({err})") from err
    return upgrade_manifest(manifest, path)


def upgrade_manifest(manifest: dict, path: Path | str = MANIFEST) -> dict:
    """A manifest of any known format version in the current shape; a newer or foreign one is refused."""
    name, _, version = str(manifest.get("format", "") if isinstance(manifest, dict) else "").partition("/")
    if name != FORMAT_NAME or not re.fullmatch(r"[0-9]+", version):
        raise AdapterSetError(f"{path}: format {manifest.get('format')!r} is not an adapter-set manifest")
    if int(version) > FORMAT_VERSION:
        raise AdapterSetError(
            f"{path}: written by a newer LiteLoRA (format {version}; this release reads up to {FORMAT_VERSION}): "
            "upgrade litelora-pipeline to load it"
        )
    if int(version) not in UPGRADES:
        raise AdapterSetError(f"{path}: format {version} is no longer readable (known: {sorted(UPGRADES)})")
    return UPGRADES[int(version)](manifest)


def read_tensor_file(directory: str | Path, rel: str) -> dict[str, torch.Tensor]:
    """Load one content-addressed file, checking that its bytes match the hash in its name."""
    if Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise AdapterSetError(f"manifest refers to {rel!r}, outside the adapter set")
    path = Path(directory) / rel
    try:
        data = path.read_bytes()
    except FileNotFoundError as err:
        raise AdapterSetError(f"{path}: file listed in the manifest is missing") from err
    if hashlib.sha256(data).hexdigest() != Path(rel).stem:
        raise AdapterSetError(f"{path}: content does not match its SHA-256 name (corrupt or replaced)")
    try:
        return load_safetensors(data)
    except SafetensorError as err:
        raise AdapterSetError(f"{path}: not a safetensors file ({err})") from err


def set_files(manifest: dict) -> list[str]:
    """Every tensor file a manifest refers to, relative to the set."""
    files = [a["file"] for a in manifest.get("adapters", [])] + [t["head"] for t in manifest.get("tasks", [])]
    return files + [manifest[key] for key in ("scoring", "input_bases", "deltas") if manifest.get(key)]


def verify_adapter_set(directory: str | Path) -> dict:
    """Read the manifest and every file it lists (hash and safetensors format); return the manifest."""
    manifest = read_manifest(directory)
    for rel in set_files(manifest):
        read_tensor_file(directory, rel)
    return manifest
