"""Every training knob does what it says: augmentation, EMA, stochastic depth, schedules,
weight-decay groups, gradient clipping, early stopping, label smoothing."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from vdcnn.augment import char_noise, random_crop
from vdcnn.config import load_config
from vdcnn.encoders import CharEncoder
from vdcnn.layers import ConvBlock, drop_path
from vdcnn.model import VDCNN, ModelConfig, recalibrate_batchnorm
from vdcnn.train import lr_multiplier, make_optimizer, train

TEXTS = ["Wall Street rallies as tech shares climb to a record high after strong earnings reports.",
         "The striker scored twice.", "", "A new chip doubles battery life, the company said on Tuesday morning.",
         "Oil prices fell sharply on Monday amid fears of weaker demand from China and Europe."]


def _batch(max_length: int = 96):
    ids, lengths = CharEncoder().encode_batch(TEXTS, max_length)
    return torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(lengths.astype(np.int64))


def test_random_crop_keeps_a_window_of_each_text():
    ids, lengths = _batch()
    gen = torch.Generator().manual_seed(0)
    cropped, new_len = random_crop(ids, lengths, 1.0, gen)
    assert cropped.shape == ids.shape
    for row, n, crow, m in zip(ids, lengths, cropped, new_len):
        n, m = int(n), int(m)
        assert (n == 0 and m <= 1) or math.ceil(0.5 * n) <= m <= n
        if n:
            window = crow[:m].tolist()
            real = row[:n].tolist()
            assert any(real[s:s + m] == window for s in range(n - m + 1)), "not a contiguous window of the text"
        assert int(crow[m:].abs().sum()) == 0, "positions after the crop must be padding"
    assert (new_len < lengths).any()
    same, same_len = random_crop(ids, lengths, 0.0, gen)
    assert torch.equal(same, ids) and torch.equal(same_len, lengths)


def test_char_noise_touches_only_real_positions_at_the_asked_rate():
    ids, lengths = _batch(256)
    ids = ids.repeat(40, 1)
    lengths = lengths.repeat(40)
    gen = torch.Generator().manual_seed(1)
    noisy = char_noise(ids, lengths, 0.1, 71, gen)
    real = torch.arange(ids.size(1))[None, :] < lengths[:, None]
    assert torch.equal(noisy[~real], ids[~real]), "padding must stay padding"
    changed = (noisy != ids) & real
    rate = changed.sum().item() / real.sum().item()
    assert 0.07 < rate < 0.11  # 10 % drawn; a few replacements draw the same symbol again
    assert int(noisy[real].min()) >= 2 and int(noisy.max()) < 71, "never pad/unknown, always in the vocabulary"


def test_augmented_training_keeps_labels_and_changes_the_batches(topic_csv, tmp_path):
    """A run with heavy augmentation learns the same labels (they travel untouched) and
    ends with other weights than the same run without it."""
    runs = {}
    for name, noise in (("plain", 0.0), ("noisy", 0.3)):
        cfg = _tiny_cfg(topic_csv, epochs=1)
        cfg.set("train.augment_noise", noise)
        cfg.set("train.augment_crop", 0.5 if noise else 0.0)
        train(cfg, tmp_path / name, progress=False, log=lambda s: None)
        runs[name] = torch.load(tmp_path / name / "last.pt", weights_only=True)["model"]
        meta = json.loads((tmp_path / name / "config.json").read_text())
        assert meta["labels"] == ["business", "sports", "tech"]
    assert any(not torch.equal(runs["plain"][k], runs["noisy"][k]) for k in runs["plain"])


def _tiny_cfg(data: Path, epochs: int = 2, **train_settings):
    cfg = load_config(None)
    for key, value in {"data.dataset": str(data), "encoder.max_length": 48, "train.epochs": epochs,
                       "train.batch_size": 16, "model.channels": [8, 16, 32, 64], "model.fc_dims": [32],
                       "model.embedding_dim": 8, "train.optimizer": "adamw", "train.lr": 0.003,
                       "train.bf16": False, **{f"train.{k}": v for k, v in train_settings.items()}}.items():
        cfg.set(key, value)
    return cfg


def test_ema_weights_are_saved_and_differ_from_the_raw_weights(topic_csv, tmp_path):
    train(_tiny_cfg(topic_csv, epochs=1, ema_decay=0.9), tmp_path / "ema", progress=False, log=lambda s: None)
    state = torch.load(tmp_path / "ema" / "last.pt", weights_only=True)
    saved = load_file(tmp_path / "ema" / "model.safetensors")
    weights = [k for k in saved if k.endswith("weight")]
    assert all(torch.equal(saved[k], state["ema"][k]) for k in saved), "the best checkpoint holds the EMA weights"
    assert any(not torch.equal(state["ema"][k], state["model"][k]) for k in weights)
    # EMA lags: it sits between the initial and the final raw weights.
    torch.manual_seed(0)
    init = VDCNN(_tiny_cfg(topic_csv).model_config(71, 3)).state_dict()
    k = "first_conv.weight"
    raw_move = (state["model"][k] - init[k]).norm()
    ema_move = (state["ema"][k] - init[k]).norm()
    assert 0 < ema_move < raw_move


def test_batchnorm_recalibration_averages_the_batch_statistics_of_real_positions():
    torch.manual_seed(0)
    model = VDCNN(ModelConfig(channels=(8, 16, 32, 64), fc_dims=(32,), embedding_dim=8))
    ids, lengths = _batch()
    first, second = (ids[:3], lengths[:3]), (ids[3:], lengths[3:])
    bn = model.stages[0][0].bn1
    stats = []
    for batch in (first, second):  # each batch's own statistics: momentum 1 replaces the running ones
        bn.momentum = 1.0
        model.train()(*batch)
        stats.append(bn.running_mean.clone())
    bn.momentum = 0.1
    model.eval()
    assert recalibrate_batchnorm(model, [first, second]) == 2
    torch.testing.assert_close(bn.running_mean, (stats[0] + stats[1]) / 2)
    assert bn.momentum == 0.1 and not model.training, "momentum and mode are restored"
    # Padding never enters the statistics: the same texts padded further give the same result.
    wide = [(torch.nn.functional.pad(i, (0, 40)), n) for i, n in (first, second)]
    recalibrate_batchnorm(model, wide)
    torch.testing.assert_close(bn.running_mean, (stats[0] + stats[1]) / 2)


def test_ema_batchnorm_statistics_are_recomputed_for_the_ema_weights(topic_csv, tmp_path):
    for name, batches in (("copied", 0), ("recomputed", 4)):
        train(_tiny_cfg(topic_csv, epochs=1, ema_decay=0.9, ema_bn_batches=batches), tmp_path / name,
              progress=False, log=lambda s: None)
    copied = torch.load(tmp_path / "copied" / "last.pt", weights_only=True)
    recomputed = torch.load(tmp_path / "recomputed" / "last.pt", weights_only=True)
    key = "stages.0.0.bn1.running_mean"
    # Same seed and data, so the raw runs are identical; only the EMA's statistics differ.
    torch.testing.assert_close(copied["model"][key], recomputed["model"][key])
    assert torch.equal(copied["ema"][key], copied["model"][key])
    assert not torch.allclose(recomputed["ema"][key], recomputed["model"][key])
    saved = load_file(tmp_path / "recomputed" / "model.safetensors")
    assert torch.equal(saved[key], recomputed["ema"][key])


def test_drop_path_drops_whole_samples_and_keeps_the_mean():
    torch.manual_seed(0)
    x = torch.ones(20000, 2, 3)
    y = drop_path(x, 0.25, training=True)
    kept = (y[:, 0, 0] != 0).float()
    assert abs(kept.mean().item() - 0.75) < 0.02
    assert torch.allclose(y[kept.bool()], torch.full_like(y[kept.bool()], 1 / 0.75))
    assert (y.reshape(20000, -1).std(1) == 0).all(), "a sample's branch is dropped whole or kept whole"
    assert torch.equal(drop_path(x, 0.25, training=False), x)


def test_stochastic_depth_makes_training_forward_random_and_eval_deterministic():
    block = ConvBlock(8, 8, shortcut=True, drop_path=0.5)
    x = torch.randn(16, 8, 20)
    torch.manual_seed(0)
    a, _ = block(x)
    b, _ = block(x)
    assert not torch.equal(a, b)
    block.eval()
    assert torch.equal(block(x)[0], block(x)[0])


def test_schedules_follow_their_shapes():
    def factors(**train_settings):
        cfg = load_config(None)
        cfg.set("train.epochs", 6)
        for k, v in train_settings.items():
            cfg.set(f"train.{k}", v)
        f = lr_multiplier(cfg, steps_per_epoch=10)
        return [f(s) for s in range(60)]

    step = factors(schedule="step", step_epochs=2, step_gamma=0.5)
    assert step[0] == step[19] == 1.0 and step[20] == step[39] == 0.5 and step[40] == 0.25
    warm = factors(schedule="constant", warmup_epochs=1)
    assert warm[0] == pytest.approx(0.1) and warm[9] == 1.0 and warm[30] == 1.0
    assert all(a < b for a, b in zip(warm[:9], warm[1:10]))
    one = factors(schedule="onecycle")  # 10 % warm-up, then a cosine down to zero
    peak = int(np.argmax(one))
    assert peak == 5 and one[peak] == 1.0
    assert all(a >= b for a, b in zip(one[peak:], one[peak + 1:])) and one[-1] < 0.01
    cos = factors(schedule="cosine")
    assert cos[0] == 1.0 and cos[30] == pytest.approx(0.5, abs=0.03) and cos[-1] < 0.01


def test_weight_decay_spares_batchnorm_and_biases():
    model = VDCNN(ModelConfig(channels=(8, 16, 32, 64), fc_dims=(32,)))
    cfg = load_config(None)
    cfg.set("train.weight_decay", 0.05)
    groups = make_optimizer(cfg, model).param_groups
    decayed = {id(p) for g in groups if g["weight_decay"] == 0.05 for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in decayed) == (p.ndim > 1), name


def test_gradient_clipping_bounds_each_step(topic_csv, tmp_path):
    """SGD without momentum moves the weights by lr x (clipped) gradient: at most lr x clip a step."""
    lr, clip = 0.5, 1e-3
    cfg = _tiny_cfg(topic_csv, epochs=1, optimizer="sgd", lr=lr, momentum=0.0, grad_clip=clip, schedule="constant")
    torch.manual_seed(0)
    init = VDCNN(cfg.model_config(71, 3)).state_dict()
    train(cfg, tmp_path / "clip", progress=False, log=lambda s: None)
    state = torch.load(tmp_path / "clip" / "last.pt", weights_only=True)
    steps = state["global_step"]
    params = [k for k in init if "running" not in k and "num_batches" not in k]
    moved = torch.sqrt(sum(((state["model"][k] - init[k]).double() ** 2).sum() for k in params))
    assert 0 < moved <= steps * lr * clip * 1.0001


def test_early_stop_ends_the_run_when_validation_stalls(topic_csv, tmp_path):
    # A learning rate too small to move the weights: only BatchNorm statistics still settle, so
    # validation stalls after a few epochs and the run ends `early_stop` epochs after its best one.
    cfg = _tiny_cfg(topic_csv, epochs=15, optimizer="sgd", lr=1e-12, early_stop=2, schedule="constant")
    cfg.set("data.val_fraction", 0.2)
    result = train(cfg, tmp_path / "stop", progress=False, log=lambda s: None)
    assert result.epochs_run == result.best_epoch + 2 < 15
    rows = [json.loads(line) for line in (tmp_path / "stop" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, result.epochs_run + 1))
    assert [r["best"] for r in rows][-2:] == [False, False]


def test_label_smoothing_raises_the_training_loss_floor(topic_csv, tmp_path):
    losses = {}
    for smoothing in (0.0, 0.3):
        result = train(_tiny_cfg(topic_csv, epochs=3, label_smoothing=smoothing), tmp_path / f"ls{smoothing}",
                       progress=False, log=lambda s: None)
        losses[smoothing] = result.history[-1]["train_loss"]
    # With smoothing 0.3 over 3 classes the loss cannot go below the entropy of (0.8, 0.1, 0.1).
    floor = -(0.8 * math.log(0.8) + 2 * 0.1 * math.log(0.1))
    assert losses[0.3] >= floor - 1e-3
    assert losses[0.0] < losses[0.3]


def test_profile_reports_time_per_phase(topic_csv, tmp_path):
    lines: list[str] = []
    train(_tiny_cfg(topic_csv, epochs=1), tmp_path / "prof", progress=False, log=lines.append, profile=True)
    row = json.loads((tmp_path / "prof" / "metrics.jsonl").read_text().splitlines()[0])
    phases = row["profile_s"]
    assert list(phases) == ["data", "forward", "backward", "optimiser", "validation"]
    assert all(v > 0 for v in phases.values()) and sum(phases.values()) <= row["time_s"] + 0.5
    assert any(line.strip().startswith("time per phase: data") for line in lines)
    train(_tiny_cfg(topic_csv, epochs=1), tmp_path / "plain", progress=False, log=lambda s: None)
    assert "profile_s" not in (tmp_path / "plain" / "metrics.jsonl").read_text()
