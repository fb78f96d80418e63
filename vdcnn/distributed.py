"""Data-parallel training under ``torchrun``: process group, rank, reductions.

``torchrun --nproc_per_node N -m vdcnn train ...`` sets WORLD_SIZE, RANK and
LOCAL_RANK; ``setup()`` then joins the process group (gloo for CPU tensors, and NCCL
for CUDA tensors where CUDA exists). Without those variables everything runs as a
single process. Several machines share no folder: rank 0 alone reads and writes the
run folder and sends the other ranks what they need (``from_main``).
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


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


def setup() -> DistContext:
    """Join the torchrun process group if launched by torchrun; else a single-process context.

    The group is joined before any rank knows the run's device (a resumed run's settings are
    on rank 0 only): gloo carries CPU tensors and, where CUDA exists, NCCL carries CUDA ones.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    ctx = DistContext(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "gloo"
        if torch.cuda.is_available():
            backend = "cpu:gloo,cuda:nccl"
            torch.cuda.set_device(ctx.local_rank % torch.cuda.device_count())  # ranks may share a GPU (gloo)
        if restart_count() == 0:
            dist.init_process_group(backend=backend)
        else:
            dist.init_process_group(backend=backend, store=_fresh_store(ctx), rank=ctx.rank, world_size=world)
    return ctx


def _fresh_store(ctx: DistContext) -> "dist.Store":
    """The rendezvous store of a restarted worker, under a prefix of its own attempt.

    torchrun's agent hosts the store and keeps it across ``--max-restarts``: without a prefix the
    restarted ranks can read the addresses their dead predecessors published there and fail to
    connect ("Connection refused"), now and then, whenever a stale key is read before it is rewritten.
    """
    from datetime import timedelta

    agent_hosts_it = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), ctx.world_size,
                          is_master=not agent_hosts_it and ctx.rank == 0, timeout=timedelta(minutes=30),
                          multi_tenant=not agent_hosts_it)
    return dist.PrefixStore(f"vdcnn/attempt_{restart_count()}", store)


def restart_count() -> int:
    """How often torchrun (``--max-restarts``) has started this worker again after a failure."""
    try:
        return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    except ValueError:
        return 0


def rank_seed(seed: int, ctx: DistContext) -> int:
    """The seed of this rank's random draws (dropout, drop-path, noise): ``seed + rank``, as in nanoGPT,
    so ranks draw different masks; rank 0 (and a single process) keeps ``seed``."""
    return seed + ctx.rank


def broadcast_object(obj: Any, ctx: DistContext, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` (any picklable value) on every rank, sent over gloo."""
    if not ctx.enabled:
        return obj
    box = [obj if ctx.rank == src else None]
    dist.broadcast_object_list(box, src, device=torch.device("cpu"))
    return box[0]


def from_main(work: Callable[[], T], ctx: DistContext) -> T:
    """``work()`` done on rank 0 alone, its result (or its error, raised again) on every rank.

    What only rank 0 can do (read or write the run folder, learn a vocabulary once) goes
    through here, so a job over several machines needs no shared folder.
    """
    if not ctx.enabled:
        return work()
    outcome: tuple[bool, Any] = (True, None)
    if ctx.is_main:
        try:
            outcome = (True, work())
        except Exception as exc:  # noqa: BLE001 - sent to the other ranks, then raised here too
            try:
                pickle.dumps(exc)
                sent: Exception = exc
            except Exception:  # noqa: BLE001 - an error that cannot travel goes as its message
                sent = RuntimeError(f"rank 0: {type(exc).__name__}: {exc}")
            broadcast_object((False, sent), ctx)
            raise
    ok, value = broadcast_object(outcome, ctx)
    if not ok:
        raise value
    return value


def teardown(ctx: DistContext) -> None:
    """Leave the group together: the other ranks wait here while rank 0 scores and writes the run.

    A rank that destroyed the group and exited while rank 0 still held it made gloo abort rank 0
    now and then (exit -6 under torchrun) at the end of an otherwise finished run.
    """
    if ctx.enabled and dist.is_initialized():
        try:
            dist.barrier()
        except RuntimeError:  # a peer already gone (its failure is what torchrun reports)
            pass
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
