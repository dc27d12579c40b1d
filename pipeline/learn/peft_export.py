"""Write an adapter set as standard PEFT LoRA adapters (files only: PEFT itself is not needed to export).

    DIR/combined/          one LoRA of rank Σr holding every kept adapter: the set's exact backbone delta
    DIR/adapters/<t>-<task>/  one LoRA per kept adapter, named after the task (index, name) that recruited it
    DIR/heads.safetensors  the set's head option as one linear map (weight [classes × hidden], bias [classes])
    DIR/labels.json        class names in head order, the task owning each, pooling, max length, head option and
                           whether features are L2-normalised before the map (prototype head)

On a vision backbone the adapted layers are 1×1 convolutions that we wrap as `<conv>.linear` (adapters/
pointwise.py); they are exported under the convolution's own name with 1×1 kernels (A [r, C_in, 1, 1],
B [C_out, r, 1, 1]), PEFT's Conv2d LoRA, so PEFT loads them onto the unmodified network
(`pipeline.learn.efficientnet.load_efficientnet_lite0()`); labels.json then gives the image size and the
ImageNet normalisation.

SD-LoRA's magnitudes are folded into B: PEFT computes ΔW = (lora_alpha / r) · B A, and with lora_alpha = r
that is B A, so B_peft = B · diag(s_i) reproduces W + Σ_i s_i · B_i A_i, with s_i = α_i / n_i (the newest kept
adapter is still unnormalised, n = 1), exactly the scales the layer itself applies (`delta_factors`). Loading `combined` (or
every per-adapter LoRA at once) on the same backbone gives the set's features; the heads give its logits.

A Share set has no combined delta: each task is its own LoRA, reconstructed from the basis (Â_j = (U_A L_A^j)ᵀ,
B̂_j = U_B L_B^j, rank p, lora_alpha = p), written as DIR/adapters/<t>-<task>/ with its head as
DIR/heads/<t>-<task>.safetensors; labels.json lists each task's classes, adapter and head.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

from pipeline.learn.head_options import classifier
from pipeline.learn.image_backbone import IMAGENET_MEAN, IMAGENET_STD


def adapter_dir(
    directory: Path, targets: list[str], rank: int, base_model: str, tensors: dict[str, torch.Tensor]
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": base_model,
        "r": rank,
        "lora_alpha": rank,
        "lora_dropout": 0.0,
        "bias": "none",
        "fan_in_fan_out": False,
        "target_modules": targets,
        "inference_mode": True,
        "init_lora_weights": True,
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": None,
    }
    (directory / "adapter_config.json").write_text(json.dumps(config, indent=2))
    save_file({k: v.contiguous() for k, v in tensors.items()}, directory / "adapter_model.safetensors")


def input_labels(model) -> dict:
    """What a user needs to feed the exported network as the set was fed."""
    backbone = model.config.backbone
    if backbone.reads_images:
        return {"image_size": backbone.image_size, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    return {"pooling": backbone.pooling, "max_length": backbone.max_length}


def task_folder(index: int, name: str) -> str:
    """A task's export folder: its index (task names may repeat across drops) and its name with anything but
    letters, digits, '.', '_' and '-' replaced, so that no name a set holds (sets registered before names were
    checked included) leads the export outside its directory."""
    return f"{index:02d}-" + re.sub(r"[^A-Za-z0-9._-]", "_", name)[:100].lstrip(".")


def peft_target(name: str, convolutional: bool) -> str:
    """1×1 convolutions wrapped as `<conv>.linear` are exported under the convolution's own name."""
    return name.removesuffix(".linear") if convolutional else name


def peft_name(name: str, a: torch.Tensor, b: torch.Tensor, convolutional: bool):
    """A layer's PEFT module name and factors (1×1 kernels for a convolution)."""
    if convolutional:
        return peft_target(name, True), a[:, :, None, None], b[:, :, None, None]
    return name, a, b


def make_room(directory: Path, replace: bool) -> None:
    """An export goes into a directory of its own: one holding an earlier export (its labels.json) is refused, or
    with `replace` emptied, so two versions' adapters never mix."""
    if (directory / "labels.json").exists():
        if not replace:
            raise ValueError(
                f"{directory} holds an earlier export: choose an empty directory, or replace it (--force)"
            )
        shutil.rmtree(directory)


@torch.no_grad()
def export_peft(model, directory: str | Path, replace: bool = False) -> dict:
    """Write the set under `directory`; returns a summary (adapters written, ranks, classes). A set whose
    predictions name their task writes itself (its method's own export)."""
    make_room(Path(directory), replace)
    if model.method.selects_by_task:
        return model.export_peft(directory)
    if model.gate.task_open:
        raise RuntimeError("cannot export while a task is being trained")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    if model.routes is not None:
        return export_routed(model, out)
    base = model.config.backbone.name
    layers = list(model.adapters)
    convolutional = model.config.backbone.reads_images  # 1×1 convolutions wrapped as `<conv>.linear`
    targets = [peft_target(name, convolutional) for name, _ in layers]
    ranks, owners = model.adapter_ranks(), model.adapter_slots()
    written = []
    combined: dict[str, torch.Tensor] = {}
    per_adapter: list[dict[str, torch.Tensor]] = [{} for _ in ranks]
    for name, layer in layers:
        factors = layer.delta_factors()
        if factors is None:
            continue
        a, s, b = (t.detach().float().cpu() for t in factors)
        b = b * s  # magnitudes folded into B (see module docstring)
        name, a, b = peft_name(name, a, b, convolutional)
        key = f"base_model.model.{name}"
        combined |= {f"{key}.lora_A.weight": a, f"{key}.lora_B.weight": b}
        start = 0
        for i, r in enumerate(ranks):
            per_adapter[i] |= {
                f"{key}.lora_A.weight": a[start : start + r],
                f"{key}.lora_B.weight": b[:, start : start + r],
            }
            start += r
    if combined:
        adapter_dir(out / "combined", targets, sum(ranks), base, combined)
        for i, tensors in enumerate(per_adapter):
            name = task_folder(owners[i], model.tasks[owners[i]].name)
            adapter_dir(out / "adapters" / name, targets, ranks[i], base, tensors)
            written.append(name)
    weight, bias, normalise = classifier(model, model.config.head)
    save_file(
        {
            "weight": weight.detach().float().cpu().contiguous(),
            "bias": bias.detach().float().cpu().contiguous(),
        },
        out / "heads.safetensors",
    )
    labels = {
        "classes": model.classes,
        "task_of_class": model.introduced_by(),
        **input_labels(model),
        "head": model.config.head,
        "normalize_features": normalise,
        "base_model": base,
        "adapters": written,
        "ranks": ranks,
    }
    (out / "labels.json").write_text(json.dumps(labels, indent=2))
    return labels


def export_routed(model, out: Path) -> dict:
    """A routed set (learn/routing.py) as one PEFT LoRA per expert, each its path's adapters with their magnitudes
    folded into B (DIR/experts/<e>/; the bare encoder, expert 0, has none), the router and each expert's head as
    linear maps over L2-normalised features (DIR/router.safetensors, DIR/heads/<e>.safetensors), and in
    labels.json each class's expert. A prediction: the router over the bare encoder's features picks a class,
    whose expert's LoRA and head give the answer among that expert's classes."""
    routes, convolutional = model.routes, model.config.backbone.reads_images
    if model.config.ridge_dim:
        raise ValueError("a ridge head over random features is not one linear map of the features")
    layers = list(model.adapters)
    targets = [peft_target(name, convolutional) for name, _ in layers]
    written = []
    for expert, path in enumerate(routes.experts):
        if not path:
            continue
        tensors = {}
        for name, layer in layers:
            scales = layer.frozen_scales()
            a = torch.cat([layer.frozen_factors(i)[0] for i in path]).float().cpu()
            b = torch.cat([layer.frozen_factors(i)[1] * scales[i] for i in path], dim=1).float().cpu()
            name, a, b = peft_name(name, a, b, convolutional)
            tensors |= {
                f"base_model.model.{name}.lora_A.weight": a,
                f"base_model.model.{name}.lora_B.weight": b,
            }
        adapter_dir(out / "experts" / str(expert), targets, a.shape[0], model.config.backbone.name, tensors)
        written.append(str(expert))
    owner = torch.tensor(routes.class_expert)
    (out / "heads").mkdir(exist_ok=True)
    save_file({"weight": routes.router.weight.contiguous()}, out / "router.safetensors")
    for expert, head in enumerate(routes.heads):
        if head.num_classes:
            weight = head.weight[owner[: head.num_classes] == expert]
            save_file({"weight": weight.contiguous()}, out / "heads" / f"{expert}.safetensors")
    labels = {
        "classes": model.classes,
        "task_of_class": model.introduced_by(),
        **input_labels(model),
        "head": "routed ridge",
        "normalize_features": True,
        "base_model": model.config.backbone.name,
        "experts": routes.experts,
        "class_expert": routes.class_expert,
        "adapters": [f"experts/{e}" for e in written],
    }
    (out / "labels.json").write_text(json.dumps(labels, indent=2))
    return labels
