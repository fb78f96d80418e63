"""Data-parallel training under ``torchrun``: process group, rank, reductions.

``torchrun --nproc_per_node N -m vdcnn train ...`` sets WORLD_SIZE, RANK and
LOCAL_RANK; ``setup()`` then joins the process group (NCCL on GPUs, gloo on CPU).
Without those variables everything runs as a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device_type: str) -> DistContext:
    """Join the torchrun process group if launched by torchrun; else a single-process context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    ctx = DistContext(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group(backend=backend)
    return ctx


def teardown(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def sum_across(values: list[float], ctx: DistContext, device: torch.device) -> list[float]:
    """Element-wise sum of a list of numbers over all ranks."""
    if not ctx.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def any_across(flag: bool, ctx: DistContext, device: torch.device) -> bool:
    """True on every rank if it is true on any rank (keeps ranks in lock-step)."""
    if not ctx.enabled:
        return flag
    return sum_across([1.0 if flag else 0.0], ctx, device)[0] > 0


def broadcast_values(values: list[float], ctx: DistContext, device: torch.device, src: int = 0) -> list[float]:
    """Rank ``src``'s numbers on every rank (one decision for all, e.g. best epoch and early stop)."""
    if not ctx.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(t, src)
    return t.tolist()


def gather_objects(obj: object, ctx: DistContext) -> list[object]:
    """Every rank's ``obj`` in rank order (on every rank); ``[obj]`` in a single process."""
    if not ctx.enabled:
        return [obj]
    out: list[object] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def shard(batches: list, ctx: DistContext) -> list:
    """This rank's rows of each batch. A batch with fewer rows than ranks (the short last one)
    is left out on every rank alike: a rank with zero rows would average its loss over nothing (NaN)."""
    if not ctx.enabled:
        return batches
    return [b[ctx.rank::ctx.world_size] for b in batches if len(b) >= ctx.world_size]


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()
