"""The image-folder layout of a drop, as torchvision's `ImageFolder` and the Hugging Face `imagefolder` loader read
it, turned into the parquet contract:

    train/<class>/<image>.png|.jpg|.jpeg     the training images, one folder per class
    test/<class>/<image>...                  optional held-out images (else a seeded split of train)
    task.json                                optional, as for any drop (name, stream, backbone)

The conversion is deterministic (paths sorted, fixed writer options), so the same folder always gives the same
parquet bytes and so the same dataset id, on every watcher of one release.
"""

from __future__ import annotations

import io
import re
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.learn.task import Task

IMAGE_FILE = re.compile(r"^(train|test)/([^/]+)/([^/]+\.(?:png|jpe?g))$", re.IGNORECASE)
IGNORED = re.compile(r"(^|/)(\.[^/]*|Thumbs\.db|desktop\.ini)$")
"""Files a file manager leaves behind (.DS_Store, ._x.png, Thumbs.db): never part of a dataset."""


class NotAnImageFolder(ValueError):
    """Files beside the image folder's `train/<class>/<image>` layout; the message names them."""


def is_image_folder(names: list[str]) -> bool:
    return "train.parquet" not in names and any(IMAGE_FILE.match(n) for n in names)


def image_folder_files(files: dict[str, bytes]) -> dict[str, bytes]:
    """{relative path: bytes} of an image folder → {train.parquet[, test.parquet][, task.json]}."""
    splits: dict[str, tuple[list[bytes], list[str]]] = {}
    stray = []
    for name in sorted(files):
        found = IMAGE_FILE.match(name)
        if found:
            images, labels = splits.setdefault(found.group(1).lower(), ([], []))
            images.append(files[name])
            labels.append(found.group(2))
        elif name != "task.json" and not IGNORED.search(name):
            stray.append(name)
    if stray:
        raise NotAnImageFolder(
            f"{', '.join(stray[:3])}{' …' if len(stray) > 3 else ''}: an image folder holds only "
            "train/<class>/<image>.png|jpg, test/<class>/<image>.png|jpg and task.json"
        )
    out = {f"{split}.parquet": _parquet(*rows) for split, rows in splits.items()}
    return out | ({"task.json": files["task.json"]} if "task.json" in files else {})


def _parquet(images: list[bytes], labels: list[str]) -> bytes:
    buf = io.BytesIO()
    table = pa.table({"image": pa.array(images, pa.binary()), "label": pa.array(labels, pa.string())})
    pq.write_table(table, buf, compression="none")  # PNG and JPEG are compressed already
    return buf.getvalue()


def as_image_folder(task: Task) -> dict[str, bytes]:
    """A task of encoded images as image-folder files: train/<class>/<n>.png and test/<class>/<n>.png."""
    files = {}
    for split, images, labels in (
        ("train", task.train_inputs, task.train_labels),
        ("test", task.test_inputs, task.test_labels),
    ):
        for n, (image, label) in enumerate(zip(images, labels, strict=True)):
            files[f"{split}/{task.classes[label]}/{n:05d}.png"] = image
    return files


def read_image_folder(path: Path) -> dict[str, bytes]:
    """The files of a local image folder, by relative POSIX path."""
    return {
        PurePosixPath(*p.relative_to(path).parts).as_posix(): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }
