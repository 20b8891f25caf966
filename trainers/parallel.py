"""Analyses on several processes: each embeds its share of the examples, then the shares are combined.

Training shards its batches through accelerate (trainers/training/distributed.py); the analyses
shard theirs over the process group that accelerate's launcher and `PartialState` set up (gloo
between CPU processes, NCCL between GPUs; `interp ... --num-processes N` starts them, see
interp/commands/launching.py). Every function here is the identity on one process, so an
analysis written with them runs unchanged without a launcher.

    world()                      how many processes, this one's rank        (1, 0) without a launcher
    is_main()                    rank 0: the process that prints and writes
    deal(n)                      this process's items of n, dealt in turn: rank, rank + P, ...
                                 (over length-sorted batches every process gets short and long
                                 ones alike; contiguous shares would give the last the longest)
    dealt_order(n)               the items in the order `gather_rows` returns them: rank 0's,
                                 then rank 1's, ...
    reduce_sum(t) / reduce_max(t)  t summed / maxed over the processes, in place (and returned)
    gather_rows(t)               (n_r, ...) per process -> (sum n_r, ...), in rank order

Deal out whole batches, not examples: `deal(number of batches)` over the batches one process
would make. Then every example is computed in the batch, with the padding, it has on one
process, and the rows gathered are one process's, bit for bit (`trainers.training.evaluate.embed_all`:
embeddings, ranks and MRR equal exactly). A batch cut at another place pads to another length,
which moves float32 embeddings by about 1e-7. Sums of float64 statistics over shares equal one
process's sums up to the order of addition (about 1e-15 relative).
"""

from __future__ import annotations

import torch


def _dist():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def world() -> tuple[int, int]:
    """(processes, this process's rank); (1, 0) when no process group is running."""
    dist = _dist()
    return (dist.get_world_size(), dist.get_rank()) if dist is not None else (1, 0)


def is_main() -> bool:
    return world()[1] == 0


def deal(n: int, processes: int | None = None, rank: int | None = None) -> range:
    """The items of `n` that process `rank` of `processes` takes (default: this process): rank, rank + P, ...

    Dealt in turn rather than cut in contiguous runs: the batches the analyses share are sorted by
    length, and a contiguous run would give the last process the longest (on 1,024 test pairs,
    3/4 of the padded tokens of two processes).
    """
    size, mine = world() if processes is None else (processes, rank)
    return range(mine, n, size)


def dealt_order(n: int, processes: int | None = None) -> list[int]:
    """The items of `n` in the order `gather_rows` returns what `deal` gave each process: rank 0's, then rank 1's, ..."""
    size = world()[0] if processes is None else processes
    return [i for r in range(size) for i in range(r, n, size)]


def reduce_sum(t: torch.Tensor) -> torch.Tensor:
    return _all_reduce(t, "SUM")


def reduce_max(t: torch.Tensor) -> torch.Tensor:
    return _all_reduce(t, "MAX")


def _all_reduce(t: torch.Tensor, op: str) -> torch.Tensor:
    """`t` reduced over the processes, in place. NCCL (the GPUs' backend) reduces CUDA tensors only: a CPU
    tensor (float64 sums kept on the CPU) goes through this process's GPU and back."""
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return t
    if t.device.type == "cpu" and dist.get_backend() == "nccl":
        moved = t.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(moved, op=getattr(dist.ReduceOp, op))
        return t.copy_(moved)
    dist.all_reduce(t, op=getattr(dist.ReduceOp, op))
    return t


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Concatenate every process's rows in rank order (shares may differ in length by one)."""
    dist = _dist()
    if dist is None or dist.get_world_size() == 1:
        return t
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, t.detach().cpu())  # one tensor per process, rank order; lengths may differ
    return torch.cat(parts, dim=0).to(t.device)
