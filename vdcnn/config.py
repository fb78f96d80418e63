"""Run configuration: YAML presets from ``configs/`` plus overrides, validated into dataclasses."""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from .errors import ConfigError
from .model import ModelConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class EncoderSettings:
    name: str = "char"
    max_length: int = 1024
    vocab_size: int = 8000  # subword only


@dataclass
class DataSettings:
    dataset: str = "ag_news"
    text_columns: list[str] | None = None
    label_column: str | None = None
    val_fraction: float = 0.1
    limit: int | None = None
    test_split: str = "test"


@dataclass
class TrainSettings:
    epochs: int = 15
    batch_size: int = 128
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "step"  # step | cosine | onecycle | constant
    step_epochs: int = 3  # step schedule: halve the rate every N epochs (the paper)
    step_gamma: float = 0.5
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    ema_decay: float = 0.0  # exponential moving average of weights; 0 = off
    ema_bn_batches: int = 32  # EMA: recompute BatchNorm statistics on this many training batches; 0 = copy the live ones
    augment_crop: float = 0.0  # probability of a random crop of a text longer than max_length/2
    augment_noise: float = 0.0  # fraction of characters replaced at random
    bucket: bool = True  # length-bucketed batches (exact thanks to padding masks)
    early_stop: int = 0  # stop after N epochs without validation improvement; 0 = off
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    bf16: bool = True  # bf16 autocast where the device runs it natively (CUDA, CPUs with AVX512-BF16/AMX)
    nan_policy: str = "stop"  # stop | skip
    num_workers: int = 0
    sync_bn: bool = False  # data-parallel: BatchNorm statistics over all ranks
    threads: int = 0  # torch CPU threads; 0 = torch's default
    time_budget: str | float | None = None  # seconds, or "15m", "90s": fit epochs and schedule so the whole run ends on time
    class_weights: str = "none"  # none | balanced (loss weights inverse to class frequency)
    select_by: str = "accuracy"  # accuracy | macro_f1: the validation score that picks the best epoch


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "encoder": EncoderSettings,
    "data": DataSettings,
    "train": TrainSettings,
}
# ModelConfig fields that the data and encoder decide, not the user.
DERIVED_MODEL_FIELDS = {"vocab_size", "num_classes", "pad_id"}

CHOICES = {
    ("train", "optimizer"): ("sgd", "adamw"),
    ("train", "schedule"): ("step", "cosine", "onecycle", "constant"),
    ("train", "device"): ("auto", "cpu", "cuda"),
    ("train", "nan_policy"): ("stop", "skip"),
    ("encoder", "name"): ("char", "byte", "subword"),
    ("train", "class_weights"): ("none", "balanced"),
    ("train", "select_by"): ("accuracy", "macro_f1"),
}


@dataclass
class RunConfig:
    """The whole recipe of a run: model, encoder, data and training settings."""

    model: dict[str, Any] = field(default_factory=dict)  # ModelConfig kwargs, less derived fields
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    data: DataSettings = field(default_factory=DataSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    # auto: no preset was given, so the automatic recipe (vdcnn.recipe) fills every setting the user
    # did not set (``explicit``) once it has seen the training data. Neither is saved: a run's
    # config.json holds the resolved recipe.
    auto: bool = field(default=False, compare=False)
    explicit: set[str] = field(default_factory=set, compare=False)

    def model_config(self, vocab_size: int, num_classes: int, pad_id: int = 0) -> ModelConfig:
        return ModelConfig(vocab_size=vocab_size, num_classes=num_classes, pad_id=pad_id, **self.model)

    def to_dict(self) -> dict[str, Any]:
        return {"model": dict(self.model), "encoder": asdict(self.encoder), "data": asdict(self.data),
                "train": asdict(self.train)}

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "RunConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"{source}: expected a mapping of sections ({', '.join(SECTIONS)})")
        unknown = set(d) - set(SECTIONS)
        if unknown:
            raise ConfigError(f"{source}: unknown section {sorted(unknown)[0]!r}; sections are {', '.join(SECTIONS)}")
        cfg = cls()
        for section, values in d.items():
            if values is None:
                continue
            if not isinstance(values, dict):
                raise ConfigError(f"{source}: section {section!r} must be a mapping")
            for key, value in values.items():
                cfg.set(f"{section}.{key}", value, source)
        cfg.validate()
        return cfg

    def set(self, dotted: str, value: Any, source: str = "option") -> None:
        """Set ``section.key`` after checking the key exists and the value has the right type."""
        section, _, key = dotted.partition(".")
        if section not in SECTIONS or not key:
            raise ConfigError(f"{source}: unknown setting {dotted!r}")
        fields = {f.name: f for f in dataclasses.fields(SECTIONS[section])}
        if key not in fields or (section == "model" and key in DERIVED_MODEL_FIELDS):
            raise ConfigError(f"{source}: unknown setting {dotted!r}")
        hint = typing.get_type_hints(SECTIONS[section])[key]
        value = _coerce(value, hint, f"{source}: {dotted}")
        if (section, key) in CHOICES and value not in CHOICES[(section, key)]:
            raise ConfigError(f"{source}: {dotted} must be one of {', '.join(CHOICES[(section, key)])}, got {value!r}")
        if section == "model":
            self.model[key] = value
        else:
            setattr(getattr(self, section), key, value)
        self.explicit.add(f"{section}.{key}")

    def validate(self) -> None:
        """Check ranges; raises ConfigError naming the setting."""
        if "stages" in self.model and self.model["stages"] is not None:
            self.model.setdefault("depth", None)
        ModelConfig(**self.model)  # model checks
        e, d, t = self.encoder, self.data, self.train
        _positive("encoder.max_length", e.max_length)
        _positive("encoder.vocab_size", e.vocab_size)
        _positive("train.epochs", t.epochs)
        _positive("train.batch_size", t.batch_size)
        if d.limit is not None:
            _positive("data.limit", d.limit)
        if not 0.0 <= d.val_fraction <= 0.5:
            raise ConfigError(f"data.val_fraction must be in [0, 0.5], got {d.val_fraction}")
        if not t.lr > 0:
            raise ConfigError(f"train.lr must be positive, got {t.lr}")
        for name in ("weight_decay", "grad_clip", "warmup_epochs", "momentum"):
            if getattr(t, name) < 0:
                raise ConfigError(f"train.{name} must not be negative, got {getattr(t, name)}")
        for name in ("label_smoothing", "augment_crop", "augment_noise", "ema_decay"):
            if not 0.0 <= getattr(t, name) < 1.0:
                raise ConfigError(f"train.{name} must be in [0, 1), got {getattr(t, name)}")
        if t.step_epochs < 1 or not 0 < t.step_gamma <= 1:
            raise ConfigError("train.step_epochs must be >= 1 and train.step_gamma in (0, 1]")
        if t.time_budget is not None:
            from .time_budget import parse_duration

            parse_duration(t.time_budget)
        if t.early_stop < 0 or t.num_workers < 0 or t.threads < 0 or t.ema_bn_batches < 0:
            raise ConfigError("train.early_stop, train.num_workers, train.threads and train.ema_bn_batches "
                              "must not be negative")


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value}")


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against a type hint, converting YAML/CLI forms (int->float, list->tuple)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(v, inner, where) for v in value]
        return tuple(items) if origin is tuple else items
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{where} must be an integer, got {value!r}") from None
    if hint is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    return value


def load_config(path: str | Path | None = None) -> RunConfig:
    """Read a YAML preset (a path, or a name in ``configs/`` such as ``vdcnn29``); None gives defaults."""
    if path is None:
        return RunConfig()
    p = Path(path)
    if not p.exists() and (CONFIG_DIR / f"{path}.yaml").exists():
        p = CONFIG_DIR / f"{path}.yaml"
    if not p.exists():
        raise ConfigError(f"config file not found: {path}")
    if p.is_dir():
        raise ConfigError(f"config path is a folder, not a YAML file: {path}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{p}: not valid YAML ({first})") from None
    if data is None:
        raise ConfigError(f"{p}: the config file is empty (no settings); give a YAML preset with sections "
                          f"such as model: and train:")
    return RunConfig.from_dict(data, source=str(p))
