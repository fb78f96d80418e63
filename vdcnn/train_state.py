"""The resumable state of a training run (``RUN/last.pt``) and the per-epoch running sums.

``TrainingState`` is the one place that lists what ``last.pt`` holds; the
training loop reads and updates its fields and saves it between steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch


def fresh_epoch_sums(stages: int) -> dict[str, Any]:
    """Running sums of one epoch (saved with the state, so a resumed epoch continues them)."""
    return {"loss": 0.0, "correct": 0, "seen": 0, "grad": [0.0] * stages, "grad_n": 0, "skipped": 0,
            "time_s": 0.0}


@dataclass
class TrainingState:
    """Counters, best-so-far, the time plan, RNG states and the module state dicts of a run."""

    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # optimiser steps done in the current epoch
    global_step: int = 0
    best_score: float = -math.inf  # validation accuracy or macro-F1 (select_by); -train loss without validation
    best_epoch: int = -1
    stale_epochs: int = 0
    elapsed_s: float = 0.0  # wall time spent by earlier sessions of this run
    epoch_sums: dict[str, Any] = field(default_factory=lambda: fresh_epoch_sums(0))
    time_plan: dict[str, Any] | None = None  # vdcnn.time_budget.TimePlan.to_dict()
    rng: dict[str, Any] = field(default_factory=dict)  # {"cpu": [per rank], "cuda": [per rank: [per device]]}
    model: dict[str, torch.Tensor] = field(default_factory=dict)
    optimizer: dict[str, Any] = field(default_factory=dict)
    scheduler: dict[str, Any] = field(default_factory=dict)
    ema: dict[str, torch.Tensor] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        if d["ema"] is None:
            del d["ema"]
        if d["time_plan"] is None:
            del d["time_plan"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainingState":
        """Raises KeyError/TypeError on a state of another shape (the caller names the file)."""
        d = dict(d)
        if "best_acc" in d:  # states written before select_by
            d["best_score"] = d.pop("best_acc")
        if "torch_rng" in d:  # states written before per-rank RNG states
            d["rng"] = {"cpu": [d.pop("torch_rng")]}
        known = {f.name for f in fields(cls)}
        state = cls(**{k: v for k, v in d.items() if k in known})
        for name in ("model", "optimizer", "scheduler"):
            if not d.get(name):
                raise KeyError(name)
        return state


def capture_rng(device: torch.device) -> dict[str, Any]:
    """This process's torch RNG states: CPU, and every CUDA device when training on CUDA."""
    rng: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state_all()
    return rng


def restore_rng(rng: dict[str, Any], rank: int, device: torch.device) -> None:
    """Restore the RNG states saved for ``rank`` (``rng`` holds one entry per rank)."""
    cpu = rng.get("cpu") or []
    if rank < len(cpu):
        torch.set_rng_state(cpu[rank])
    cuda = rng.get("cuda") or []
    if device.type == "cuda" and rank < len(cuda) and len(cuda[rank]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda[rank])


class EpochMeter:
    """Loss, accuracy and gradient-norm sums kept on the device, read only at ``flush``.

    Reading a device tensor waits for the GPU; doing it once per refresh interval
    instead of every step keeps the GPU queue full. ``flush`` also reports whether a
    non-finite loss was seen since the last flush.
    """

    def __init__(self, stages: int, device: torch.device) -> None:
        dtype = torch.float32 if device.type == "mps" else torch.float64
        self.loss = torch.zeros((), dtype=dtype, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.grad = torch.zeros(stages, dtype=dtype, device=device)
        self.bad = torch.zeros((), dtype=torch.bool, device=device)
        self.seen = 0
        self.grad_n = 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        loss = loss.detach()
        self.loss += loss.to(self.loss.dtype) * len(y)
        if y.ndim == 2:  # multi-label: texts with every label right at 0.5
            self.correct += ((logits.detach() > 0) == (y > 0)).all(1).sum()
        else:
            self.correct += (logits.detach().argmax(1) == y).sum()
        self.bad |= ~torch.isfinite(loss)
        self.seen += len(y)

    def add_grad_norms(self, norms: torch.Tensor) -> None:
        self.grad += norms.to(self.grad.dtype)
        self.grad_n += 1

    def flush(self, sums: dict[str, Any]) -> bool:
        """Add the device sums into ``sums`` (host numbers) and zero them; True if a loss was not finite."""
        values = torch.cat([self.loss.reshape(1), self.correct.reshape(1).to(self.loss.dtype),
                            self.bad.reshape(1).to(self.loss.dtype), self.grad]).tolist()
        bad = values[2] > 0
        if not bad:
            sums["loss"] += values[0]
            sums["correct"] += int(values[1])
            sums["seen"] += self.seen
            sums["grad"] = [a + b for a, b in zip(sums["grad"], values[3:])]
            sums["grad_n"] += self.grad_n
        self.loss.zero_()
        self.correct.zero_()
        self.grad.zero_()
        self.bad.zero_()
        self.seen = self.grad_n = 0
        return bad
