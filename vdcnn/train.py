"""Training: one function, read top to bottom.

``train(config, out_dir)`` loads and encodes the data, builds the model and
optimiser, runs the epochs (validation after each, best model kept, metrics
logged, resumable state saved) and finally scores the best model on the test
split. ``train(None, out_dir, resume=True)`` continues a run from its folder.
"""

from __future__ import annotations

import copy
import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import checkpoint as ckpt
from . import distributed
from .augment import char_noise, random_crop
from .batching import Encoded, batch_order, encode_texts, make_batch
from .config import RunConfig
from .data import Splits, load_splits
from .encoders import build_encoder, encoder_from_dict
from .errors import CheckpointError, ConfigError, DataError, VdcnnError
from .evaluate import classification_report, predict_logits
from .layers import MaskedBatchNorm1d
from .model import VDCNN, count_parameters, forward_flops, recalibrate_batchnorm
from .profiling import PhaseTimer, format_phases
from .recipe import apply_recipe, char_coverage, choose_max_length
from .runtime import bf16_supported, tune_malloc


class TrainingInterrupted(VdcnnError):
    """Ctrl-C or SIGTERM: a resumable state was saved."""


class TrainingDiverged(VdcnnError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    out_dir: Path
    best_val_accuracy: float
    best_epoch: int
    epochs_run: int
    test: dict[str, Any] | None = None
    wall_time_s: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but no CUDA GPU is available")
    return torch.device(name)


def lr_multiplier(cfg: RunConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Learning-rate factor for a global step: warm-up, then the chosen schedule."""
    t = cfg.train
    total = max(1, t.epochs * steps_per_epoch)
    warmup = int(t.warmup_epochs * steps_per_epoch)
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
    # No weight decay on BatchNorm parameters and biases.
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # Fused kernels (one pass over all parameters) on CPU and GPU alike.
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, momentum=t.momentum, fused=True)
    return torch.optim.AdamW(groups, lr=t.lr, fused=True)


def stage_grad_norms(model: VDCNN) -> list[float]:
    norms = []
    for stage in model.stage_modules():
        grads = [p.grad for p in stage.parameters() if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))) if grads else 0.0)
    return norms


class _StopFlag:
    """Turns SIGINT/SIGTERM into a flag checked between steps."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signal is not None:  # second Ctrl-C: stop at once
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def load_training_data(cfg: RunConfig) -> Splits:
    """Train, validation and test splits of the run's dataset (the test split read before training)."""
    d = cfg.data
    splits = load_splits(d.dataset, text_columns=d.text_columns, label_column=d.label_column,
                         val_fraction=d.val_fraction, limit=d.limit, test_split=d.test_split, seed=cfg.train.seed)
    if len(splits.train.texts) == 0:
        raise DataError(f"{splits.train.source}: the training split has no rows")
    return splits


def train(cfg: RunConfig | None, out_dir: str | Path, resume: bool = False,
          log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
          progress: bool = True, max_steps: int | None = None, profile: bool = False) -> TrainResult:
    """Train (or, with ``resume``, continue) a run into ``out_dir``.

    ``max_steps`` stops after that many optimiser steps as if interrupted (for tests).
    ``profile`` times each step's phases (data, forward, backward, optimiser) and
    reports them per epoch, in the log and in ``metrics.jsonl``.
    """
    out_dir = Path(out_dir)
    state = None
    if resume:
        meta = ckpt.read_config(out_dir)
        cfg = RunConfig.from_dict(meta.get("run", {}), source=str(out_dir / ckpt.CONFIG_FILE))
        if (out_dir / ckpt.STATE_FILE).exists() or (out_dir / ckpt.WEIGHTS_FILE).exists() or ckpt.read_metrics(out_dir):
            state = ckpt.load_state(out_dir / ckpt.STATE_FILE)  # a missing last.pt after progress: refuse
        else:
            # Stopped before its first checkpoint (killed while loading data): nothing to lose, the
            # recipe in config.json is all there is, so start it over (same seed, same result).
            log(f"{out_dir} has no saved training state yet (the run stopped before its first checkpoint): "
                "starting it over")
    elif cfg is None:
        raise ConfigError("a config is needed to start a new run")
    else:
        if (out_dir / ckpt.CONFIG_FILE).exists():
            raise ConfigError(f"{out_dir} already holds a run; use --resume to continue it or choose another --out")
    assert cfg is not None
    cfg.validate()
    ctx = distributed.setup(resolve_device(cfg.train.device).type)
    try:
        distributed.barrier(ctx)  # every rank has checked the folder before rank 0 writes to it
        if not ctx.is_main:
            return _train_locked(cfg, out_dir, state, lambda s: None, False, max_steps, ctx, profile)
        created = not out_dir.exists()
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the output folder {out_dir}: {exc.strerror}") from None
        try:
            with ckpt.run_lock(out_dir):
                return _train_locked(cfg, out_dir, state, log, progress, max_steps, ctx, profile)
        except BaseException:
            # Bad data or options found before the run was recorded: leave no empty run folder behind.
            if created and not any(out_dir.iterdir()):
                out_dir.rmdir()
            raise
    finally:
        distributed.teardown(ctx)


def _train_locked(cfg: RunConfig, out_dir: Path, state: dict[str, Any] | None, log: Callable[[str], None],
                  progress: bool, max_steps: int | None, ctx: distributed.DistContext,
                  profile: bool = False) -> TrainResult:
    t = cfg.train
    started = time.perf_counter()
    tune_malloc()
    if t.threads:
        torch.set_num_threads(t.threads)
    device = resolve_device(t.device)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    main = ctx.is_main
    use_bf16 = t.bf16 and bf16_supported(device.type)

    # Data: load, carve validation, build the encoder on training texts, encode once.
    splits = load_training_data(cfg)
    labels = splits.label_names
    fit_length = cfg.auto and "encoder.max_length" not in cfg.explicit
    if cfg.auto:
        for line in apply_recipe(cfg, splits.train.texts, splits.train.labels, len(labels)):
            log(line)
    if state is not None:
        meta = ckpt.read_config(out_dir)
        encoder = encoder_from_dict(meta["encoder"])
    else:
        encoder = build_encoder(cfg.encoder.name, splits.train.texts, cfg.encoder.vocab_size)
    if encoder.name == "char" and (coverage := char_coverage(splits.train.texts)) < 0.5:
        log(f"WARNING: the character encoder's alphabet spells only {coverage:.0%} of the characters of "
            f"{splits.train.source}; the rest are read as one 'unknown' id. Use --encoder subword or byte.")
    train_set = encode_texts(encoder, splits.train.texts, splits.train.labels, cfg.encoder.max_length)
    if fit_length:
        cfg.encoder.max_length = choose_max_length(train_set.lengths)
        train_set = train_set.truncated(cfg.encoder.max_length)
        log(f"  max length {cfg.encoder.max_length} ids (98 % of the training texts fit whole)")
    max_len = cfg.encoder.max_length
    val_set = encode_texts(encoder, splits.val.texts, splits.val.labels, max_len)
    test_txt = f"{len(splits.test)} test rows" if splits.test is not None else "no test split"
    log(f"data: {splits.train.source}: {len(train_set)} train rows, validation {splits.val_note}, {test_txt}, "
        f"{len(labels)} classes ({', '.join(labels)}); encoder {encoder.name} (vocab {encoder.vocab_size}), "
        f"max length {max_len}, mean length {train_set.lengths.mean():.0f}")

    # Model and optimiser.
    torch.manual_seed(t.seed)
    model_config = cfg.model_config(encoder.vocab_size, len(labels), encoder.pad_id)
    model = VDCNN(model_config).to(device)
    if t.sync_bn:
        for m in model.modules():
            if isinstance(m, MaskedBatchNorm1d):
                m.sync = True
    net: torch.nn.Module = model
    if ctx.enabled:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    ema = copy.deepcopy(model) if t.ema_decay > 0 else None
    optimizer = make_optimizer(cfg, model)
    steps_per_epoch = math.ceil(len(train_set) / t.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(cfg, steps_per_epoch))
    trim = t.bucket and model_config.mask_padding
    log(f"model: VDCNN depth {model_config.conv_layers} (stages {list(model_config.blocks)}), "
        f"shortcut {'on (' + model_config.shortcut_kind + ')' if model_config.shortcut else 'off'}, "
        f"downsample {model_config.downsample}, {count_parameters(model) / 1e6:.2f} M parameters, "
        f"{forward_flops(model_config, max_len) / 1e9:.2f} GFLOPs per text at length {max_len}; "
        f"device {device}{' (bf16 autocast)' if use_bf16 else ''}"
        f"{f', {ctx.world_size} processes (DDP)' if ctx.enabled else ''}")

    meta = ckpt.make_meta(model_config, encoder, labels, cfg.to_dict(), data_source=splits.train.source,
                          parameters=count_parameters(model), flops=forward_flops(model_config, max_len),
                          label_rule=splits.label_rule.to_dict())
    start_epoch, skip_steps, global_step, elapsed_before = 0, 0, 0, 0.0
    best_acc, best_epoch, stale_epochs = float("-inf"), -1, 0  # -inf: without validation the score is -loss
    history: list[dict[str, Any]] = []
    epoch_sums = _fresh_epoch_sums(len(model.stages))
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if ema is not None and "ema" in state:
                ema.load_state_dict(state["ema"])
            start_epoch, skip_steps, global_step = state["epoch"], state["step_in_epoch"], state["global_step"]
            best_acc, best_epoch, stale_epochs = state["best_acc"], state["best_epoch"], state["stale_epochs"]
            epoch_sums = state.get("epoch_sums", epoch_sums)
            elapsed_before = float(state.get("elapsed_s", 0.0))
            torch.set_rng_state(state["torch_rng"])
        except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as exc:
            first = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise CheckpointError(f"{out_dir / ckpt.STATE_FILE} does not fit this run's config.json "
                                  f"({type(exc).__name__}: {first})") from None
        # Rows of epochs after the saved state (a kill between the metrics line and the state save)
        # are dropped: those epochs are trained again.
        rows = ckpt.read_metrics(out_dir)
        history = [r for r in rows if isinstance(r.get("epoch"), int) and r["epoch"] <= start_epoch]
        if main and len(history) != len(rows):
            ckpt.write_text(out_dir / ckpt.METRICS_FILE, "".join(_json(r) + "\n" for r in history))
        log(f"resuming at epoch {start_epoch + 1}, step {skip_steps} of {steps_per_epoch}")
        meta["best"] = ckpt.read_config(out_dir).get("best")
    elif main:
        ckpt.write_json(out_dir / ckpt.CONFIG_FILE, meta)

    def save_state(epoch: int, step_in_epoch: int) -> None:
        if not main:
            return
        ckpt.save_state(out_dir / ckpt.STATE_FILE, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            **({"ema": ema.state_dict()} if ema is not None else {}),
            "epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step,
            "best_acc": best_acc, "best_epoch": best_epoch, "stale_epochs": stale_epochs,
            "epoch_sums": epoch_sums, "torch_rng": torch.get_rng_state(),
            "elapsed_s": elapsed_before + time.perf_counter() - started,
        })

    if state is None:
        save_state(0, 0)  # resumable from the first step on: a kill now never leaves config.json without last.pt

    from .progress import EpochProgress

    timer = PhaseTimer(profile, device)

    with _StopFlag() as stop:
        for epoch in range(start_epoch, t.epochs):
            model.train()
            epoch_start = time.perf_counter()
            batches = batch_order(train_set.lengths, t.batch_size, np.random.default_rng([t.seed, epoch]), t.bucket)
            with EpochProgress(f"epoch {epoch + 1}/{t.epochs}", len(batches), enabled=progress) as bar:
                bar.advance(skip_steps)
                for step in range(skip_steps, len(batches)):
                    stopping = stop.signal is not None or (max_steps is not None and global_step >= max_steps)
                    if distributed.any_across(stopping, ctx, device):
                        save_state(epoch, step)
                        why = "interrupted" if stop.signal is not None else f"stopped after {global_step} steps"
                        raise TrainingInterrupted(
                            f"{why}: state saved at epoch {epoch + 1}, step {step}; continue with "
                            f"`vdcnn train --resume --out {out_dir}`")
                    with timer.phase("data"):
                        ids, lengths, y = make_batch(train_set, batches[step][ctx.rank::ctx.world_size], trim, device)
                        gen = torch.Generator().manual_seed(hash((t.seed, epoch, step)) & 0x7FFFFFFF)
                        if t.augment_crop:
                            ids, lengths = random_crop(ids.cpu(), lengths.cpu(), t.augment_crop, gen)
                            ids, lengths = ids.to(device), lengths.to(device)
                        if t.augment_noise:
                            ids = char_noise(ids.cpu(), lengths.cpu(), t.augment_noise, encoder.vocab_size,
                                             gen).to(device)
                    with timer.phase("forward"), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                        logits = net(ids, lengths)
                        loss = F.cross_entropy(logits.float(), y, label_smoothing=t.label_smoothing)
                    if distributed.any_across(not bool(torch.isfinite(loss)), ctx, device):
                        if t.nan_policy == "skip":
                            if not _finite(model):
                                raise TrainingDiverged(
                                    f"loss became {float(loss.detach())} at epoch {epoch + 1}, step {step + 1} because the "
                                    f"weights themselves are no longer finite: skipping batches cannot recover; "
                                    f"the best checkpoint is kept. Lower --lr or add gradient clipping")
                            epoch_sums["skipped"] += 1
                            optimizer.zero_grad(set_to_none=True)
                            global_step += 1
                            scheduler.step()
                            continue
                        raise TrainingDiverged(
                            f"loss became {float(loss.detach())} at epoch {epoch + 1}, step {step + 1}; the best checkpoint "
                            f"is kept. Lower --lr, add gradient clipping, or set train.nan_policy: skip")
                    with timer.phase("backward"):
                        optimizer.zero_grad(set_to_none=True)
                        loss.backward()
                    with timer.phase("optimiser"):
                        if global_step % 10 == 0:
                            for i, g in enumerate(stage_grad_norms(model)):
                                epoch_sums["grad"][i] += g
                            epoch_sums["grad_n"] += 1
                        if t.grad_clip:
                            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
                        optimizer.step()
                        scheduler.step()
                        global_step += 1
                        if ema is not None:
                            with torch.no_grad():
                                for pe, pm in zip(ema.parameters(), model.parameters()):
                                    pe.lerp_(pm, 1 - t.ema_decay)
                                if not t.ema_bn_batches:  # else recomputed before each validation
                                    for be, bm in zip(ema.buffers(), model.buffers()):
                                        be.copy_(bm)
                    epoch_sums["loss"] += float(loss.detach()) * len(y)
                    epoch_sums["correct"] += int((logits.argmax(1) == y).sum())
                    epoch_sums["seen"] += len(y)
                    bar.update(loss=epoch_sums["loss"] / epoch_sums["seen"],
                               rate=epoch_sums["seen"] / max(1e-9, time.perf_counter() - epoch_start))

            # Validation, best model, metrics, resumable state.
            scored = ema if ema is not None else model
            if ema is not None and t.ema_bn_batches:
                with timer.phase("bn recalibration"):
                    recal = batch_order(train_set.lengths, t.batch_size, np.random.default_rng([t.seed, epoch, 1]),
                                        t.bucket)[: t.ema_bn_batches]
                    recalibrate_batchnorm(ema, (make_batch(train_set, b[ctx.rank::ctx.world_size], trim, device)[:2]
                                                for b in recal))
            with timer.phase("validation"):
                val = _score(scored, val_set, labels, t.batch_size, device, trim)
            totals = distributed.sum_across([epoch_sums["loss"], epoch_sums["correct"], epoch_sums["seen"]], ctx, device)
            epoch_sums["loss"], epoch_sums["correct"], epoch_sums["seen"] = totals[0], int(totals[1]), int(totals[2])
            seen = max(1, epoch_sums["seen"])
            row = {
                "epoch": epoch + 1,
                "train_loss": epoch_sums["loss"] / seen,
                "train_acc": epoch_sums["correct"] / seen,
                "val_loss": val.get("loss") if val else None,
                "val_acc": val["accuracy"] if val else None,
                "lr": optimizer.param_groups[0]["lr"],
                "time_s": round(time.perf_counter() - epoch_start, 2),
                "samples_per_s": round(seen / max(1e-9, time.perf_counter() - epoch_start), 1),
                "grad_norm": {f"stage{i + 1}": g / max(1, epoch_sums["grad_n"]) for i, g in enumerate(epoch_sums["grad"])},
                "skipped_steps": epoch_sums["skipped"],
            }
            if profile:
                row["profile_s"] = timer.reset()
            score = row["val_acc"] if row["val_acc"] is not None else -row["train_loss"]
            improved = (score > best_acc and math.isfinite(row["train_loss"]) and _finite(scored)
                        and (row["val_loss"] is None or math.isfinite(row["val_loss"])))  # never save a NaN model
            if improved:
                best_acc, best_epoch, stale_epochs = score, epoch + 1, 0
                meta["best"] = {"epoch": epoch + 1, "val_acc": row["val_acc"], "val_loss": row["val_loss"]}
                if main:
                    ckpt.save_weights(out_dir / ckpt.WEIGHTS_FILE, scored)
                    ckpt.write_json(out_dir / ckpt.CONFIG_FILE, meta)
            else:
                stale_epochs += 1
            row["best"] = improved
            history.append(row)
            if main:
                ckpt.append_line(out_dir / ckpt.METRICS_FILE, _json(row))
            epoch_sums = _fresh_epoch_sums(len(model.stages))
            skip_steps = 0
            save_state(epoch + 1, 0)
            val_txt = f"val loss {row['val_loss']:.4f} acc {row['val_acc'] * 100:.2f} %" if val else "no validation"
            log(f"epoch {epoch + 1}/{t.epochs}: train loss {row['train_loss']:.4f} acc {row['train_acc'] * 100:.2f} %, "
                f"{val_txt}, {row['samples_per_s']:.0f} texts/s{'  (best, saved)' if improved else ''}")
            if profile:
                log(f"  time per phase: {format_phases(row['profile_s'])}")
            if t.early_stop and stale_epochs >= t.early_stop:
                log(f"early stop: no validation improvement in {t.early_stop} epochs")
                break

    distributed.barrier(ctx)
    if not main:
        return TrainResult(out_dir, best_acc, best_epoch, len(history), None, time.perf_counter() - started, history)

    # Final: score the best model on the test split, if the dataset has one.
    test = None
    if not (out_dir / ckpt.WEIGHTS_FILE).exists():
        raise TrainingDiverged(f"no epoch produced a finite model, so {out_dir / ckpt.WEIGHTS_FILE} was never "
                               "written; lower --lr or add gradient clipping")
    best_model, *_ = ckpt.load_run(out_dir)
    best_model.to(device)
    if splits.test is not None:
        test_enc = encode_texts(encoder, splits.test.texts, splits.test.labels, max_len)
        test = _score(best_model, test_enc, labels, t.batch_size, device, trim)
        log(f"test ({splits.test.source}): accuracy {test['accuracy'] * 100:.2f} %, "
            f"macro-F1 {test['macro_f1'] * 100:.2f} %")
    wall = elapsed_before + time.perf_counter() - started
    meta["results"] = {
        "best_epoch": best_epoch,
        "best_val_acc": best_acc if len(val_set) else None,
        "test_acc": test["accuracy"] if test else None,
        "test_macro_f1": test["macro_f1"] if test else None,
        "final_train_loss": history[-1]["train_loss"] if history else None,
        "epochs_run": len(history),
        "wall_time_s": round(wall, 1),
    }
    ckpt.write_json(out_dir / ckpt.CONFIG_FILE, meta)
    return TrainResult(out_dir, best_acc, best_epoch, len(history), test, wall, history)


def _fresh_epoch_sums(stages: int) -> dict[str, Any]:
    """Running sums of one epoch (saved in the training state, so a resumed epoch continues them)."""
    return {"loss": 0.0, "correct": 0, "seen": 0, "grad": [0.0] * stages, "grad_n": 0, "skipped": 0}


def _finite(model: torch.nn.Module) -> bool:
    """Whether every parameter and buffer is finite (a NaN model must never become the best one)."""
    return all(bool(torch.isfinite(t).all()) for t in (*model.parameters(), *model.buffers()) if t.is_floating_point())


def _score(model: torch.nn.Module, data: Encoded, labels: list[str], batch_size: int, device: torch.device,
           trim: bool) -> dict[str, Any] | None:
    """Accuracy report in fp32 even when training ran in bf16, so it matches ``vdcnn eval``."""
    if len(data) == 0:
        return None
    logits = predict_logits(model, data.ids, data.lengths, max(batch_size, 256), device, trim)
    return classification_report(data.labels, logits.argmax(1), labels, logits)


def _json(row: dict[str, Any]) -> str:
    import json

    return json.dumps(row)
