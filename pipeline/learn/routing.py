"""Routed recruits (`TrainConfig.recruit_space = "routed"`): an adapter the gate recruits acts only on the rows
routed to it, so it never moves the features of the classes that came before it.

    expert   a path of kept adapters: [] (the bare encoder), or its parent's path plus the adapter a recruit kept
    router   a ridge head over the bare encoder's features of every class seen; a row goes to the expert that owns
             the class the router predicts (running sums, never examples)
    heads    one ridge head per expert, over its own classes' rows under that expert

A task trains its new adapter on top of its parent, the expert most of its rows are routed to (the bare encoder
for the first task). A recruit makes parent + adapter a new expert that owns the task's classes; a reuse gives them
to the parent. An expert never changes once made (only the task's own magnitude trains), so the classes it owns
keep their features exactly and there is no drift to compensate: what a recruit can cost an earlier class is only
its rows routed to the wrong expert. Scoring a row costs two forward passes: the bare encoder's, to route it, and
its expert's. docs/method.md §4 has the measurements.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from pipeline.learn.adapted_features import RowFeatures
from pipeline.learn.no_regret import Weighing
from pipeline.learn.ridge import LAMBDAS, RidgeHead, solve
from pipeline.learn.shard_sums import summed
from pipeline.learn.task import Task
from pipeline.learn.training_rows import TrainingRows

BARE = 0
"""The expert with no adapter: the pretrained encoder as it ships."""


@dataclass
class Routes:
    experts: list[list[int]]
    """Per expert, the kept adapters (their storage index) it applies; expert `BARE` applies none."""
    class_expert: list[int]
    """Per class (global order), the expert that owns it."""
    task_expert: list[int]
    """Per closed task, the expert that owns its classes."""
    router: RidgeHead
    heads: list[RidgeHead]
    parent: int | None = None
    """While a task trains: the expert its new adapter is trained on top of."""
    forced: int | None = field(default=None, repr=False)
    """In eval: send every row to this expert instead of routing (fitting a task's own rows)."""
    candidate: bool = field(default=True, repr=False)
    """Whether the adapter being trained acts on its parent's rows (off: what a reuse would give them)."""

    @classmethod
    def start(cls, dim: int, seed: int) -> Routes:
        return cls([[]], [], [], RidgeHead(dim, seed), [RidgeHead(dim, seed)])

    # -- forward -----------------------------------------------------------------------------------
    def features(self, model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Training: the features under the open task's parent and its new adapter. Eval: [under each row's
        expert | under the bare encoder], so that scoring can route again without another pass."""
        rows = next(iter(batch.values())).shape[0]
        device = next(iter(batch.values())).device
        if model.training:
            experts = torch.full((rows,), self.parent, dtype=torch.long, device=device)
            with model.adapters.masked(self.mask(experts, model.adapters.num_frozen)):
                return model.encoder.features(**batch)
        with model.adapters.masked(torch.zeros(rows, model.adapters.num_frozen + 1, device=device)):
            bare = model.encoder.features(**batch)
        experts = (
            torch.full((rows,), self.forced, dtype=torch.long, device=device)
            if self.forced is not None
            else self.route(bare).to(device)
        )
        with model.adapters.masked(self.mask(experts, model.adapters.num_frozen)):
            routed = model.encoder.features(**batch)
        return torch.cat([routed, bare], dim=1)

    def mask(self, experts: torch.Tensor, kept: int) -> torch.Tensor:
        """[rows, kept + 1]: 1 for each adapter on the path of each row's expert; the last column, the adapter
        being trained, for rows of the open task's parent."""
        table = torch.zeros(len(self.experts), kept + 1, device=experts.device)
        for e, path in enumerate(self.experts):
            table[e, path] = 1.0
        if self.parent is not None and self.candidate:
            table[self.parent, kept] = 1.0
        return table[experts]

    def route(self, bare: torch.Tensor) -> torch.Tensor:
        """Each row's expert: the owner of the class the router scores highest (`BARE` before any class)."""
        if not self.class_expert:
            return torch.full((bare.shape[0],), BARE, dtype=torch.long)
        owner = torch.tensor(self.class_expert, dtype=torch.long)
        return owner[self.router.scores(bare.float().cpu()).argmax(1)]

    def scores(self, features: torch.Tensor) -> torch.Tensor:
        """Scores over every class for eval features ([routed | bare]): each row's expert's head over the classes
        it owns; every other class scores below any of them."""
        routed, bare = features.float().cpu().chunk(2, dim=1)
        experts, owner = self.route(bare), torch.tensor(self.class_expert, dtype=torch.long)
        out = torch.full((len(features), len(owner)), -1e4)
        for e in experts.unique().tolist():
            rows, owned = experts == e, owner == e
            head = self.heads[e].scores(routed[rows])
            out[rows.nonzero(), owned.nonzero().T] = head[:, owned[: head.shape[1]]].float()
        return out

    # -- task lifecycle ----------------------------------------------------------------------------
    def open(self, rows: RowFeatures) -> int:
        """Choose the parent of the task with these rows' eval features: the expert most of them route to (over
        every rank's rows, so that every rank trains on top of the same one)."""
        votes = torch.bincount(self.route(rows.features.chunk(2, dim=1)[1]), minlength=len(self.experts))
        self.parent = int(summed([votes], rows.shard)[0].argmax())
        return self.parent

    def close(self, recruited: int | None) -> int:
        """End the open task: a recruit (`recruited`: its kept adapter's index) becomes a new expert on top of the
        parent; a reuse leaves the task's classes to the parent. Returns the task's expert."""
        expert = self.parent
        if recruited is not None:
            self.experts.append([*self.experts[expert], recruited])
            self.heads.append(RidgeHead(self.router.dim, self.router.seed))
            expert = len(self.experts) - 1
        self.task_expert.append(expert)
        self.parent = None
        return expert

    @contextlib.contextmanager
    def forcing(self, expert: int, candidate: bool = True) -> Iterator[None]:
        self.forced, self.candidate = expert, candidate
        try:
            yield
        finally:
            self.forced, self.candidate = None, True

    def add(
        self, features: torch.Tensor, labels: torch.Tensor, num_classes: int, held: torch.Tensor, shard: bool
    ) -> None:
        """Fold the latest task's rows (eval features under its own expert, global labels) into its expert's
        head and into the router (`shard`: these are this rank's share; the sums are added over the ranks)."""
        expert = self.task_expert[-1]
        for c in labels.unique().tolist():
            if c < len(self.class_expert) and self.class_expert[c] != expert:
                raise ValueError(
                    "a routed set keeps each class with one expert: this task brings a class another expert owns"
                )
        self.class_expert += [expert] * (num_classes - len(self.class_expert))
        routed, bare = features.float().chunk(2, dim=1)
        self.router.add(bare, labels, num_classes, held, shard)
        self.router.fit()
        self.heads[expert].add(routed, labels, num_classes, held, shard)
        self.heads[expert].fit()

    # -- storage -----------------------------------------------------------------------------------
    def manifest(self) -> dict:
        return {"experts": self.experts, "class_expert": self.class_expert, "task_expert": self.task_expert}

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {f"router.{k}": v for k, v in self.router.tensors().items()}
        for e, head in enumerate(self.heads):
            if head.num_classes:
                out |= {f"expert{e}.{k}": v for k, v in head.tensors().items()}
        return out

    @classmethod
    def load(cls, entry: dict, tensors: dict[str, torch.Tensor], dim: int, seed: int) -> Routes:
        def head(prefix: str) -> RidgeHead:
            part = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
            return RidgeHead.from_tensors(part) if part else RidgeHead(dim, seed)

        experts = [list(path) for path in entry["experts"]]
        return cls(
            experts,
            list(entry["class_expert"]),
            list(entry["task_expert"]),
            head("router."),
            [head(f"expert{e}.") for e in range(len(experts))],
        )


def weigh_routed_recruit(model, task: Task, rows: TrainingRows) -> Weighing:
    """The no-regret rule for a routed recruit, on the open task's own held-out fifth (by content hash): what the
    recruit gains on the task against what it costs the classes before it.

    gain  held rows right under parent + new adapter, minus under the parent alone (a ridge head over the task's
          classes, fitted on its other rows, each way)
    cost  held rows the router, with the task's classes added, sends to a class the parent owns: as a new
          expert the task would lose them; and about as many of the parent's rows would go the other way
          (confusion between two groups of classes is about symmetric), so twice that count
    Both are counted over every rank's rows. A reuse loses neither."""
    routes = model.routes
    with routes.forcing(routes.parent, candidate=True):
        recruit = rows.features(model)
    with routes.forcing(routes.parent, candidate=False):
        reuse = rows.features(model)
    held, labels = recruit.ridge_held, recruit.labels
    classes = len(task.classes)
    right = [
        _held_right(model, f.features.chunk(2, dim=1)[0], labels, classes, held, f.shard)
        for f in (recruit, reuse)
    ]
    router = copy.deepcopy(routes.router)
    first = len(routes.class_expert)  # the task's new classes get the next indices
    global_labels = first + labels
    router.add(recruit.features.chunk(2, dim=1)[1], global_labels, first + classes, held, recruit.shard)
    router.fit()
    predicted = router.scores(recruit.features.chunk(2, dim=1)[1][held].float()).argmax(1)
    owner = torch.tensor(routes.class_expert + [-1] * (router.num_classes - first), dtype=torch.long)
    confused = (owner[predicted] == routes.parent).sum()
    right_recruit, right_reuse, confused, n = summed(
        [right[0], right[1], confused.double(), held.sum().double()], recruit.shard
    )
    n = max(float(n), 1.0)
    return Weighing(recruit=float(right_recruit - 2 * confused) / n, reuse=float(right_reuse) / n)


def _held_right(
    model, features: torch.Tensor, labels: torch.Tensor, classes: int, held: torch.Tensor, shard: bool
) -> torch.Tensor:
    """How many held rows a ridge head over the task's classes, fitted on the other rows, gets right."""
    head = RidgeHead(model.config.ridge_dim, model.config.seed)
    head.add(features, labels, classes, held, shard)
    lam = min(LAMBDAS, key=head.validation_error)
    weight = solve(head.fit_rows.gram, head.fit_rows.sums.T, lam)
    predicted = (head.features(features[held]) @ weight).argmax(1)
    return (predicted == labels[held]).sum().double()
