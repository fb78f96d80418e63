"""Encoded arrays and batches: texts encoded once, batches bucketed by length."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import numpy as np

from .encoders import Encoder

if TYPE_CHECKING:  # torch is imported where it is used: an ONNX bundle predicts without it
    import torch


@dataclass
class Encoded:
    """Ids ``(N, max_length)`` in a compact dtype, true lengths and labels."""

    ids: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.lengths)

    def subset(self, index: np.ndarray) -> "Encoded":
        return Encoded(self.ids[index], self.lengths[index], self.labels[index])

    def truncated(self, max_length: int) -> "Encoded":
        """The same texts cut to ``max_length`` ids (what encoding at that length gives)."""
        if max_length >= self.ids.shape[1]:
            return self
        return Encoded(np.ascontiguousarray(self.ids[:, :max_length]), np.minimum(self.lengths, max_length),
                       self.labels)


# Part of every cache key: raise it whenever an encoder's implementation changes the ids it
# gives for the same settings, so no cached encoding outlives the code that made it.
ENCODING_VERSION = 2


def cache_dir() -> Path:
    return Path(os.environ.get("VDCNN_CACHE", Path.home() / ".cache" / "vdcnn"))


def encode_texts(encoder: Encoder, texts: Sequence[str], labels: np.ndarray, max_length: int,
                 use_cache: bool = True, chunk: int = 8192) -> Encoded:
    """Encode once; a second call with the same texts and encoder reads ``$VDCNN_CACHE``."""
    key = None
    if use_cache:
        h = hashlib.sha256(f"{ENCODING_VERSION}\0".encode())
        h.update(json.dumps(encoder.to_dict(), sort_keys=True).encode())
        h.update(str(max_length).encode())
        for t in texts:
            h.update(t.encode("utf-8", "surrogatepass"))
            h.update(b"\0")
        key = cache_dir() / f"{h.hexdigest()[:32]}.npz"
        if key.is_file():
            try:
                with np.load(key) as z:
                    return Encoded(z["ids"], z["lengths"], np.asarray(labels, dtype=np.int64))
            except (OSError, ValueError, KeyError):
                pass  # unreadable cache entry: encode again
    parts = [encoder.encode_batch(texts[i:i + chunk], max_length) for i in range(0, len(texts), chunk)]
    if parts:
        ids = np.concatenate([p[0] for p in parts])
        lengths = np.concatenate([p[1] for p in parts])
    else:
        ids = np.zeros((0, max_length), dtype=encoder.dtype)
        lengths = np.zeros(0, dtype=np.int32)
    if key is not None:
        try:
            key.parent.mkdir(parents=True, exist_ok=True)
            tmp = key.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(tmp, ids=ids, lengths=lengths)
            os.replace(tmp, key)
        except OSError:
            pass  # a cache is a convenience; a read-only home must not stop training
    return Encoded(ids, lengths, np.asarray(labels, dtype=np.int64))


def batch_order(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None, bucket: bool,
                pool: int = 50) -> list[np.ndarray]:
    """Index batches. Shuffled when ``rng`` is given; with ``bucket``, texts of similar
    length share a batch (sorted within pools of ``pool`` batches), batch order shuffled."""
    n = len(lengths)
    index = rng.permutation(n) if rng is not None else np.arange(n)
    if bucket:
        size = batch_size * pool
        chunks = [index[i:i + size] for i in range(0, n, size)]
        index = np.concatenate([c[np.argsort(lengths[c], kind="stable")] for c in chunks]) if chunks else index
    batches = [index[i:i + batch_size] for i in range(0, n, batch_size)]
    if bucket and rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def make_batch(data: Encoded, index: np.ndarray, trim: bool, device: torch.device | str = "cpu",
               multiple: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(ids, lengths, labels)`` tensors; with ``trim`` the ids are cut to the batch's
    longest text (rounded up to ``multiple``), which masking makes exact."""
    import torch

    lengths = data.lengths[index]
    ids = data.ids[index]
    if trim:
        longest = max(int(lengths.max(initial=1)), 1)
        longest = min(-(-longest // multiple) * multiple, ids.shape[1])
        ids = ids[:, :longest]
    device = torch.device(device)
    return (
        _to_device(np.ascontiguousarray(ids), device).long(),  # copied in the encoder's compact dtype, widened there
        _to_device(lengths, device).long(),
        _to_device(np.ascontiguousarray(data.labels[index]), device),
    )


def _to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A host array on ``device``, in its own dtype (uint8 ids cross the bus as 1 byte, not 8); to a
    GPU through pinned memory, so the copy does not block the host."""
    import torch

    tensor = torch.from_numpy(array)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def iterate_ids(ids: np.ndarray, lengths: np.ndarray, batch_size: int, trim: bool = True,
                device: torch.device | str = "cpu") -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """Inference batches in length order: yields ``(positions, ids, lengths)``.

    Never a batch of one: oneDNN runs one through other convolution kernels, whose
    rounding differs by ~1e-6, so a lone text is repeated and the batch has more rows
    than ``positions``; callers keep the first ``len(positions)`` outputs.
    """
    data = Encoded(ids, lengths, np.zeros(len(lengths), dtype=np.int64))
    for index, rows in _inference_rows(lengths, batch_size, trim):
        x, n, _ = make_batch(data, rows, trim, device)
        yield index, x, n


def _inference_rows(lengths: np.ndarray, batch_size: int, trim: bool) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(positions, rows)`` of each inference batch: length order, a lone text repeated."""
    order = np.argsort(lengths, kind="stable") if trim else np.arange(len(lengths))
    for i in range(0, len(order), batch_size):
        index = order[i:i + batch_size]
        yield index, np.repeat(index, 2) if len(index) == 1 else index


def iterate_arrays(ids: np.ndarray, lengths: np.ndarray, batch_size: int, trim: bool = True, multiple: int = 8
                   ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``iterate_ids`` in numpy, without torch: yields ``(positions, ids, lengths)``, int64, the ids
    trimmed as ``make_batch`` trims them (the batches an exported model runs)."""
    for index, rows in _inference_rows(lengths, batch_size, trim):
        n = lengths[rows]
        if trim:
            longest = max(int(n.max(initial=1)), 1)
            x = ids[rows, :min(-(-longest // multiple) * multiple, ids.shape[1])]
        else:
            x = ids[rows]
        yield index, np.ascontiguousarray(x, dtype=np.int64), n.astype(np.int64)
