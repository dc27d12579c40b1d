"""Per-class feature statistics that stand in for old training examples: a mean and a low-rank covariance.

They let a set score classes by their mean (prototype head) and re-fit every head on features sampled from
the classes' Gaussians (aligned head) without keeping a single example. The covariance is probabilistic PCA,
Σ ≈ F Fᵀ + σ² I with F = V_k diag(√(λ_k − σ²)), so a class costs d·(k+1) + 2 numbers instead of d².

When a later task changes the adapted features (new adapters, re-learned magnitudes), the stored means
follow the drift measured on that task's own data: each old mean moves by the average displacement of the
new task's features, weighted by their closeness to it (semantic drift compensation, Yu et al., CVPR 2020), or,
with `drift="linear"`, means and covariance factors move along one affine map fitted on those rows (drift_map.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

import torch

from pipeline.learn.drift_map import CHUNK_ROWS, fit_drift_map
from pipeline.learn.shard_sums import differs_anywhere, kth_smallest, maxed, spread, summed

DriftCompensation = Literal["means", "linear"]
"""How stored statistics follow a later task's feature drift: each class mean by nearby rows' displacement, or
everything (means and covariance factors) by one affine map of the features (drift_map.py)."""
DRIFT_COMPENSATIONS: tuple[str, ...] = ("means", "linear")
CLASSES_PER_REDUCE = 16
"""Classes whose D × D moments one all-reduce carries (768-wide features: 75 MB in float64)."""
DRIFT_WIDTH = 0.1
"""Kernel width as a fraction of the median squared distance from a mean to the new task's features. Narrow
(nearly the nearest features' drift) beat wide on Split-WordNet-20: 0.1 → A 71.9, 1.0 → 69.0, a plain average
of all drifts → 66 (aligned head, litelora, ordering 1995)."""


@dataclass
class ClassStatistics:
    means: torch.Tensor  # [C, d]
    factors: torch.Tensor  # [C, d, k]
    noise: torch.Tensor  # [C] residual variance σ²
    counts: torch.Tensor  # [C] examples each class was estimated from

    @classmethod
    def empty(cls, dim: int, rank: int) -> ClassStatistics:
        return cls(
            torch.zeros(0, dim), torch.zeros(0, dim, rank), torch.zeros(0), torch.zeros(0, dtype=torch.long)
        )

    @property
    def num_classes(self) -> int:
        return self.means.shape[0]

    @property
    def rank(self) -> int:
        return self.factors.shape[2]

    def add_classes(self, features: torch.Tensor, labels: torch.Tensor, num_classes: int) -> None:
        """Append the statistics of classes 0..num_classes-1 of one task (labels are task-local)."""
        self.add_rows(features, labels + self.num_classes, self.num_classes + num_classes)

    def add_rows(
        self, features: torch.Tensor, labels: torch.Tensor, num_classes: int, shard: bool = False
    ) -> None:
        """Absorb rows of global classes `labels`: a known class's statistics are pooled with the new rows (exact
        counts, means and covariance up to its rank-k approximation), classes up to `num_classes` are appended.
        `shard`: the rows are this rank's share, and each class's moments are those of every rank's rows."""
        means, factors, noise, counts = [], [], [], []
        for c, moments in class_moments(features.double(), labels, num_classes, shard):
            known = c < self.num_classes
            if moments is None:
                if known:
                    continue
                raise ValueError(f"class {c} has no examples to estimate its statistics from")
            mean, cov, n = moments
            if known:  # pool with what the class had: the law of total covariance over the two groups
                n0, m0 = int(self.counts[c]), self.means[c].double()
                f0 = self.factors[c].double()
                c0 = f0 @ f0.T + self.noise[c].double() * torch.eye(len(m0), dtype=torch.float64)
                total = n0 + n
                gap = (m0 - mean)[:, None]
                cov = (n0 * c0 + n * cov) / total + (n0 * n / total**2) * (gap @ gap.T)
                mean, n = (n0 * m0 + n * mean) / total, total
            factor, sigma2 = _ppca(cov, self.rank)
            if known:
                self.means[c], self.factors[c], self.noise[c], self.counts[c] = (
                    mean.float(),
                    factor.float(),
                    sigma2,
                    n,
                )
                continue
            means.append(mean)
            factors.append(factor)
            noise.append(sigma2)
            counts.append(n)
        if means:
            self.means = torch.cat([self.means, torch.stack(means).float()])
            self.factors = torch.cat([self.factors, torch.stack(factors).float()])
            self.noise = torch.cat([self.noise, torch.stack(noise).float()])
            self.counts = torch.cat([self.counts, torch.tensor(counts)])

    def compensate_drift(
        self, before: torch.Tensor, after: torch.Tensor, how: DriftCompensation = "means", shard: bool = False
    ) -> None:
        """Move every stored mean by the drift of nearby features (`means`), or move means and covariances by
        one affine map x → xA + b (`linear`): `before`/`after` are the same inputs' features before and after a
        task was trained (`shard`: this rank's share of them)."""
        if self.num_classes == 0:
            return
        if how != "linear":
            self.means = drift_of_means(self.means, before, after, shard=shard).float()
            return
        if not differs_anywhere(before, after, shard):
            return
        drift = fit_drift_map(before, after, shard=shard)
        a = drift.linear
        self.means = drift.apply(self.means).float()
        # Σ' = Aᵀ(FFᵀ + σ²I)A: the factors move exactly; σ²AᵀA is kept isotropic with the same trace (the
        # nearest isotropic matrix), which costs no d × d matrix per class.
        self.factors = torch.einsum("de,cdk->cek", a, self.factors.double()).float()
        self.noise = (self.noise.double() * a.square().sum() / a.shape[0]).float()

    def sample(self, per_class: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """`per_class` draws from every class's Gaussian, and their global class indices."""
        c, d, k = self.factors.shape
        z = torch.randn(c, per_class, k, generator=generator)
        e = torch.randn(c, per_class, d, generator=generator)
        x = (
            self.means[:, None]
            + torch.einsum("cdk,cnk->cnd", self.factors, z)
            + self.noise.sqrt()[:, None, None] * e
        )
        return x.reshape(c * per_class, d), torch.arange(c).repeat_interleave(per_class)

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"means": self.means, "factors": self.factors, "noise": self.noise, "counts": self.counts}

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor]) -> ClassStatistics:
        """Statistics from stored tensors; a set that kept only means gets no covariance (rank 0)."""
        means = tensors["means"]
        factors = tensors.get("factors", torch.zeros(means.shape[0], means.shape[1], 0))
        return cls(means, factors, tensors.get("noise", torch.zeros(means.shape[0])), tensors["counts"])


def class_moments(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, shard: bool
) -> Iterator[tuple[int, tuple[torch.Tensor, torch.Tensor, int] | None]]:
    """Each class c < `num_classes` with its (mean, covariance, count), None when it has no rows; with `shard`,
    over every rank's rows, each rank's centred moments combined as in a parallel variance (Chan, Golub & LeVeque,
    1979): Σ_r [n_r C_r + n_r (μ_r − μ)(μ_r − μ)ᵀ] / n. Classes' D × D matrices travel, never a row, a few classes
    at a time."""
    if not spread(shard):
        for c in range(num_classes):
            x = features[labels == c]
            yield c, (x.mean(0), _covariance(x), len(x)) if len(x) else None
        return
    (counts,) = summed([torch.bincount(labels.cpu(), minlength=num_classes)], shard)
    for first in range(0, num_classes, CLASSES_PER_REDUCE):
        group = range(first, min(first + CLASSES_PER_REDUCE, num_classes))
        present = [c for c in group if counts[c] > 0]  # the same on every rank: the counts are reduced
        moments = _combined_moments(features, labels, present, counts, shard) if present else {}
        yield from ((c, moments.get(c)) for c in group)


def _combined_moments(
    features: torch.Tensor, labels: torch.Tensor, classes: list[int], counts: torch.Tensor, shard: bool
) -> dict[int, tuple[torch.Tensor, torch.Tensor, int]]:
    local = [features[labels == c] for c in classes]
    n = torch.tensor([float(len(x)) for x in local], dtype=torch.float64)
    local_means = torch.stack([x.mean(0) if len(x) else features.new_zeros(features.shape[1]) for x in local])
    (totals,) = summed([n[:, None] * local_means], shard)
    means = totals / counts[classes][:, None]
    gaps = local_means - means
    spreads = torch.stack([len(x) * _covariance(x) for x in local]) + n[:, None, None] * (
        gaps[:, :, None] * gaps[:, None, :]
    )
    (m2,) = summed([spreads], shard)
    return {c: (means[i], m2[i] / counts[c], int(counts[c])) for i, c in enumerate(classes)}


def _covariance(x: torch.Tensor) -> torch.Tensor:
    d = x.shape[1]
    return torch.cov(x.T, correction=0).reshape(d, d) if len(x) > 1 else torch.zeros(d, d, dtype=x.dtype)


def _ppca(cov: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilistic PCA of a covariance: (factors [d, k], residual variance σ²), cov ≈ F Fᵀ + σ² I."""
    eigvals, eigvecs = torch.linalg.eigh(cov)  # ascending
    eigvals, eigvecs = eigvals.clamp_min(0).flip(0), eigvecs.flip(1)
    sigma2 = eigvals[k:].mean() if k < len(eigvals) else eigvals.new_zeros(())
    return eigvecs[:, :k] * (eigvals[:k] - sigma2).clamp_min(0).sqrt(), sigma2


def drift_of_means(
    means: torch.Tensor,
    before: torch.Tensor,
    after: torch.Tensor,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    shard: bool = False,
) -> torch.Tensor:
    """`means` moved by the kernel-weighted displacement `before` → `after` of nearby rows (float64). `transform`
    maps the rows first (the ridge head's φ); rows are converted `CHUNK_ROWS` at a time, so a large task's
    features are never held twice over in float64. `shard`: the rows are this rank's share; the median, the
    softmax's normaliser and the moved sums are taken over every rank's rows (shard_sums.py)."""
    transform = transform or (lambda x: x.double())
    means, chunks = means.double(), range(0, len(before), CHUNK_ROWS)
    d2 = torch.cat(
        [means.new_zeros(len(means), 0)]
        + [torch.cdist(means, transform(before[i : i + CHUNK_ROWS])).square() for i in chunks],
        dim=1,
    )  # [C, n]
    # The width scales with the typical distance from each mean to the new task's features, so the weights
    # neither vanish nor flatten whatever the feature scale.
    (total,) = summed([torch.tensor(float(d2.shape[1]))], shard)
    median = kth_smallest(d2, (int(total) - 1) // 2, shard)  # torch.median's: the lower of two middle values
    logits = -d2 / (DRIFT_WIDTH * median.clamp_min(1e-12))[:, None]
    top = maxed(logits.max(dim=1).values if d2.shape[1] else torch.full((len(means),), -torch.inf), shard)
    weights = (logits - top[:, None]).exp()
    weights = weights / summed([weights.sum(1)], shard)[0][:, None]  # a softmax over every rank's rows
    moved = means.new_zeros(means.shape)
    for i in chunks:
        rows = slice(i, i + CHUNK_ROWS)
        moved += weights[:, rows] @ (transform(after[rows]) - transform(before[rows]))
    return means + summed([moved], shard)[0]
