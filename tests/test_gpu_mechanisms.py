"""GPU mechanisms checked without a GPU: bf16 detection, cuDNN autotuning's scope, compact host copies."""

from __future__ import annotations

import numpy as np
import torch

from vdcnn import batching
from vdcnn.batching import Encoded, make_batch
from vdcnn.runtime import bf16_supported
from vdcnn.train import cudnn_autotune


def test_emulated_bf16_does_not_count(monkeypatch):
    """V100 and T4 emulate bf16 (slower than fp32): `is_bf16_supported()` says yes unless asked
    for native support only."""
    asked = {}

    def is_bf16_supported(including_emulation: bool = True) -> bool:
        asked["including_emulation"] = including_emulation
        return including_emulation  # an emulating GPU

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
    assert bf16_supported("cuda") is False
    assert asked == {"including_emulation": False}


def test_cudnn_autotuning_is_scoped_to_the_training():
    cudnn = torch.backends.cudnn
    assert cudnn.benchmark is False
    with cudnn_autotune(torch.device("cuda"), bucket=True):
        assert cudnn.benchmark is True
    assert cudnn.benchmark is False, "benchmark mode outlived the training"
    with cudnn_autotune(torch.device("cuda"), bucket=False), cudnn_autotune(torch.device("cpu"), bucket=True):
        assert cudnn.benchmark is False


def test_cudnn_autotuning_respects_deterministic_algorithms():
    old = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with cudnn_autotune(torch.device("cuda"), bucket=True):
            assert torch.backends.cudnn.benchmark is False
    finally:
        torch.use_deterministic_algorithms(old)


def test_ids_cross_to_the_device_in_their_compact_dtype(monkeypatch):
    copied = []
    real = batching._to_device

    def recording(array, device):
        copied.append(array.dtype)
        return real(array, device)

    monkeypatch.setattr(batching, "_to_device", recording)
    data = Encoded(np.array([[5, 6, 7, 0], [8, 9, 0, 0]], dtype=np.uint8), np.array([3, 2]), np.array([0, 1]))
    ids, lengths, labels = make_batch(data, np.array([0, 1]), trim=False)
    assert copied[0] == np.uint8, "ids were widened on the host before the copy"
    assert ids.dtype == lengths.dtype == torch.int64
    assert ids.tolist() == [[5, 6, 7, 0], [8, 9, 0, 0]]
