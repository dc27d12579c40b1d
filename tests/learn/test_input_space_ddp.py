"""Under DDP each rank records its own shard's inputs; the basis it keeps must be the whole task's, the same on every
rank (two gloo processes on the CPU, as Ray Train runs them)."""

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file
from torch import nn

from pipeline.adapters.layer import SDLoRALinear
from pipeline.learn.input_space import InputGrams, extend_input_bases

D, ROWS, ENERGY = 6, 40, 0.999


class _Model:
    """What extend_input_bases reads of a model: its adapted layers by name."""

    def __init__(self):
        torch.manual_seed(0)
        self.adapters = [("q", SDLoRALinear(nn.Linear(D, D), gate=None))]


def _inputs() -> torch.Tensor:
    # Low-rank inputs: the first half of the rows spans other directions than the second half.
    g = torch.Generator().manual_seed(1)
    first = torch.randn(ROWS // 2, 2, generator=g) @ torch.randn(2, D, generator=g)
    second = torch.randn(ROWS // 2, 2, generator=g) @ torch.randn(2, D, generator=g)
    return torch.cat([first, second])


def _basis(rows: torch.Tensor) -> torch.Tensor:
    model, seen = _Model(), InputGrams()
    seen.add("q", rows)
    extend_input_bases(model, seen, ENERGY)
    return model.adapters[0][1].input_basis


def _rank(rank: int, store: str, out: str) -> None:
    # Forked: one thread, as in a DataLoader worker; a thread pool the parent had used would hang the child.
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    shard = _inputs().chunk(2)[rank]
    save_file({"basis": _basis(shard).contiguous()}, f"{out}.{rank}")
    dist.destroy_process_group()


def test_every_rank_keeps_the_basis_of_the_whole_task_not_of_its_shard(tmp_path):
    # Forked, not spawned: two separate processes all the same, without importing torch afresh in each.
    mp.start_processes(
        _rank, args=(str(tmp_path / "store"), str(tmp_path / "basis")), nprocs=2, start_method="fork"
    )
    whole = _basis(_inputs())
    ranks = [load_file(tmp_path / f"basis.{r}")["basis"] for r in range(2)]
    assert whole.shape[1] == 4  # both halves' directions
    for basis in ranks:
        assert basis.shape == whole.shape
        assert torch.allclose(basis @ basis.T, whole @ whole.T, atol=1e-8)  # the same subspace
