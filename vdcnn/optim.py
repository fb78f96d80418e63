"""Optimiser, learning-rate schedule, class-weighted loss and gradient norms of a training run."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .config import RunConfig
from .model import VDCNN


def lr_multiplier(cfg: RunConfig, steps_per_epoch: int, total_steps: int | None = None) -> Callable[[int], float]:
    """Learning-rate factor for a global step: warm-up, then the chosen schedule over ``total_steps``
    (``epochs x steps_per_epoch`` unless a time budget fitted another number)."""
    t = cfg.train
    total = max(1, total_steps if total_steps is not None else t.epochs * steps_per_epoch)
    warmup = min(int(t.warmup_epochs * steps_per_epoch), total)
    if t.schedule == "onecycle" and warmup == 0:
        warmup = int(0.1 * total)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        if t.schedule == "step":
            return t.step_gamma ** (step // steps_per_epoch // t.step_epochs)
        if t.schedule in ("cosine", "onecycle"):
            return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return factor


def make_optimizer(cfg: RunConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    t = cfg.train
    # No weight decay on BatchNorm parameters and biases. The n-gram path (fastText inside the
    # model) learns at its own, higher rate and without decay: most of its rows are seen by a
    # few texts, and decay would shrink them at every step they are not.
    named = [(n, p) for n, p in model.named_parameters() if not n.startswith("ngrams.")]
    decay = [p for n, p in named if p.ndim > 1]
    no_decay = [p for n, p in named if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    ngrams = [p for n, p in model.named_parameters() if n.startswith("ngrams.")]
    if ngrams:
        groups.append({"params": ngrams, "weight_decay": 0.0, "lr": t.lr * t.ngram_lr_scale})
    groups = [g for g in groups if g["params"]]
    # Fused kernels (one pass over all parameters) on CPU and GPU alike.
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, fused=True)
    return torch.optim.AdamW(groups, lr=t.lr, fused=True)


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Balanced cross-entropy weights ``n / (K * count_k)``; a class absent from training gets 0."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, len(labels) / (num_classes * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def stage_grad_norms(model: VDCNN) -> torch.Tensor:
    """Gradient norm of each stage, as one device tensor (read later, with the other sums)."""
    norms = []
    if not model.stage_modules():  # the n-gram path alone has no stages
        return torch.zeros(0, device=next(model.parameters()).device)
    for stage in model.stage_modules():
        grads = [p.grad for p in stage.parameters() if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
                     if grads else torch.zeros((), device=next(model.parameters()).device))
    return torch.stack(norms)
