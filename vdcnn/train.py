"""Training, read top to bottom: set up, train epochs, end each epoch, score the best model.

``train(config, out_dir)`` loads and encodes the data, builds the model and
optimiser (``_setup``), runs the epochs (``_train_epoch``; after each,
``_end_epoch`` validates, keeps the best model, logs metrics and saves the
resumable ``TrainingState``) and finally scores the best model (``_finish``).
``train(None, out_dir, resume=True)`` continues a run from its folder.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import signal
import sys
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import checkpoint as ckpt
from . import distributed
from . import multilabel as ml
from .augment import char_noise, random_crop
from .batching import Encoded, batch_order, encode_texts, make_batch
from .calibration import after_training
from .config import RunConfig
from .data import Splits, load_run_splits as load_training_data, run_label_rule
from .encoders import Encoder, build_encoder, encoder_from_dict
from .errors import CheckpointError, ConfigError, DataError, VdcnnError
from .evaluate import classification_report, predict_logits
from .layers import MaskedBatchNorm1d
from .long_text import choose_on_validation
from .model import VDCNN, count_parameters, forward_flops, inference_copy, recalibrate_batchnorm
from .optim import class_weights, lr_multiplier, make_optimizer, stage_grad_norms
from .profiling import PhaseTimer, format_phases
from .recipe import char_coverage, plan_run
from .runtime import bf16_supported, resolve_device
from .reports import format_epoch_line, format_recall_table, recalls
from .time_budget import StepClock, describe_plan, parse_duration, plan_budget
from .train_state import EpochMeter, TrainingState, capture_rng, fresh_epoch_sums, restore_rng

__all__ = ["TrainResult", "TrainingDiverged", "TrainingInterrupted", "class_weights", "lr_multiplier",
           "make_optimizer", "train"]

REFRESH_STEPS = 50  # device sums are read (and the NaN check made) at most this many steps apart
REFRESH_S = 1.0  # ... or this often, in a single process


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
    rank: int = 0  # under torchrun, the process that returned it: only rank 0's holds the test scores

    @property
    def is_main(self) -> bool:
        """Whether this is rank 0's result (the one to print, compare and build on)."""
        return self.rank == 0


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


def train(cfg: RunConfig | None, out_dir: str | Path, resume: bool = False,
          log: Callable[[str], None] = lambda s: print(s, file=sys.stderr),
          progress: bool = True, max_steps: int | None = None, profile: bool = False,
          on_epoch: Callable[[dict[str, Any]], bool] | None = None, data: Splits | None = None) -> TrainResult:
    """Train (or, with ``resume``, continue) a run into ``out_dir``.

    ``max_steps`` stops after that many optimiser steps as if interrupted (for tests).
    ``profile`` times each step's phases (data, forward, backward, optimiser) and
    reports them per epoch, in the log and in ``metrics.jsonl``. ``on_epoch`` sees each
    epoch's metrics row and returns True to end the run there (autotune's pruning). ``data``: the
    splits, already loaded (autotune's trials train on the run's own; one process only).

    Under torchrun only rank 0 reads or writes ``out_dir`` (the other ranks get the settings
    and the saved state from it), and a worker that torchrun restarts after a failure
    (``--max-restarts``) continues the run from its last saved state.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    ctx = distributed.setup()
    try:
        cfg, saved = distributed.from_main(lambda: _open_run(cfg, out_dir, resume, log), ctx)
        cfg.validate()
        if saved is None and "train.bf16" not in cfg.explicit and resolve_device(cfg.train.device).type == "cpu":
            # bf16 autocast trains ~1.1 points worse at equal epochs on CPU (benchmarks/fast_path.py,
            # 3 paired seeds); it stays the default on GPUs and is one flag away (--bf16) here.
            cfg.train.bf16 = False
        if data is not None and ctx.enabled:
            raise ConfigError("preloaded splits are for one process; under torchrun every rank reads its own")
        if not ctx.is_main:
            return _train_locked(cfg, out_dir, saved, lambda s: None, False, max_steps, ctx, profile, started, on_epoch)
        created = not out_dir.exists()
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the output folder {out_dir}: {exc.strerror}") from None
        try:
            with ckpt.run_lock(out_dir):
                return _train_locked(cfg, out_dir, saved, log, progress, max_steps, ctx, profile, started, on_epoch,
                                     data)
        except BaseException:
            # Bad data or options found before the run was recorded: leave no empty run folder behind.
            if created and {p.name for p in out_dir.iterdir()} <= {ckpt.LOCK_FILE}:
                shutil.rmtree(out_dir, ignore_errors=True)
            raise
    finally:
        distributed.teardown(ctx)


class EmaSchedule:
    """EMA decay that fits the run: ``min(decay, (1 + t) / (10 + t))`` at step t (timm's warm-up).

    A fixed 0.998 on a 300-step run would average mostly untrained weights; with the warm-up
    the average at step t spans about its last t / 9 steps until ``decay`` takes over, so a
    short run (a small dataset, a tight time budget) averages its own late weights.
    """

    def __init__(self, decay: float) -> None:
        self.decay = decay
        self.step: Callable[[], int] = lambda: 0

    def bind(self, step: Callable[[], int]) -> None:
        self.step = step

    def current(self) -> float:
        t = self.step()
        return min(self.decay, (1 + t) / (10 + t))

    @torch.no_grad()
    def __call__(self, ema_params: list[torch.Tensor], params: list[torch.Tensor], n_averaged: Any) -> None:
        torch._foreach_lerp_(ema_params, params, 1 - self.current())


def _open_run(cfg: RunConfig | None, out_dir: Path, resume: bool, log: Callable[[str], None]
              ) -> tuple[RunConfig, dict[str, Any] | None]:
    """The run's settings and saved state (None: start afresh), read from ``out_dir`` on rank 0."""
    restarts = distributed.restart_count()
    if not resume and restarts and (out_dir / ckpt.CONFIG_FILE).exists():
        log(f"restarted by torchrun (restart {restarts}): continuing the run in {out_dir}")
        resume = True
    saved = None
    if resume:
        meta = ckpt.read_config(out_dir)
        cfg = RunConfig.from_dict(meta.get("run", {}), source=str(out_dir / ckpt.CONFIG_FILE))
        if (out_dir / ckpt.STATE_FILE).exists() or (out_dir / ckpt.WEIGHTS_FILE).exists() or ckpt.read_metrics(out_dir):
            saved = ckpt.load_state(out_dir / ckpt.STATE_FILE)  # a missing last.pt after progress: refuse
            saved["_prior"] = {"meta": meta, "metrics": ckpt.read_metrics(out_dir)}  # for ranks without the folder
        else:
            # Stopped before its first checkpoint (killed while loading data): nothing to lose, the
            # recipe in config.json is all there is, so start it over (same seed, same result).
            log(f"{out_dir} has no saved training state yet (the run stopped before its first checkpoint): "
                "starting it over")
    elif cfg is None:
        raise ConfigError("a config is needed to start a new run")
    elif (out_dir / ckpt.CONFIG_FILE).exists():
        raise ConfigError(f"{out_dir} already holds a run; use --resume to continue it or choose another --out")
    return cfg, saved


@dataclass
class _Run:
    """What a run holds while it trains: settings, data, model, optimiser and the resumable state."""

    cfg: RunConfig
    out_dir: Path
    log: Callable[[str], None]
    progress: bool
    ctx: distributed.DistContext
    device: torch.device
    use_bf16: bool
    started: float  # perf_counter() when train() was called
    labels: list[str]
    encoder: Encoder
    train_set: Encoded
    val_set: Encoded
    val_texts: Sequence[str]  # the validation texts whole (the long-text default is checked on them)
    test_set: Encoded | None
    test_source: str
    model: VDCNN
    net: torch.nn.Module  # the model, wrapped for data-parallel training
    ema: torch.optim.swa_utils.AveragedModel | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    loss_weight: torch.Tensor | None
    steps_per_epoch: int
    trim: bool
    meta: dict[str, Any]
    timer: PhaseTimer
    state: TrainingState
    history: list[dict[str, Any]] = field(default_factory=list)
    save_s: float = 0.0  # time one state save took (for the time budget)
    best_val: dict[str, Any] | None = None  # validation report of the best epoch of this session
    regression: Any = None  # the linear path's regression, fitted before the network (``linear_path.Regression``)

    @property
    def main(self) -> bool:
        return self.ctx.is_main

    @property
    def total_steps(self) -> int:
        plan = self.state.time_plan
        return plan["total_steps"] if plan else self.cfg.train.epochs * self.steps_per_epoch

    @property
    def epochs_to_run(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_epoch)

    @property
    def scored_model(self) -> torch.nn.Module:
        """The weights validated and kept: the EMA's when there is one."""
        return self.ema.module if self.ema is not None else self.model

    def elapsed(self) -> float:
        return self.state.elapsed_s + time.perf_counter() - self.started

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """This rank's row indices for each step of ``epoch`` (the same order on every run)."""
        t = self.cfg.train
        return distributed.shard(batch_order(self.train_set.lengths, t.batch_size,
                                             np.random.default_rng([t.seed, epoch]), t.bucket), self.ctx)

    def save_state(self) -> None:
        rngs = distributed.gather_objects(capture_rng(self.device), self.ctx)  # every rank's, in rank order
        if not self.main:
            return
        s = self.state
        s.rng = {"cpu": [r["cpu"] for r in rngs], **({"cuda": [r["cuda"] for r in rngs]} if "cuda" in rngs[0] else {})}
        s.model, s.optimizer, s.scheduler = (self.model.state_dict(), self.optimizer.state_dict(),
                                             self.scheduler.state_dict())
        s.ema = self.ema.module.state_dict() if self.ema is not None else None
        elapsed_before, s.elapsed_s = s.elapsed_s, self.elapsed()
        begun = time.perf_counter()
        try:
            ckpt.save_state(self.out_dir / ckpt.STATE_FILE, s.to_dict())
        finally:
            s.elapsed_s = elapsed_before
            s.model, s.optimizer, s.scheduler, s.ema = {}, {}, {}, None
        self.save_s = max(self.save_s, time.perf_counter() - begun)

    def fit_schedule(self, apply_now: bool = True) -> None:
        """Stretch the learning-rate schedule over ``total_steps`` (``apply_now``: set the current rate too)."""
        factor = lr_multiplier(self.cfg, self.steps_per_epoch, self.total_steps)
        self.scheduler.lr_lambdas = [factor] * len(self.optimizer.param_groups)
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            if apply_now:
                group["lr"] = base * factor(self.scheduler.last_epoch)


def _train_locked(cfg: RunConfig, out_dir: Path, saved: dict[str, Any] | None, log: Callable[[str], None],
                  progress: bool, max_steps: int | None, ctx: distributed.DistContext, profile: bool,
                  started: float, on_epoch: Callable[[dict[str, Any]], bool] | None = None,
                  data: Splits | None = None) -> TrainResult:
    run = _setup(cfg, out_dir, saved, log, progress, ctx, profile, started, data)
    if run.cfg.train.linear_path and len(run.val_set) and not ctx.enabled and run.state.epoch < run.epochs_to_run:
        run.regression = _fit_regression(run, first=True)  # before the network: the time budget then covers it
    with _StopFlag() as stop, cudnn_autotune(run.device, run.cfg.train.bucket):
        while run.state.epoch < run.epochs_to_run:
            _train_epoch(run, stop, max_steps)
            if _end_epoch(run) or (on_epoch is not None and on_epoch(run.history[-1])):
                break
    distributed.barrier(ctx)
    return _finish(run)


@contextmanager
def cudnn_autotune(device: torch.device, bucket: bool) -> Iterator[None]:
    """cuDNN benchmark mode for this training only, and only where it pays and is allowed: on CUDA
    with length buckets (few distinct shapes, each shape's best kernel found once), never when the
    caller asked for deterministic algorithms. The caller's setting is restored after."""
    cudnn = torch.backends.cudnn
    wanted = (device.type == "cuda" and bucket and not cudnn.deterministic
              and not torch.are_deterministic_algorithms_enabled())
    before = cudnn.benchmark
    cudnn.benchmark = before or wanted
    try:
        yield
    finally:
        cudnn.benchmark = before


def _setup(cfg: RunConfig, out_dir: Path, saved: dict[str, Any] | None, log: Callable[[str], None],
           progress: bool, ctx: distributed.DistContext, profile: bool, started: float,
           data: Splits | None = None) -> _Run:
    """Data, encoder, model, optimiser and schedule; the saved state restored when resuming."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    state = TrainingState(epoch_sums=fresh_epoch_sums(0))
    prior = saved.pop("_prior", None) if saved is not None else None
    if saved is not None:
        try:
            state = TrainingState.from_dict(saved)
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"{out_dir / ckpt.STATE_FILE} is not a vdcnn training state ({exc})") from None

    splits = data if data is not None else _load_data(cfg, ctx, prior)
    labels = splits.label_names
    multi = splits.train.multi_label
    adapted = ml.adapt_config(cfg, splits.train.labels) if multi else []
    cfg, encoder, train_set, val_set, test_set = _encode_data(cfg, splits, prior, log, ctx)
    max_len = cfg.encoder.max_length
    t = cfg.train
    device = resolve_device(t.device)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank % torch.cuda.device_count())  # ranks may share a GPU
    use_bf16 = t.bf16 and bf16_supported(device.type)

    torch.manual_seed(t.seed)  # the same initial weights on every rank
    model_config = cfg.model_config(encoder.vocab_size, len(labels), encoder.pad_id)
    model = VDCNN(model_config).to(device)
    if multi:
        ml.init_output_bias(model, train_set.labels, t.class_weights)
    if t.sync_bn:
        for m in model.modules():
            if isinstance(m, MaskedBatchNorm1d):
                m.sync = True
    net: torch.nn.Module = model
    if ctx.enabled:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    torch.manual_seed(distributed.rank_seed(t.seed, ctx))  # ... but each rank its own dropout and drop-path masks
    ema = None
    ema_schedule = EmaSchedule(t.ema_decay)
    if t.ema_decay > 0:
        ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=ema_schedule, use_buffers=False)
        ema.n_averaged.fill_(1)  # the initial weights are the first average (else the first update copies)
    optimizer = make_optimizer(cfg, model)
    full_batches = distributed.shard(batch_order(train_set.lengths, t.batch_size, None, False), ctx)
    steps_per_epoch = max(1, len(full_batches))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(cfg, steps_per_epoch))
    weight = (ml.pos_weight(train_set.labels, t.class_weights).to(device) if multi else
              class_weights(train_set.labels, len(labels)).to(device) if t.class_weights == "balanced" else None)
    log(f"model: VDCNN depth {model_config.conv_layers} (stages {list(model_config.blocks)}), "
        f"shortcut {'on (' + model_config.shortcut_kind + ')' if model_config.shortcut else 'off'}, "
        f"downsample {model_config.downsample}, {count_parameters(model) / 1e6:.2f} M parameters, "
        f"{forward_flops(model_config, max_len) / 1e9:.2f} GFLOPs per text at length {max_len}; "
        f"device {device}{' (bf16 autocast)' if use_bf16 else ''}"
        f"{f', {ctx.world_size} processes (DDP)' if ctx.enabled else ''}")
    for line in adapted:
        log(line)
    if multi:
        log(f"  positive weights ({'balanced' if t.class_weights == 'balanced' else 'sqrt'} negatives/positives, "
            f"capped at {ml.POS_WEIGHT_CAP:g}): " + ", ".join(f"{n} {w:.2f}" for n, w in zip(labels, weight.tolist())))
    elif weight is not None:
        log("  class weights (balanced): " + ", ".join(f"{n} {w:.2f}" for n, w in zip(labels, weight.tolist())))

    meta = ckpt.make_meta(model_config, encoder, labels, cfg.to_dict(), data_source=splits.train.source,
                          parameters=count_parameters(model), flops=forward_flops(model_config, max_len),
                          label_rule=splits.label_rule.to_dict())
    if cfg.search is not None:
        meta["autotune"] = cfg.search
    run = _Run(cfg=cfg, out_dir=out_dir, log=log, progress=progress, ctx=ctx, device=device, use_bf16=use_bf16,
               started=started, labels=labels, encoder=encoder, train_set=train_set, val_set=val_set,
               val_texts=splits.val.texts, test_set=test_set,
               test_source=splits.test.source if splits.test is not None else "", model=model, net=net, ema=ema,
               optimizer=optimizer, scheduler=scheduler, loss_weight=weight,
               steps_per_epoch=steps_per_epoch, trim=t.bucket and model_config.mask_padding, meta=meta,
               timer=PhaseTimer(profile, device), state=state)
    ema_schedule.bind(lambda: run.state.global_step)
    if saved is not None:
        _restore(run, prior)
    else:
        state.epoch_sums = fresh_epoch_sums(len(model.stages))
        if run.main:
            ckpt.write_json(out_dir / ckpt.CONFIG_FILE, meta)
        run.save_state()  # resumable from the first step on: a kill now never leaves config.json without last.pt
    return run


def _load_data(cfg: RunConfig, ctx: distributed.DistContext, prior: dict[str, Any] | None) -> Splits:
    """The splits, read by every rank from its own copy of the data under rank 0's label rule
    (a resumed run's, else the one rank 0 decides); a rank whose copy differs stops the job."""
    rule = None
    if prior and "label_rule" in prior["meta"]:  # the rule the run was trained under
        rule = run_label_rule(prior["meta"], "config.json")
    splits = load_training_data(cfg, rule) if ctx.is_main else None
    if ctx.enabled:
        rule = distributed.from_main(lambda: splits.label_rule, ctx)
        if not ctx.is_main:
            splits = load_training_data(cfg, rule)
        assert splits is not None
        mine = (len(splits.train), len(splits.val), zlib.crc32(np.ascontiguousarray(splits.train.labels).tobytes()))
        theirs = distributed.gather_objects(mine, ctx)
        if any(x != theirs[0] for x in theirs):
            bad = next(r for r, x in enumerate(theirs) if x != theirs[0])
            raise DataError(f"rank {bad} read other training rows from {cfg.data.dataset} than rank 0 "
                            f"({theirs[bad][0]:,} vs {theirs[0][0]:,} rows, or other labels): every machine needs "
                            "the same copy of the data")
    assert splits is not None
    return splits


def _encode_data(cfg: RunConfig, splits: Splits, prior: dict[str, Any] | None, log: Callable[[str], None],
                 ctx: distributed.DistContext) -> tuple[RunConfig, Encoder, Encoded, Encoded, Encoded | None]:
    """Decide the run (rank 0), then encode every split once.

    Under the automatic recipe rank 0 plans the run from the loaded splits (``recipe.plan_run``,
    with autotune where it qualifies); a preset builds its encoder as it says; a resumed run reads
    its encoder back. The other ranks take rank 0's settings and encoder, so every rank encodes
    with the same vocabulary."""
    labels = splits.label_names

    def decide() -> tuple[RunConfig, dict[str, Any]]:
        nonlocal cfg
        if prior is not None:
            encoder = encoder_from_dict(prior["meta"]["encoder"])
        elif cfg.auto:
            cfg, encoder = _plan(cfg, splits, log, autotune=not ctx.enabled)
        else:
            encoder = build_encoder(cfg.encoder.name, splits.train.texts, cfg.encoder.vocab_size)
        if encoder.name == "char" and (coverage := char_coverage(splits.train.texts)) < 0.5:
            log(f"WARNING: the character encoder's alphabet spells only {coverage:.0%} of the characters of "
                f"{splits.train.source}; the rest are read as one 'unknown' id. Use --encoder subword or byte.")
        return cfg, encoder.to_dict()

    cfg, encoder_dict = distributed.from_main(decide, ctx)
    encoder = encoder_from_dict(encoder_dict)
    max_len = cfg.encoder.max_length
    train_set = encode_texts(encoder, splits.train.texts, splits.train.labels, max_len)
    val_set = encode_texts(encoder, splits.val.texts, splits.val.labels, max_len)
    test_set = (encode_texts(encoder, splits.test.texts, splits.test.labels, max_len)
                if splits.test is not None else None)
    test_txt = f"{len(splits.test)} test rows" if splits.test is not None else "no test split"
    log(f"data: {splits.train.source}: {splits.rows_read:,} rows read; {len(train_set):,} train rows, "
        f"validation {splits.val_note}, {test_txt}, "
        f"{len(labels)} classes ({', '.join(labels)}); encoder {encoder.name} (vocab {encoder.vocab_size}), "
        f"max length {max_len}, mean length {train_set.lengths.mean():.0f}")
    for note in splits.notes:
        log(f"  {note}")
    return cfg, encoder, train_set, val_set, test_set


def _plan(cfg: RunConfig, splits: Splits, log: Callable[[str], None], autotune: bool
          ) -> tuple[RunConfig, Encoder]:
    """The automatic recipe's plan for this run, with autotune's choice where the run qualifies
    (``autotune.should_autotune``, and one process: trials are not run under torchrun)."""
    from . import autotune as search

    plan = plan_run(cfg, splits)
    for line in plan.lines:
        log(line)
    summary = None
    if autotune and search.should_autotune(cfg) and plan.config.train.time_budget:
        summary = search.autotune(cfg, plan, splits, parse_duration(plan.config.train.time_budget), log, train)
        if summary.get("settings"):
            plan = plan_run(cfg, splits)  # the winner's settings are explicit on cfg now
            log("the chosen recipe:")
            for line in plan.lines[1:]:
                log(line)
    plan.config.search = summary
    return plan.config, plan.encoder


def _restore(run: _Run, prior: dict[str, Any] | None) -> None:
    """Load the saved modules, optimiser, schedule and RNG states into a freshly built run
    (``prior``: the run folder's config.json and metrics rows, read by rank 0)."""
    s, out_dir = run.state, run.out_dir
    try:
        run.model.load_state_dict(s.model)
        run.optimizer.load_state_dict(s.optimizer)
        if s.time_plan:
            run.fit_schedule(apply_now=False)  # the saved optimiser holds the current rate
        run.scheduler.load_state_dict(s.scheduler)
        if run.ema is not None and s.ema is not None:
            run.ema.module.load_state_dict(s.ema)
        restore_rng(s.rng, run.ctx.rank, run.device)
        if len(s.epoch_sums.get("grad", [])) != len(run.model.stages):
            raise ValueError("per-stage sums of another depth")
    except (KeyError, RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise CheckpointError(f"{out_dir / ckpt.STATE_FILE} does not fit this run's config.json "
                              f"({type(exc).__name__}: {first})") from None
    s.model, s.optimizer, s.scheduler, s.ema = {}, {}, {}, None  # the live modules hold them now
    # Rows of epochs after the saved state (a kill between the metrics line and the state save)
    # are dropped: those epochs are trained again.
    rows = prior["metrics"] if prior else []
    run.history = [r for r in rows if isinstance(r.get("epoch"), int) and r["epoch"] <= s.epoch]
    if run.main and len(run.history) != len(rows):
        ckpt.write_text(out_dir / ckpt.METRICS_FILE, "".join(_json(r) + "\n" for r in run.history))
    plan = f" (time plan kept: {s.time_plan['total_steps']:,} steps)" if s.time_plan else ""
    run.log(f"resuming at epoch {s.epoch + 1}, step {s.step_in_epoch} of {run.steps_per_epoch}{plan}")
    run.meta["best"] = prior["meta"].get("best") if prior else None
    if prior and prior["meta"].get("autotune") is not None:
        run.meta["autotune"] = prior["meta"]["autotune"]
    if s.time_plan:
        run.meta["time_plan"] = s.time_plan


def _train_epoch(run: _Run, stop: _StopFlag, max_steps: int | None) -> None:
    """The optimiser steps of one epoch (from ``state.step_in_epoch``, when resuming mid-epoch)."""
    from .progress import EpochProgress

    s, t, ctx, timer = run.state, run.cfg.train, run.ctx, run.timer
    batches = run.epoch_batches(s.epoch)
    meter = EpochMeter(len(run.model.stages), run.device)
    budget = parse_duration(t.time_budget) if t.time_budget and s.time_plan is None else None
    run.model.train()
    epoch_start = last_read = time.perf_counter()
    seen_before, first_unread = s.epoch_sums["seen"], s.step_in_epoch
    clock = StepClock(lockstep=ctx.enabled)
    with EpochProgress(f"epoch {s.epoch + 1}/{run.epochs_to_run}", len(batches), enabled=run.progress) as bar:
        bar.advance(s.step_in_epoch)
        for step in range(s.step_in_epoch, len(batches)):
            if s.global_step >= run.total_steps:
                break  # a time budget ends this epoch early
            local_stop = max_steps is not None and s.global_step >= max_steps
            if local_stop or (stop.signal is not None and not ctx.enabled):
                _interrupt(run, stop, meter, first_unread)
            with timer.phase("data"):
                ids, lengths, y = _training_batch(run, batches[step], step)
            loss, logits = _train_step(run, ids, lengths, y, meter)
            if loss is None:  # skipped (nan_policy skip)
                continue
            s.step_in_epoch = step + 1
            bar.advance(1)
            now = time.perf_counter()
            if budget is not None and s.time_plan is None:
                _measure_or_plan(run, clock, budget, step == len(batches) - 1, len(y))
            due = (step + 1 - first_unread) % REFRESH_STEPS == 0 or (not ctx.enabled and now - last_read >= REFRESH_S)
            if due:
                _read_meter(run, meter, first_unread)
                first_unread, last_read = step + 1, now
                seen = s.epoch_sums["seen"] - seen_before
                bar.show(loss=s.epoch_sums["loss"] / max(1, s.epoch_sums["seen"]),
                         rate=seen * ctx.world_size / max(1e-9, now - epoch_start))
                if ctx.enabled and distributed.any_across(stop.signal is not None, ctx, run.device):
                    _interrupt(run, stop, meter, first_unread)
    _read_meter(run, meter, first_unread)
    s.epoch_sums["time_s"] = s.epoch_sums.get("time_s", 0.0) + time.perf_counter() - epoch_start


def _training_batch(run: _Run, index: np.ndarray, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch on the device, augmented there when asked (a seeded generator per step)."""
    t = run.cfg.train
    ids, lengths, y = make_batch(run.train_set, index, run.trim, run.device)
    if t.augment_crop or t.augment_noise:
        gen = torch.Generator(device=ids.device).manual_seed(augment_seed(t.seed, run.state.epoch, step, run.ctx))
        if t.augment_crop:
            ids, lengths = random_crop(ids, lengths, t.augment_crop, gen)
        if t.augment_noise:
            ids = char_noise(ids, lengths, t.augment_noise, run.encoder.vocab_size, gen)
    return ids, lengths, y


def augment_seed(seed: int, epoch: int, step: int, ctx: distributed.DistContext) -> int:
    """The seed of one step's augmentation draws: the same on every run, another on every rank."""
    key = (seed, epoch, step) if not ctx.enabled else (seed, epoch, step, ctx.rank)
    return hash(key) & 0x7FFFFFFF


def _train_step(run: _Run, ids: torch.Tensor, lengths: torch.Tensor, y: torch.Tensor, meter: EpochMeter
                ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Forward, backward, optimiser, schedule and EMA for one batch; no host synchronisation
    (except under nan_policy skip, which must look at each loss)."""
    s, t, timer = run.state, run.cfg.train, run.timer
    with timer.phase("forward"), torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.use_bf16):
        logits = run.net(ids, lengths)
        loss = (ml.loss(logits, y, run.loss_weight) if y.ndim == 2 else
                F.cross_entropy(logits.float(), y, weight=run.loss_weight, label_smoothing=t.label_smoothing))
    if t.nan_policy == "skip" and distributed.any_across(not bool(torch.isfinite(loss)), run.ctx, run.device):
        if not _finite(run.model):
            raise TrainingDiverged(
                f"loss became {float(loss.detach())} at epoch {s.epoch + 1}, step {s.step_in_epoch + 1} because "
                f"the weights themselves are no longer finite: skipping batches cannot recover; "
                f"the best checkpoint is kept. Lower --lr or add gradient clipping")
        s.epoch_sums["skipped"] += 1
        run.optimizer.zero_grad(set_to_none=True)
        s.global_step += 1
        s.step_in_epoch += 1
        run.scheduler.step()
        return None, None
    with timer.phase("backward"):
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
    with timer.phase("optimiser"):
        if s.global_step % 10 == 0:
            meter.add_grad_norms(stage_grad_norms(run.model))
        if t.grad_clip:
            torch.nn.utils.clip_grad_norm_(run.model.parameters(), t.grad_clip)
        run.optimizer.step()
        run.scheduler.step()
        s.global_step += 1
        if run.ema is not None:
            # Averages the weights and copies the live BatchNorm buffers (use_buffers=False); with
            # ema_bn_batches the buffers are recomputed for the averaged weights before each validation.
            run.ema.update_parameters(run.model)
    meter.add(loss, logits, y)
    return loss, logits


def _read_meter(run: _Run, meter: EpochMeter, first_unread: int) -> None:
    """Move the device sums into the state; a non-finite loss since the last read stops the run."""
    bad = meter.flush(run.state.epoch_sums)
    if distributed.any_across(bad, run.ctx, run.device):  # every rank reads at the same steps
        s = run.state
        raise TrainingDiverged(
            f"the loss became NaN or infinite at epoch {s.epoch + 1}, between steps {first_unread + 1} and "
            f"{s.step_in_epoch}; the best checkpoint is kept. Lower --lr, add gradient clipping, "
            f"or set train.nan_policy: skip")


def _interrupt(run: _Run, stop: _StopFlag, meter: EpochMeter, first_unread: int) -> None:
    _read_meter(run, meter, first_unread)  # never save a state that took a NaN step; sums saved with it
    run.save_state()
    distributed.barrier(run.ctx)  # ranks leave together: one that tears down while rank 0 still writes can abort
    s = run.state
    why = "interrupted" if stop.signal is not None else f"stopped after {s.global_step} steps"
    raise TrainingInterrupted(f"{why}: state saved at epoch {s.epoch + 1}, step {s.step_in_epoch}; continue with "
                              f"`vdcnn train --resume --out {run.out_dir}`")


def _measure_or_plan(run: _Run, clock: StepClock, budget_s: float, epoch_done: bool, rows: int) -> None:
    """Time the steps after a short warm-up; once enough are timed, fit the run into the budget."""
    s, t = run.state, run.cfg.train
    if run.device.type == "cuda":
        torch.cuda.synchronize(run.device)
    if not clock.tick(time.perf_counter(), rows, budget_s, epoch_done or s.global_step >= run.total_steps):
        return
    recalibration = t.ema_bn_batches * t.batch_size if run.ema is not None and t.ema_bn_batches else 0
    plan = plan_budget(budget_s, run.elapsed(), s.global_step, clock.step_s, run.steps_per_epoch, t.epochs,
                       texts_per_s=clock.rows_per_s * run.ctx.world_size, eval_texts_per_s=_inference_rate(run),
                       epoch_eval_rows=len(run.val_set) + recalibration,
                       final_eval_rows=len(run.val_set) + (len(run.test_set) if run.test_set is not None else 0),
                       save_s=run.save_s)
    total = int(distributed.broadcast_values([float(plan.total_steps)], run.ctx, run.device)[0])  # rank 0's plan for all
    plan = dataclasses.replace(plan, total_steps=total)
    s.time_plan = plan.to_dict()
    run.meta["time_plan"] = s.time_plan
    run.fit_schedule()
    run.log(describe_plan(plan, t.time_budget, t.epochs))


def _inference_rate(run: _Run) -> float:
    """Texts per second of the model in inference (timed on up to 512 validation or training rows)."""
    sample = run.val_set if len(run.val_set) else run.train_set
    n = min(len(sample), 512)
    begun = time.perf_counter()
    predict_logits(inference_copy(run.model), sample.ids[:n], sample.lengths[:n], max(run.cfg.train.batch_size, 256),
                   run.device, run.trim)
    run.model.train()
    return n / max(1e-6, time.perf_counter() - begun)


def _end_epoch(run: _Run) -> bool:
    """Validate, keep the best model, log the epoch and save the state; True when early stopping ends the run."""
    s, t, ctx = run.state, run.cfg.train, run.ctx
    scored = run.scored_model
    if run.ema is not None and t.ema_bn_batches:
        with run.timer.phase("bn recalibration"):
            recal = distributed.shard(batch_order(run.train_set.lengths, t.batch_size,
                                                  np.random.default_rng([t.seed, s.epoch, 1]), t.bucket), ctx)
            recalibrate_batchnorm(scored, (make_batch(run.train_set, b, run.trim, run.device)[:2]
                                           for b in recal[: t.ema_bn_batches]))
    val_begun = time.perf_counter()
    with run.timer.phase("validation"):
        val = _score(scored, run.val_set, run.labels, t.batch_size, run.device, run.trim)
    val_s = time.perf_counter() - val_begun
    sums = s.epoch_sums
    totals = distributed.sum_across([sums["loss"], sums["correct"], sums["seen"]], ctx, run.device)
    seen = max(1, int(totals[2]))
    epoch_time = sums.get("time_s", 0.0)
    row = {
        "epoch": s.epoch + 1,
        "train_loss": totals[0] / seen,
        "train_acc": totals[1] / seen,
        "val_loss": val.get("loss") if val else None,
        "val_acc": val["accuracy"] if val else None,
        "val_macro_f1": val["macro_f1"] if val else None,
        "lr": run.optimizer.param_groups[0]["lr"],
        "time_s": round(epoch_time + val_s, 2),
        "samples_per_s": round(seen / max(1e-9, epoch_time), 1),
        **({"val_micro_f1": val["micro_f1"]} if val and "micro_f1" in val else {}),
        "grad_norm": {f"stage{i + 1}": g / max(1, sums["grad_n"]) for i, g in enumerate(sums["grad"])},
        "skipped_steps": sums["skipped"],
    }
    if s.step_in_epoch < run.steps_per_epoch:
        row["steps"] = s.step_in_epoch  # a time budget ended this epoch early
    if run.timer.enabled:
        row["profile_s"] = run.timer.reset()
    improved = _judge(run, row, _finite(scored))
    if improved:
        run.best_val = val
    row["best"] = improved
    run.history.append(row)
    if run.main:
        ckpt.append_line(run.out_dir / ckpt.METRICS_FILE, _json(row))
    epochs = run.epochs_to_run
    s.epoch, s.step_in_epoch, s.epoch_sums = s.epoch + 1, 0, fresh_epoch_sums(len(run.model.stages))
    run.save_state()
    run.log(format_epoch_line(row, epochs, improved))
    if run.timer.enabled:
        run.log(f"  time per phase: {format_phases(row['profile_s'])}")
    if t.early_stop and s.stale_epochs >= t.early_stop:
        run.log(f"early stop: no validation improvement ({t.select_by}) in {t.early_stop} epochs")
        return True
    return False


def _judge(run: _Run, row: dict[str, Any], finite: bool) -> bool:
    """Whether this epoch is the best so far (decided on rank 0, the same on every rank); saves it if so."""
    s, t = run.state, run.cfg.train
    key = {"macro_f1": "val_macro_f1", "micro_f1": "val_micro_f1"}.get(t.select_by, "val_acc")
    if key not in row:  # single-label: micro-F1 is accuracy
        key = "val_acc"
    score = row[key] if row[key] is not None else -row["train_loss"]
    sane = (math.isfinite(row["train_loss"]) and finite
            and (row["val_loss"] is None or math.isfinite(row["val_loss"])))  # never save a NaN model
    score, sane_f = distributed.broadcast_values([score, float(sane)], run.ctx, run.device)
    improved = score > s.best_score and sane_f > 0
    if improved:
        s.best_score, s.best_epoch, s.stale_epochs = score, row["epoch"], 0
        run.meta["best"] = {"epoch": row["epoch"], "val_acc": row["val_acc"], "val_loss": row["val_loss"],
                            "val_macro_f1": row["val_macro_f1"], "select_by": t.select_by,
                            **({"val_micro_f1": row["val_micro_f1"]} if "val_micro_f1" in row else {})}
        if run.main:
            ckpt.save_weights(run.out_dir / ckpt.WEIGHTS_FILE, run.scored_model)
            ckpt.write_json(run.out_dir / ckpt.CONFIG_FILE, run.meta)
    else:
        s.stale_epochs += 1
    return improved


def _finish(run: _Run) -> TrainResult:
    """Score the best model on validation and test, log per-class recall and record the results."""
    s, t, out_dir = run.state, run.cfg.train, run.out_dir
    best_row = next((r for r in run.history if r["epoch"] == s.best_epoch), None)
    best_acc = best_row["val_acc"] if best_row and best_row["val_acc"] is not None else s.best_score
    if not run.main:
        return TrainResult(out_dir, best_acc, s.best_epoch, len(run.history), None, run.elapsed(), run.history,
                           rank=run.ctx.rank)
    if not (out_dir / ckpt.WEIGHTS_FILE).exists():
        raise TrainingDiverged(f"no epoch produced a finite model, so {out_dir / ckpt.WEIGHTS_FILE} was never "
                               "written; lower --lr or add gradient clipping")
    best_model, *_ = ckpt.load_run(out_dir)
    best_model.to(run.device)
    combined = False
    if t.linear_path and len(run.val_set) and s.best_epoch > 0:
        best_model, combined = _fit_linear_path(run, best_model)
    best_model = inference_copy(best_model)  # saved by now: from here on it is only scored
    fitted = _fit_multilabel(run, best_model) if run.val_set.labels.ndim == 2 else None
    val = None if combined else run.best_val  # scored when it was the best epoch; a resumed run may not have seen it
    if (val is None and s.best_epoch > 0) or fitted is not None:
        val = _score(best_model, run.val_set, run.labels, t.batch_size, run.device, run.trim, fitted)
    test = None
    if run.test_set is not None:
        test = _score(best_model, run.test_set, run.labels, t.batch_size, run.device, run.trim, fitted)
        run.log(f"test ({run.test_source}): " + (
            f"micro-F1 {test['micro_f1'] * 100:.2f} %, macro-F1 {test['macro_f1'] * 100:.2f} %, samples-F1 "
            f"{test['samples_f1'] * 100:.2f} %, subset accuracy {test['accuracy'] * 100:.2f} %" if fitted is not None
            else f"accuracy {test['accuracy'] * 100:.2f} %, macro-F1 {test['macro_f1'] * 100:.2f} %"))
    if val or test:
        for line in format_recall_table(run.labels, val, test):
            run.log(line)
    wall = run.elapsed()
    run.meta["results"] = {
        "best_epoch": s.best_epoch,
        "best_val_acc": best_acc if len(run.val_set) else None,
        "best_val_macro_f1": val["macro_f1"] if val else None,
        "val_acc": val["accuracy"] if val else None,  # the saved model's: the linear path included, where kept
        "select_by": t.select_by,
        "val_per_class_recall": recalls(val),
        "test_acc": test["accuracy"] if test else None,
        "test_macro_f1": test["macro_f1"] if test else None,
        "test_per_class_recall": recalls(test),
        "final_train_loss": run.history[-1]["train_loss"] if run.history else None,
        "epochs_run": len(run.history),
        "steps_run": s.global_step,
        "wall_time_s": round(wall, 1),
    }
    if fitted is not None:
        run.meta["results"].update(best_val_micro_f1=val["micro_f1"] if val else None,
                                   test_micro_f1=test["micro_f1"] if test else None,
                                   test_samples_f1=test["samples_f1"] if test else None)
        run.meta.update(fitted)
    run.meta.update(after_training(best_model, run.train_set, run.val_set, run.cfg, run.device, run.trim, run.log))
    _long_text_on_validation(run, best_model)
    ckpt.write_json(out_dir / ckpt.CONFIG_FILE, run.meta)
    return TrainResult(out_dir, best_acc, s.best_epoch, len(run.history), test, wall, run.history)


def _fit_regression(run: _Run, first: bool = False) -> Any:
    """The linear path's regression (``vdcnn.linear_path.fit_regression``): it needs no network, so it
    is fitted before one is trained and its time comes out of the run's time budget."""
    from .linear_path import BUCKETS, fit_regression, orders_for, selection_score

    t, val = run.cfg.train, run.val_set
    with run.timer.phase("linear path"):
        regression = fit_regression(run.train_set.ids, run.train_set.lengths, run.train_set.labels, val.ids,
                                    val.lengths, val.labels, len(run.labels), orders_for(run.encoder.name), BUCKETS,
                                    selection_score(t.select_by, val.labels.ndim == 2))
    run.log(f"linear path: logistic regression on hashed n-grams fitted (C {regression.report['C']:g}, "
            f"{regression.report['fit_seconds']:.0f} s)" + ("; the network trains in the rest of the run's time"
                                                           if first else ""))
    return regression


def _fit_linear_path(run: _Run, model: VDCNN) -> tuple[VDCNN, bool]:
    """Weigh the linear path (``vdcnn.linear_path``) against the trained network and, where validation
    says the sum is better than the network alone, load it into the best model and save that as the
    run's weights. The regression is the one fitted before training (fitted here when there is none:
    a resumed or multi-process run)."""
    from .linear_path import blend, selection_score

    t = run.cfg.train
    batch = max(t.batch_size, 256)
    val, test = run.val_set, run.test_set
    scorer = inference_copy(model)
    net_val = predict_logits(scorer, val.ids, val.lengths, batch, run.device, run.trim)
    multi = val.labels.ndim == 2
    score = selection_score(t.select_by, multi)
    regression = run.regression if run.regression is not None else _fit_regression(run)
    with run.timer.phase("linear path"):
        fit = blend(regression, net_val, val.labels, score)
    report = fit.report
    metric = ("macro-F1" if t.select_by == "macro_f1" else "micro-F1" if multi else "accuracy")
    if test is not None and len(test):  # the ablation, reported: never used to choose anything
        parts = {"network": (net_val, predict_logits(scorer, test.ids, test.lengths, batch, run.device, run.trim))}
        if fit.kept:
            parts["linear"] = (fit.logits(val.ids, val.lengths), fit.logits(test.ids, test.lengths))
        for part, (on_val, on_test) in parts.items():
            report[f"test_{part}"] = ({k: round(v, 5) for k, v in
                                       ml.f1_at_tuned_cuts(on_val, val.labels, on_test, test.labels).items()}
                                      if multi else
                                      {name: round(selection_score(name)(test.labels, on_test), 5)
                                       for name in ("accuracy", "macro_f1")})
    run.meta["linear_path"] = report
    nll = report.get("blend_nll")
    run.log(f"linear path (logistic regression on hashed n-grams of orders {', '.join(map(str, fit.orders))}, "
            f"C {report['C']:g}, {report['fit_seconds']:.0f} s): validation {metric} alone "
            f"{report['val_linear'] * 100:.2f} %, network {report['val_network'] * 100:.2f} %, together "
            f"{report['val_together'] * 100:.2f} % at weight {report['best_weight']:g}"
            + (f" (validation NLL {nll[format(report['best_weight'], 'g')]:.4f}, network alone {nll['network']:.4f})"
               if nll else "") + " -> "
            + ("added to the model" if fit.kept else "not added (the network alone is as good on validation)"))
    if not fit.kept:
        return model, False
    config = dataclasses.replace(model.config, linear_buckets=fit.buckets, linear_orders=fit.orders, linear_tf=fit.tf)
    combined = VDCNN(config)
    missing, unexpected = combined.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("linear.") for k in missing), (missing, unexpected)
    with torch.no_grad():
        combined.linear.weight.weight.copy_(torch.from_numpy(fit.weight))
        combined.linear.bias.copy_(torch.from_numpy(fit.bias))
        combined.linear.idf.copy_(torch.from_numpy(fit.idf).unsqueeze(1))
    combined.to(run.device).eval()
    run.meta["model"] = config.to_dict()
    ckpt.save_weights(run.out_dir / ckpt.WEIGHTS_FILE, combined)
    ckpt.write_json(run.out_dir / ckpt.CONFIG_FILE, run.meta)  # right after: weights and config.json agree again
    return combined, True


def _long_text_on_validation(run: _Run, model: torch.nn.Module) -> None:
    """Keep the windows default (long texts often cut) only where validation's long texts say so."""
    entry = run.meta.get("long_text")
    if not entry or entry.get("default") != "windows" or np.asarray(run.val_set.labels).ndim != 1:
        return
    batch = max(run.cfg.train.batch_size, 64)
    entry = choose_on_validation(entry, run.encoder, run.val_texts, run.val_set.labels,
                                 lambda ids, n: predict_logits(model, ids, n, batch, run.device, run.trim))
    run.meta["long_text"] = entry
    v = entry["validation"]
    if "windows_accuracy" in v:
        run.log(f"long texts on validation ({v['long_texts']:,} longer than {entry['max_length']} ids): windows "
                f"{v['windows_accuracy'] * 100:.2f} %, truncation {v['truncate_accuracy'] * 100:.2f} %, so inference "
                f"reads long texts as {'windows' if entry['default'] == 'windows' else 'their first window'} by default")


def _finite(model: torch.nn.Module) -> bool:
    """Whether every parameter and buffer is finite (a NaN model must never become the best one)."""
    return all(bool(torch.isfinite(t).all()) for t in (*model.parameters(), *model.buffers()) if t.is_floating_point())


def _score(model: torch.nn.Module, data: Encoded, labels: list[str], batch_size: int, device: torch.device,
           trim: bool, fitted: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Accuracy report in fp32 even when training ran in bf16, so it matches ``vdcnn eval``; a multi-label
    report at the ``fitted`` calibration and thresholds (None: thresholds tuned on ``data`` itself)."""
    if len(data) == 0:
        return None
    logits = predict_logits(inference_copy(model), data.ids, data.lengths, max(batch_size, 256), device, trim)
    if data.labels.ndim == 2:
        return ml.score_logits(logits, data.labels, labels, fitted)
    return classification_report(data.labels, logits.argmax(1), labels, logits)


def _fit_multilabel(run: _Run, model: torch.nn.Module) -> dict[str, Any]:
    """Calibration and per-label thresholds of a multi-label run, fitted on its validation split."""
    data = run.val_set if len(run.val_set) else run.train_set
    logits = predict_logits(model, data.ids, data.lengths, max(run.cfg.train.batch_size, 256), run.device, run.trim)
    return ml.fit_after_training(logits, data.labels, getattr(run.cfg.train, "calibrate", True), run.log)


def _json(row: dict[str, Any]) -> str:
    import json

    return json.dumps(row)
