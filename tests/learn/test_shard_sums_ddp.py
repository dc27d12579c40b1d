"""Under Ray Train each worker holds only its shard of a task's rows: the heads' statistics are summed on each rank
and combined by all-reduce. They must equal what one process fits from every row (as when the ranks gathered every
row's features), and nothing that travels between the ranks may grow with the rows (two gloo processes on the
CPU, as Ray Train runs them)."""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from pipeline.learn.class_stats import ClassStatistics
from pipeline.learn.head_options import calibration_of
from pipeline.learn.ridge import RidgeHead

D, CLASSES, EARLIER = 6, 3, 2
COLLECTIVES = (
    "all_reduce",
    "all_gather",
    "all_gather_into_tensor",
    "all_gather_object",
    "all_to_all",
    "all_to_all_single",
    "broadcast",
    "gather",
    "scatter",
    "reduce",
    "reduce_scatter",
    "send",
    "isend",
)


def _task(rows: int):
    """A task of `rows` rows per rank, twice over (two ranks): features before and after it trained (moved by
    an affine map plus noise), task-local labels, and the ridge head's λ rows."""
    g = torch.Generator().manual_seed(rows)
    labels = torch.arange(CLASSES).repeat(2 * rows)[: 2 * rows]
    before = torch.randn(CLASSES, D, generator=g)[labels] * 2 + torch.randn(2 * rows, D, generator=g)
    shift = torch.eye(D) + 0.1 * torch.randn(D, D, generator=g)
    after = before @ shift + 0.3 + 0.05 * torch.randn(2 * rows, D, generator=g)
    held = torch.rand(2 * rows, generator=g) < 0.2
    return before.float(), after.float(), labels, held


def _earlier():
    """The heads' state after an earlier task (its own rows, in one process): something for drift to move."""
    g = torch.Generator().manual_seed(99)
    labels = torch.arange(EARLIER).repeat(20)
    features = torch.randn(EARLIER, D, generator=g)[labels] * 2 + torch.randn(len(labels), D, generator=g)
    ridge, stats = RidgeHead(), ClassStatistics.empty(D, rank=2)
    ridge.add(features, labels, EARLIER, torch.arange(len(labels)) % 5 == 0)
    stats.add_rows(features, labels, EARLIER)
    return ridge, stats


def _fit(before, after, labels, held, drift: str, shard: bool) -> dict[str, torch.Tensor]:
    """What head_options.fit_heads does with a task's rows: drift, then the new rows, for the ridge head, the class
    statistics and a calibration."""
    ridge, stats = _earlier()
    classes = EARLIER + CLASSES
    ridge.compensate_drift(before, after, drift, shard)
    ridge.add(after, labels + EARLIER, classes, held, shard)
    ridge.fit()
    stats.compensate_drift(before, after, drift, shard)
    stats.add_rows(after, labels + EARLIER, classes, shard)
    torch.manual_seed(0)
    head = torch.nn.Linear(D, CLASSES)
    factors = stats.factors.double()
    return {
        **{f"ridge.{k}": v.contiguous() for k, v in ridge.tensors().items()},
        "stats.means": stats.means,
        "stats.covariance": factors @ factors.transpose(1, 2),  # eigenvector signs are arbitrary: F Fᵀ is not
        "stats.noise": stats.noise,
        "stats.counts": stats.counts,
        "calibration": calibration_of(head, after, shard),
    }


def _record_collectives() -> list[tuple[str, int]]:
    """Every collective this process calls from now on: its name and how many numbers it sends."""
    sent: list[tuple[str, int]] = []
    for name in COLLECTIVES:
        original = getattr(dist, name)

        def recorded(tensor, *args, _name=name, _original=original, **kwargs):
            sent.append((_name, tensor.numel() if isinstance(tensor, torch.Tensor) else -1))
            return _original(tensor, *args, **kwargs)

        setattr(dist, name, recorded)
    return sent


def _rank(rank: int, store: str, out: str) -> None:
    # Forked: one thread, as in a DataLoader worker; a thread pool the parent had used would hang the child.
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    sent = _record_collectives()
    results, travelled = {}, {}
    for rows in (30, 60):
        for drift in ("means", "linear"):
            before, after, labels, held = (t.chunk(2)[rank] for t in _task(rows))
            start = len(sent)
            fitted = _fit(before, after, labels, held, drift, shard=True)
            results |= {f"{rows}.{drift}.{k}": v for k, v in fitted.items()}
            travelled[f"{rows}.{drift}"] = torch.tensor([n for _, n in sent[start:]], dtype=torch.float64)
    names = sorted({name for name, _ in sent})
    save_file(results, f"{out}.{rank}")
    save_file(
        travelled | {"kinds": torch.tensor([COLLECTIVES.index(n) for n in names])}, f"{out}.sent.{rank}"
    )
    dist.destroy_process_group()


def test_heads_fitted_from_all_reduced_shard_sums_equal_heads_fitted_on_every_row_and_no_row_travels(
    tmp_path,
):
    # Forked, not spawned: two separate processes all the same, without importing torch afresh in each.
    mp.start_processes(
        _rank, args=(str(tmp_path / "store"), str(tmp_path / "fit")), nprocs=2, start_method="fork"
    )
    for rank in range(2):
        fitted = load_file(tmp_path / f"fit.{rank}")
        for rows in (30, 60):
            for drift in ("means", "linear"):
                whole = _fit(*_task(rows), drift, shard=False)  # every row in one process
                for name, value in whole.items():
                    reduced = fitted[f"{rows}.{drift}.{name}"]
                    if value.dtype == torch.float64:  # sums added in another order: float64 rounding
                        torch.testing.assert_close(reduced, value, rtol=1e-10, atol=1e-12, msg=name)
                    else:  # stored in float32 from float64 sums: the last float32 bit at most
                        torch.testing.assert_close(reduced, value, msg=name)
        sent = load_file(tmp_path / f"fit.sent.{rank}")
        # Only all-reduces of sums: no gather, and the same numbers travel whether a rank holds 30 rows or 60.
        assert [COLLECTIVES[i] for i in sent["kinds"].tolist()] == ["all_reduce"]
        for drift in ("means", "linear"):
            assert torch.equal(sent[f"30.{drift}"], sent[f"60.{drift}"]), drift
