"""Split-FashionMNIST from the shipped parquet: tiers, seeded class orderings, PNG inputs."""

import gzip
import io

import numpy as np
from PIL import Image

from pipeline.data.class_split import class_order
from pipeline.data.fashion_mnist import CLASSES, read_idx, split_fashion_mnist


def test_ci_tier_has_five_two_class_tasks_of_png_images():
    tasks = split_fashion_mnist(1993, "ci")
    assert len(tasks) == 5 and all(len(t.classes) == 2 for t in tasks)
    assert sorted(c for t in tasks for c in t.classes) == sorted(CLASSES)
    assert all(len(t.train_inputs) == 2 * 16 and len(t.test_inputs) == 2 * 8 for t in tasks)
    image = Image.open(io.BytesIO(tasks[0].train_inputs[0]))
    assert image.format == "PNG" and image.size == (28, 28) and image.mode == "L"


def test_class_orderings_are_seeded_like_split_wordnet20():
    for ordering in (1993, 1995, 2000):
        tasks = split_fashion_mnist(ordering, "ci")
        assert [c for t in tasks for c in t.classes] == class_order(list(CLASSES), ordering)
    assert split_fashion_mnist(1993, "ci")[0].classes != split_fashion_mnist(1995, "ci")[0].classes


def test_the_ci_tier_is_the_head_of_the_quick_tier():
    ci, quick = split_fashion_mnist(1993, "ci")[0], split_fashion_mnist(1993, "quick")[0]
    assert len(quick.train_inputs) == 300 and len(quick.test_inputs) == 200
    assert set(ci.train_inputs) <= set(quick.train_inputs) and set(ci.test_inputs) <= set(quick.test_inputs)


def test_idx_files_are_read_with_their_shape(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "x-idx3-ubyte.gz"
    header = bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in images.shape)
    path.write_bytes(gzip.compress(header + images.tobytes()))
    assert np.array_equal(read_idx(path), images)
