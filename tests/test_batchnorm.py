"""BatchNorm statistics: recalibration runs the model as at inference (no drop-path, no dropout),
and masked statistics are computed in fp32 even under bf16 autocast."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vdcnn.encoders import CharEncoder
from vdcnn.layers import MaskedBatchNorm1d
from vdcnn.model import VDCNN, ModelConfig, recalibrate_batchnorm

TEXTS = ["Wall Street rallies as tech shares climb to a record high after strong earnings reports.",
         "The striker scored twice.", "A new chip doubles battery life, the company said on Tuesday morning.",
         "Oil prices fell sharply on Monday amid fears of weaker demand from China and Europe."]


def _batches():
    ids, lengths = CharEncoder().encode_batch(TEXTS, 96)
    ids, lengths = torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(lengths.astype(np.int64))
    return [(ids[:2], lengths[:2]), (ids[2:], lengths[2:])]


def test_recalibration_ignores_drop_path_and_dropout():
    """Statistics are those of the inference network: a model with stochastic depth and dropout gets
    exactly the statistics of the same weights without stochastic depth, and the same ones on every call."""
    base = dict(channels=(8, 16, 32, 64), fc_dims=(32,), embedding_dim=8, shortcut=True, dropout=0.5)
    torch.manual_seed(0)
    noisy = VDCNN(ModelConfig(**base, drop_path=0.5))
    plain = VDCNN(ModelConfig(**base))
    plain.load_state_dict(noisy.state_dict())
    noisy.eval()
    stats = []
    for model in (noisy, noisy, plain):
        recalibrate_batchnorm(model, _batches())
        stats.append({k: v.clone() for k, v in model.state_dict().items() if "running" in k})
    for k in stats[0]:
        torch.testing.assert_close(stats[0][k], stats[1][k], rtol=0, atol=0)
        torch.testing.assert_close(stats[0][k], stats[2][k], rtol=0, atol=0)
    assert not noisy.training and all(not m.training for m in noisy.modules()), "eval mode is restored"


def _reference(x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mask = (torch.arange(x.size(-1))[None, :] < lengths[:, None]).double()[:, None, :]
    xd = x.double()
    n = mask.sum()
    mean = (xd * mask).sum((0, 2)) / n
    var = (((xd - mean[None, :, None]) * mask) ** 2).sum((0, 2)) / n
    return mean, var * n / (n - 1)


@pytest.mark.parametrize("sync", [False, True])
def test_masked_statistics_are_fp32_under_bf16_autocast(sync):
    # Activations far from zero with a small spread, as a bf16 convolution hands them over; 1,400 real
    # positions (a bf16 count above 256 is rounded, and E[x^2] - E[x]^2 in bf16 cancels to noise).
    torch.manual_seed(0)
    x = (50 + 0.5 * torch.randn(8, 4, 200)).to(torch.bfloat16)
    lengths = torch.tensor([200, 190, 180, 170, 160, 200, 150, 150])
    bn = MaskedBatchNorm1d(4, momentum=None)  # momentum None: running stats = this batch's stats
    bn.sync = sync
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = bn(x, lengths)
    mean, unbiased = _reference(x, lengths)
    torch.testing.assert_close(bn.running_mean.double(), mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_var.double(), unbiased, rtol=1e-3, atol=1e-5)
    mask = torch.arange(200)[None, :] < lengths[:, None]
    real = y.float().transpose(1, 2)[mask]  # (positions, channels) normalised: mean 0, variance 1
    assert real.mean(0).abs().max() < 0.02 and (real.var(0) - 1).abs().max() < 0.02
