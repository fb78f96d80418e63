"""Character-level augmentation on id batches: random crops and character noise.

Both act on ``(ids, lengths)`` only; labels never change.
"""

from __future__ import annotations

import torch
from torch import Tensor


def random_crop(ids: Tensor, lengths: Tensor, p: float, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """With probability ``p`` per text, keep a random window of 50-100 % of its length."""
    if p <= 0:
        return ids, lengths
    batch, time = ids.shape
    chosen = torch.rand(batch, generator=generator) < p
    frac = 0.5 + 0.5 * torch.rand(batch, generator=generator)
    new_len = torch.where(chosen, (lengths.float() * frac).ceil().long().clamp(min=1), lengths)
    start = (torch.rand(batch, generator=generator) * (lengths - new_len + 1).float()).floor().long()
    positions = (start[:, None] + torch.arange(time)[None, :]).clamp(max=time - 1)
    cropped = ids.gather(1, positions)
    cropped = cropped.masked_fill(torch.arange(time)[None, :] >= new_len[:, None], 0)
    return cropped, new_len


def char_noise(ids: Tensor, lengths: Tensor, rate: float, vocab_size: int, generator: torch.Generator,
               first_symbol: int = 2) -> Tensor:
    """Replace a fraction ``rate`` of real positions by random symbols (never padding)."""
    if rate <= 0:
        return ids
    batch, time = ids.shape
    real = torch.arange(time)[None, :] < lengths[:, None]
    hit = (torch.rand(batch, time, generator=generator) < rate) & real
    random_ids = torch.randint(first_symbol, vocab_size, (batch, time), generator=generator, dtype=ids.dtype)
    return torch.where(hit, random_ids, ids)
