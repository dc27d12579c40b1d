"""The ridge head: ridge regression from features to one-hot labels over every class seen (after RanPAC,
McDonnell et al., NeurIPS 2023).

    φ(h) = ĥ = h/‖h‖            or, with `dim` = M > 0, ReLU(P ĥ), P ∈ R^{M×d} ~ N(0, 1) drawn from a stored seed
    G = Σ φφᵀ,  Q = Σ φ yᵀ      running sums over the training rows (never the rows themselves)
    W = (G + λI)⁻¹ Q            scores = φ(h) W

Sums make the head exact and blind to task order while the features stay fixed, and let it absorb more rows
of a class it already knows. λ is chosen on held-out rows: a fifth of every task's training rows, picked by a
hash of the row's content, feed separate sums (G_v, Q_v, n_v), and the mean squared error of any W on them is
tr(Wᵀ G_v W) − 2 tr(Wᵀ Q_v) + n_v, so λ is chosen over every task's held-out rows without keeping one.
The final W is solved on all rows.

When a later task changes the features, each earlier class's mean moves along the drift measured on that
task's own rows (semantic drift compensation, as for the class statistics) and the sums follow exactly:
G += n (μ'μ'ᵀ − μμᵀ), Q = n μ'. Only the spread around each mean stays as it was measured. With
`drift="linear"` the whole second moment moves instead, along one affine map φ → φA + b fitted on the task's rows
(drift_map.py): G ← AᵀGA + …, Σφ ← (Σφ)A + n b, exact whenever the drift is. docs/method.md has the
measurements behind these choices.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.learn.class_stats import CHUNK_ROWS, DriftCompensation, drift_of_means
from pipeline.learn.drift_map import fit_drift_map
from pipeline.learn.shard_sums import differs_anywhere, summed
from pipeline.learn.task import input_hashes

LAMBDAS: tuple[float, ...] = tuple(10.0 ** (e / 2) for e in range(-6, 13))
"""λ is chosen from 1e-3 … 1e6, half a decade apart."""
HELD_OUT_ONE_IN = 5
"""One training row in five (by content hash) goes to the sums λ is chosen on."""


def held_out(inputs: list) -> torch.Tensor:
    """Which rows choose λ: decided by each row's own bytes, so the same rows on every rank, in any order."""
    return torch.from_numpy(input_hashes(inputs) % np.uint64(HELD_OUT_ONE_IN) == 0)


@dataclass
class RidgeSums:
    """Σ φφᵀ and, per class, Σ φ and the row count, over one set of rows."""

    gram: torch.Tensor  # [D, D] float64
    sums: torch.Tensor  # [C, D] float64: row c is Σ φ over class c (a column of Q)
    counts: torch.Tensor  # [C] float64

    @classmethod
    def empty(cls, dim: int, num_classes: int = 0) -> RidgeSums:
        return cls(
            torch.zeros(dim, dim, dtype=torch.float64),
            torch.zeros(num_classes, dim, dtype=torch.float64),
            torch.zeros(num_classes, dtype=torch.float64),
        )

    def add(self, phi: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
        extra = num_classes - len(self.counts)
        self.sums = F.pad(self.sums, (0, 0, 0, extra))
        self.counts = F.pad(self.counts, (0, extra))
        self.gram += phi.T @ phi
        self.sums.index_add_(0, labels, phi)
        self.counts.index_add_(0, labels, torch.ones(len(labels), dtype=torch.float64))

    def add_sums(self, other: RidgeSums) -> None:
        """Absorb another set of rows' sums (other ranks', or a chunk's)."""
        extra = len(other.counts) - len(self.counts)
        self.sums, self.counts = F.pad(self.sums, (0, 0, 0, extra)), F.pad(self.counts, (0, extra))
        self.gram += other.gram
        self.sums += other.sums
        self.counts += other.counts

    def means(self) -> torch.Tensor:
        return self.sums / self.counts.clamp_min(1)[:, None]

    def move_means(self, new_means: torch.Tensor) -> None:
        """Shift every class's rows by the same displacement: G and Q follow exactly."""
        old = self.means()
        n = self.counts[:, None]
        self.gram += (new_means * n).T @ new_means - (old * n).T @ old
        self.sums = new_means * n


@dataclass
class RidgeHead:
    dim: int = 0
    """M random features (0: the normalised features themselves)."""
    seed: int = 0
    fit_rows: RidgeSums | None = None
    held_rows: RidgeSums | None = None
    lam: float = 1.0
    weight: torch.Tensor | None = None
    """[C, D] float32, what scoring uses (solved by `fit`)."""
    _projection: torch.Tensor | None = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        return 0 if self.fit_rows is None else len(self.fit_rows.counts)

    def features(self, h: torch.Tensor) -> torch.Tensor:
        """φ(h) in float64 on the CPU."""
        h = F.normalize(h.detach().double().cpu(), dim=-1)
        if not self.dim:
            return h
        if self._projection is None:
            generator = torch.Generator().manual_seed(self.seed)
            self._projection = torch.randn(self.dim, h.shape[-1], generator=generator, dtype=torch.float64)
        return F.relu(h @ self._projection.T)

    def add(
        self, h: torch.Tensor, labels: torch.Tensor, num_classes: int, held: torch.Tensor, shard: bool = False
    ) -> None:
        """Absorb rows `h` of global classes `labels`; `held` marks the rows that choose λ (see `held_out`).
        A chunk of rows at a time: φ is float64, twice the size of the features. `shard`: the rows are this
        rank's share; the sums of every rank's rows are added (one all-reduce: shard_sums.py)."""
        labels = labels.long().cpu()
        dim = self.dim or h.shape[-1]
        if self.fit_rows is None:
            self.fit_rows, self.held_rows = RidgeSums.empty(dim), RidgeSums.empty(dim)
        # Every class on every rank, whichever classes its rows hold: the ranks' sums line up.
        fit, held_rows = RidgeSums.empty(dim, num_classes), RidgeSums.empty(dim, num_classes)
        for i in range(0, len(h), CHUNK_ROWS):
            phi, y, kept = (
                self.features(h[i : i + CHUNK_ROWS]),
                labels[i : i + CHUNK_ROWS],
                held[i : i + CHUNK_ROWS],
            )
            fit.add(phi[~kept], y[~kept], num_classes)
            held_rows.add(phi[kept], y[kept], num_classes)
        tensors = summed([s for rows in (fit, held_rows) for s in (rows.gram, rows.sums, rows.counts)], shard)
        self.fit_rows.add_sums(RidgeSums(*tensors[:3]))
        self.held_rows.add_sums(RidgeSums(*tensors[3:]))

    def compensate_drift(
        self, before: torch.Tensor, after: torch.Tensor, how: DriftCompensation = "means", shard: bool = False
    ) -> None:
        """Move the sums along the drift of the same rows' features `before` → `after` a task: every class mean
        (`means`), or every row by one affine map (`linear`; the held-out sums too, so λ is still chosen on
        rows as the model now sees them). `shard`: the rows are this rank's share."""
        # A task that changed nothing moves nothing (on any rank: every rank must join the same reductions).
        if not self.num_classes or not differs_anywhere(before, after, shard):
            return
        if how == "linear":
            drift = fit_drift_map(before, after, self.features, shard)
            for rows in (self.fit_rows, self.held_rows):
                rows.gram, rows.sums = drift.move_moments(rows.gram, rows.sums, rows.counts)
            return
        for rows in (self.fit_rows, self.held_rows):
            rows.move_means(drift_of_means(rows.means(), before, after, self.features, shard))

    def validation_error(self, lam: float) -> float:
        """Mean squared error on the held-out rows of W fitted on the other rows with this λ."""
        w = solve(self.fit_rows.gram, self.fit_rows.sums.T, lam)
        held = self.held_rows
        n = float(held.counts.sum())
        # tr(WᵀGW) and tr(WᵀQ) as sums of products: never the C × C matrices behind the traces.
        fitted = float(((held.gram @ w) * w).sum())
        return float((fitted - 2 * float((w * held.sums.T).sum())) / max(n, 1.0)) + 1

    def fit(self, lambdas: tuple[float, ...] = LAMBDAS) -> None:
        """Choose λ on the held-out rows (when there are any), then solve W on every row."""
        if float(self.held_rows.counts.sum()) > 0:
            self.lam = min(lambdas, key=self.validation_error)
        gram = self.fit_rows.gram + self.held_rows.gram
        w = solve(gram, (self.fit_rows.sums + self.held_rows.sums).T, self.lam)
        self.weight = w.T.float().contiguous()

    def scores(self, h: torch.Tensor) -> torch.Tensor:
        return (self.features(h) @ self.weight.double().T).float().to(h.device)

    # -- storage -----------------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        """The sums (G as its upper triangle, float64, so a lineage continued elsewhere solves the same W)."""
        upper = torch.triu_indices(*self.fit_rows.gram.shape)
        out = {
            "weight": self.weight,
            "config": torch.tensor([self.dim, self.seed], dtype=torch.int64),
            "lambda": torch.tensor([self.lam], dtype=torch.float64),
        }
        for name, rows in (("fit", self.fit_rows), ("held", self.held_rows)):
            out |= {
                f"{name}.gram": rows.gram[upper[0], upper[1]],
                f"{name}.sums": rows.sums,
                f"{name}.counts": rows.counts,
            }
        return out

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> RidgeHead:
        dim, seed = (int(v) for v in t["config"])
        rows = {}
        for name in ("fit", "held"):
            d = t[f"{name}.sums"].shape[1]
            gram = torch.zeros(d, d, dtype=torch.float64)
            i, j = torch.triu_indices(d, d)
            gram[i, j] = gram[j, i] = t[f"{name}.gram"].double()
            rows[name] = RidgeSums(gram, t[f"{name}.sums"].double(), t[f"{name}.counts"].double())
        return cls(dim, seed, rows["fit"], rows["held"], float(t["lambda"][0]), t["weight"])


def solve(gram: torch.Tensor, moments: torch.Tensor, lam: float) -> torch.Tensor:
    """(G + λI)⁻¹ Q by a Cholesky solve (G + λI is symmetric positive definite)."""
    a = gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype)
    return torch.cholesky_solve(moments, torch.linalg.cholesky(a))
