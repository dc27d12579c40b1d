"""A registered adapter set, loaded once with its adapters merged into the backbone, answering predictions.

Merged and unwrapped (plain nn.Linear modules again), a prediction costs exactly what the plain backbone
costs; the set cannot train afterwards. A Share set keeps a delta per task: a prediction names its task, and
that task's delta and head answer it.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import torch

from pipeline.data.images import image_problem
from pipeline.data.task_dataset import DatasetLimits
from pipeline.errors import UserError
from pipeline.learn.methods import AnyModel
from pipeline.learn.model import task_named
from pipeline.settings import Connection

MAX_TEXT_CHARS = 10_000
MAX_BATCH = 256
IMAGE_LIMITS = DatasetLimits()
"""A served image obeys the limits of a dropped one."""


class BadRequest(ValueError, UserError):
    """The input cannot be predicted; the message says why (HTTP 4xx, CLI exit 1)."""


@dataclass
class Prediction:
    label: str
    task: str
    scores: dict[str, float]
    """Softmax over every class the set knows (the named task's classes, if the request names one), the top
    ones only."""


class Predictor:
    def __init__(self, model: AnyModel, version: str | None = None, set_id: str | None = None):
        model.merge(unwrap=True)  # what can be merged: a set whose delta depends on the task merges nothing
        model.eval()
        self.model, self.version, self.set_id = model, version, set_id
        self.task_of_class = model.introduced_by()
        # One request at a time per set: a fast tokenizer used from two threads at once raises "Already borrowed".
        self._lock = threading.Lock()

    @classmethod
    def from_registry(cls, conn: Connection, version: str | None = None) -> Predictor:
        """The set under `current` (or `version`); raises LineageError if there is none."""
        from pipeline.registry.bucket import Bucket
        from pipeline.registry.current import load_current
        from pipeline.registry.lineage import Lineage, LineageError
        from pipeline.registry.store import Registry

        # A cache of this process's own: several replicas fetching into one directory could interleave files.
        registry = Registry(
            Bucket.connect(conn), Lineage(conn), conn.cache_dir / "predict" / str(os.getpid())
        )
        found = load_current(registry, version)
        if found.model is None:
            raise LineageError(
                f"no adapter set is `current` in stream {conn.stream!r} yet: train and register a task first "
                "(another stream: --stream NAME; `litelora status` lists them)"
            )
        return cls(found.model, found.version, found.set_id)

    @property
    def reads_images(self) -> bool:
        return self.model.config.backbone.reads_images

    @property
    def needs_task(self) -> bool:
        """Whether a prediction must name its task (a Share set)."""
        return self.model.method.selects_by_task

    def task_index(self, task: str | None) -> int | None:
        """The stored task a request names (the latest of that name), None if it names none."""
        names = ", ".join(t.name for t in self.model.tasks)
        if task is None:
            if self.needs_task:
                raise BadRequest(
                    f'v{self.version} runs Share, which keeps a delta per task: name the task ("task": "<name>" '
                    f"in the request, --task on the command line), one of {names}"
                )
            return None
        try:
            return task_named(self.model.tasks, task)
        except KeyError:
            raise BadRequest(f"no task {task!r} in v{self.version}; its tasks: {names}") from None

    def predict_all(
        self, inputs: list[str] | list[bytes], top: int = 5, task: str | None = None
    ) -> list[Prediction]:
        """`predict` for any number of inputs, `MAX_BATCH` at a time."""
        return [
            p
            for start in range(0, len(inputs), MAX_BATCH)
            for p in self.predict(inputs[start : start + MAX_BATCH], top, task)
        ]

    def check(self, inputs: list[str] | list[bytes]) -> None:
        """Refuse what this set cannot read: texts for a text backbone, PNG/JPEG bytes within the drop limits for
        a vision one."""
        kind, wanted = ("images", bytes) if self.reads_images else ("text", str)
        for value in inputs:
            if not isinstance(value, wanted):
                raise BadRequest(
                    f"inputs must be {kind} (got {type(value).__name__}); this set's backbone reads {kind}"
                )
            if wanted is str and len(value) > MAX_TEXT_CHARS:
                raise BadRequest(f"an input of {len(value)} characters; at most {MAX_TEXT_CHARS}")
            if wanted is bytes:
                problem = image_problem(value, IMAGE_LIMITS.max_image_pixels, decode=False)
                if len(value) > IMAGE_LIMITS.max_image_bytes or problem:
                    raise BadRequest(f"an image that {problem or 'is over the size limit'}")

    @torch.no_grad()
    def predict(
        self, inputs: list[str] | list[bytes], top: int = 5, task: str | None = None
    ) -> list[Prediction]:
        """Texts, or encoded images for a set on a vision backbone; `task` limits the answer to that task's classes
        (a Share set needs it)."""
        if not inputs:
            raise BadRequest("no input: give at least one " + ("image" if self.reads_images else "text"))
        if top < 1:
            raise BadRequest(f"top must be >= 1 (got {top})")
        if len(inputs) > MAX_BATCH:
            raise BadRequest(f"{len(inputs)} inputs in one request; at most {MAX_BATCH}")
        self.check(inputs)
        j = self.task_index(task)
        from pipeline.learn.evaluate import predict_logits

        with self._lock:
            try:
                if self.needs_task:
                    logits = self.model.task_logits(inputs, j)
                else:
                    logits = predict_logits(self.model, inputs)
                    if j is not None:
                        logits = logits[:, self.model.class_index(self.model.tasks[j].classes)]
            except (OSError, SyntaxError) as error:  # a sound header over data that does not decode
                raise BadRequest(f"an image that does not decode: {error}") from None
        probs = logits.softmax(-1)
        classes = self.model.classes if j is None else self.model.tasks[j].classes
        owners = self.task_of_class if j is None else [self.model.tasks[j].name] * len(classes)
        out = []
        for row in probs:
            best = row.topk(min(top, row.numel()))
            out.append(
                Prediction(
                    classes[int(best.indices[0])],
                    owners[int(best.indices[0])],
                    {classes[int(i)]: round(float(p), 6) for p, i in zip(best.values, best.indices)},
                )
            )
        return out
