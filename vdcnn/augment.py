"""Character-level augmentation on id batches: random crops and character noise.

Both act on ``(ids, lengths)`` only; labels never change. They run on the batch's
device, drawing from ``generator`` (which must live on that device).
"""

from __future__ import annotations

import torch
from torch import Tensor


def random_crop(ids: Tensor, lengths: Tensor, p: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """With probability ``p`` per text, keep a random window of 50-100 % of its length."""
    if p <= 0:
        return ids, lengths
    batch, time = ids.shape
    dev = ids.device
    chosen = torch.rand(batch, generator=generator, device=dev) < p
    frac = 0.5 + 0.5 * torch.rand(batch, generator=generator, device=dev)
    new_len = torch.where(chosen, (lengths.float() * frac).ceil().long().clamp(min=1), lengths)
    start = (torch.rand(batch, generator=generator, device=dev) * (lengths - new_len + 1).float()).floor().long()
    steps = torch.arange(time, device=dev)
    positions = (start[:, None] + steps[None, :]).clamp(max=time - 1)
    cropped = ids.gather(1, positions)
    cropped = cropped.masked_fill(steps[None, :] >= new_len[:, None], 0)
    return cropped, new_len


def char_noise(ids: Tensor, lengths: Tensor, rate: float, vocab_size: int, generator: torch.Generator,
               first_symbol: int = 2) -> Tensor:
    """Replace a fraction ``rate`` of real positions by random symbols (never padding)."""
    if rate <= 0:
        return ids
    batch, time = ids.shape
    dev = ids.device
    real = torch.arange(time, device=dev)[None, :] < lengths[:, None]
    hit = (torch.rand(batch, time, generator=generator, device=dev) < rate) & real
    random_ids = torch.randint(first_symbol, vocab_size, (batch, time), generator=generator, dtype=ids.dtype,
                               device=dev)
    return torch.where(hit, random_ids, ids)
