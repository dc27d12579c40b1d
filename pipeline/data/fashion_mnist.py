"""Split-FashionMNIST: Zalando's Fashion-MNIST (28×28 grey clothing images, 10 classes) cut into 5 tasks × 2 classes.

Inputs are PNG bytes, the task dataset contract's `image` column. The ci and quick tiers (150 train / 100 test
per class, drawn from the official train and test sets) ship in this package as parquet, so CI needs no apt
package; the full tier reads Debian's `dataset-fashion-mnist` IDX files. Class orderings are seeded exactly
like Split-WordNet-20's.
"""

from __future__ import annotations

import gzip
import io
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.data.class_split import class_order, shipped_tier, split_by_class
from pipeline.data.wordnet import ORDERINGS
from pipeline.learn.task import Task

IDX_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
POOL_FILE = "split_fashion_mnist_quick.parquet"
CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""Label names in the order of the dataset's label ids."""
CLASSES_PER_TASK = 2
TIERS = {"ci": (16, 8), "quick": (150, 100)}  # train / test images per class; "full" = all 60k / 10k


def read_idx(path: Path) -> np.ndarray:
    """An IDX array (the MNIST file format: magic, dimension sizes, then unsigned bytes), gzip-compressed."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def read_split(split: str, directory: Path = IDX_DIR) -> tuple[np.ndarray, np.ndarray]:
    """(images [N, 28, 28] uint8, label ids [N]) of the official train or test split."""
    images, labels = (directory / name for name in IDX_FILES[split])
    if not images.exists():
        raise FileNotFoundError(
            f"{images} not found: install Debian's dataset-fashion-mnist for the full tier"
        )
    return read_idx(images), read_idx(labels)


def png(image: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG", optimize=True)
    return out.getvalue()


def build_pool(per_class: dict[str, int], seed: int = 0, directory: Path = IDX_DIR) -> pa.Table:
    """Columns image (PNG), label (name), split: a seeded sample of `per_class[split]` images of every class from
    each official split, or all of them where the count is None."""
    rows = {"image": [], "label": [], "split": []}
    for split, count in per_class.items():
        images, labels = read_split(split, directory)
        rng = random.Random(seed)
        by_class = defaultdict(list)
        for i, y in enumerate(labels.tolist()):
            by_class[y].append(i)
        for y in range(len(CLASSES)):
            picked = by_class[y] if count is None else rng.sample(by_class[y], count)
            rows["image"] += [png(images[i]) for i in picked]
            rows["label"] += [CLASSES[y]] * len(picked)
            rows["split"] += [split] * len(picked)
    return pa.table(rows)


def load_pool(tier: str) -> pa.Table:
    if tier == "full":
        return build_pool({"train": None, "test": None})
    if tier not in TIERS:
        raise ValueError(f"unknown tier {tier!r}; choose ci, quick or full")
    return shipped_tier(POOL_FILE, *TIERS[tier])


def split_fashion_mnist(ordering: int = ORDERINGS[0], tier: str = "quick") -> list[Task]:
    table = load_pool(tier)
    images, labels, splits = (table[c].to_pylist() for c in ("image", "label", "split"))
    classes = class_order(list(CLASSES), ordering)
    return split_by_class(
        images,
        labels,
        splits,
        classes,
        CLASSES_PER_TASK,
        f"fashion-{ordering}",
        {"ordering": ordering, "tier": tier},
    )


def write_shipped_pool(target_dir: Path) -> Path:
    """Regenerate the shipped quick-tier parquet from Debian's IDX files (maintainers only)."""
    train, test = TIERS["quick"]
    path = target_dir / POOL_FILE
    pq.write_table(build_pool({"train": train, "test": test}), path, compression="zstd")
    return path
