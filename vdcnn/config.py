"""Run configuration: YAML presets plus options, validated into dataclasses.

A run's recipe is built in three layers, later ones winning: a preset (``configs/NAME.yaml``,
shipped inside the package as ``vdcnn/configs``; no preset means defaults plus the automatic
recipe), the command-line options in ``OPTIONS`` (one row per option: the setting it sets and
its help; its type and choices come from the setting's dataclass field), then ``--set
section.key=value`` for any setting. ``build_config`` does all three and validates.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping, Union

import yaml

from .errors import ConfigError
from .model_config import DOWNSAMPLE_NAMES, SHORTCUT_KINDS, ModelConfig

PRESET_SUFFIX = ".yaml"


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
    split_seed: int | None = None  # validation split and --limit subset; None = train.seed
    multi_label: bool | None = None  # several labels per text; None = detected from the data


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
    bf16: bool = True  # bf16 autocast where the device runs it natively (CUDA; on CPUs with AVX512-BF16/AMX only when set)
    nan_policy: str = "stop"  # stop | skip
    sync_bn: bool = False  # data-parallel: BatchNorm statistics over all ranks
    threads: int = 0  # torch CPU threads; 0 = torch's default
    time_budget: str | float | None = None  # seconds, or "15m", "90s": fit epochs and schedule so the whole run ends on time
    class_weights: str = "none"  # none | balanced (loss weights inverse to class frequency)
    select_by: str = "accuracy"  # accuracy | macro_f1: the validation score that picks the best epoch
    ngram_lr_scale: float = 1.0  # the n-gram path's learning rate, as a multiple of lr
    autotune: bool = True  # automatic recipe: try candidate recipes on validation within the time budget
    calibrate: bool = True  # fit a softmax temperature on validation after training (vdcnn.calibration)
    linear_path: bool = False  # fit a logistic regression on hashed n-grams after training, weighted on validation


SECTIONS: dict[str, type] = {
    "model": ModelConfig,
    "encoder": EncoderSettings,
    "data": DataSettings,
    "train": TrainSettings,
}
# Settings that did nothing and were removed; runs saved with them still load.
_RETIRED = {("train", "num_workers")}
# ModelConfig fields that the data and encoder decide, not the user.
DERIVED_MODEL_FIELDS = {"vocab_size", "num_classes", "pad_id"}

CHOICES = {
    ("model", "downsample"): DOWNSAMPLE_NAMES,
    ("model", "shortcut_kind"): SHORTCUT_KINDS,
    ("train", "optimizer"): ("sgd", "adamw"),
    ("train", "schedule"): ("step", "cosine", "onecycle", "constant"),
    ("train", "device"): ("auto", "cpu", "cuda"),
    ("train", "nan_policy"): ("stop", "skip"),
    ("encoder", "name"): ("char", "byte", "subword"),
    ("train", "class_weights"): ("none", "balanced"),
    ("train", "select_by"): ("accuracy", "macro_f1", "micro_f1"),
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
    search: dict[str, Any] | None = field(default=None, compare=False)  # autotune's summary, for config.json

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
                if (section, key) in _RETIRED:
                    continue
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
        if not t.ngram_lr_scale > 0:
            raise ConfigError(f"train.ngram_lr_scale must be positive, got {t.ngram_lr_scale}")
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
        if t.early_stop < 0 or t.threads < 0 or t.ema_bn_batches < 0:
            raise ConfigError("train.early_stop, train.threads and train.ema_bn_batches "
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


def presets() -> resources.abc.Traversable:
    """The folder of presets shipped in the package (``configs/*.yaml`` in a source checkout)."""
    return resources.files("vdcnn") / "configs"


def preset_names() -> list[str]:
    """Names accepted by ``--config NAME``, e.g. ``vdcnn29``."""
    return sorted(p.name[: -len(PRESET_SUFFIX)] for p in presets().iterdir() if p.name.endswith(PRESET_SUFFIX))


def load_config(path: str | Path | None = None) -> RunConfig:
    """Read a YAML preset (a path, or a preset name such as ``vdcnn29``); None gives defaults."""
    if path is None:
        return RunConfig()
    p = Path(path)
    if not p.exists():
        preset = presets() / f"{path}{PRESET_SUFFIX}"
        if not preset.is_file():
            raise ConfigError(f"config file not found: {path} (presets: {', '.join(preset_names())})")
        return _config_from_text(preset.read_bytes(), f"preset {path}")
    if p.is_dir():
        raise ConfigError(f"config path is a folder, not a YAML file: {path}")
    return _config_from_text(p.read_bytes(), str(p))


def _config_from_text(raw: bytes, source: str) -> RunConfig:
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{source}: not valid YAML ({first})") from None
    if data is None:
        raise ConfigError(f"{source}: the config file is empty (no settings); give a YAML preset with sections "
                          f"such as model: and train:")
    return RunConfig.from_dict(data, source=source)


# --- command-line options ----------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    """A recipe option of ``vdcnn train`` (and ``compare``, ``info``): ``--NAME`` sets ``setting``.

    Its value type and choices are those of the setting's dataclass field (see ``option_type``).
    """

    name: str  # Python name; the flag is --name-with-dashes
    setting: str  # dotted ``section.key``
    help: str = ""
    replaces: str | None = None  # a model setting this option voids (depth and stages exclude each other)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


OPTIONS: tuple[Option, ...] = (
    Option("dataset", "data.dataset", "Registry name (ag_news, ...) or a local file/folder."),
    Option("depth", "model.depth", "9, 17, 29 or 49 (the paper's presets).", replaces="model.stages"),
    Option("stages", "model.stages", "Custom blocks per stage, e.g. 2,2,2,2.", replaces="model.depth"),
    Option("shortcut", "model.shortcut", "Residual shortcuts on/off."),
    Option("shortcut_kind", "model.shortcut_kind", "Shortcut where shapes change."),
    Option("downsample", "model.downsample", "Downsampling between stages."),
    Option("encoder", "encoder.name", "Text to ids."),
    Option("max_length", "encoder.max_length", "Ids per text (truncate/pad), default 1024."),
    Option("vocab_size", "encoder.vocab_size", "Subword vocabulary size."),
    Option("epochs", "train.epochs", "Most epochs to train (a time budget may stop earlier)."),
    Option("batch_size", "train.batch_size", "Texts per optimiser step, over all processes."),
    Option("lr", "train.lr", "Peak learning rate."),
    Option("optimizer", "train.optimizer", "sgd (momentum, the paper's) or adamw."),
    Option("schedule", "train.schedule", "Learning-rate schedule."),
    Option("warmup", "train.warmup_epochs", "Warm-up epochs."),
    Option("weight_decay", "train.weight_decay", "L2 weight decay (decoupled for adamw)."),
    Option("dropout", "model.dropout", "Dropout in the FC head."),
    Option("drop_path", "model.drop_path", "Stochastic depth rate (shortcut blocks)."),
    Option("label_smoothing", "train.label_smoothing", "Label smoothing of the cross-entropy, 0 to 1."),
    Option("grad_clip", "train.grad_clip", "Max gradient norm (0 = off)."),
    Option("ema", "train.ema_decay", "EMA decay of weights, e.g. 0.999 (0 = off)."),
    Option("augment_crop", "train.augment_crop", "Probability of a random crop per text."),
    Option("augment_noise", "train.augment_noise", "Fraction of characters replaced at random."),
    Option("early_stop", "train.early_stop", "Stop after N epochs without improvement."),
    Option("mask_padding", "model.mask_padding", "Keep padding out of the computation (off = paper)."),
    Option("seed", "train.seed", "Seed of initialisation, batch order and noise (and of the split, without --split-seed)."),
    Option("device", "train.device", "auto (CUDA when present), cpu or cuda."),
    Option("bf16", "train.bf16", "bf16 autocast where the device runs it natively (default: on GPUs; on CPUs only "
           "with --bf16: it cost ~1 point at equal epochs there)."),
    Option("sync_bn", "train.sync_bn", "Under torchrun: BatchNorm statistics over all processes."),
    Option("threads", "train.threads", "CPU threads (0 = torch default)."),
    Option("limit", "data.limit", "Train on a stratified subset of N rows."),
    Option("val_fraction", "data.val_fraction", "Validation share carved from train."),
    Option("split_seed", "data.split_seed", "Seed of the validation split and --limit subset (default: --seed)."),
    Option("text_column", "data.text_columns", "Text column(s) of a local file (repeatable)."),
    Option("label_column", "data.label_column", "Label column of a local file."),
    Option("test_split", "data.test_split", "Split scored at the end (default test)."),
    Option("time_budget", "train.time_budget", "Fit the run into this time, e.g. 15m or 90s."),
    Option("class_weights", "train.class_weights", "Loss weights for imbalanced classes."),
    Option("select_by", "train.select_by", "Validation score that picks the best epoch."),
    Option("autotune", "train.autotune", "Automatic recipe: try candidate recipes on validation within the "
           "time budget (--no-autotune: the recipe's own choice)."),
    Option("ngram_buckets", "model.ngram_buckets", "Hash buckets of the n-gram path (0 = no n-gram path)."),
    Option("linear_path", "train.linear_path", "After training, fit a logistic regression on the model's hashed "
           "n-grams into it, weighted against the network on validation (automatic recipe: on)."),
    Option("calibrate", "train.calibrate", "Fit a temperature on validation so probabilities are calibrated."),
    Option("multi_label", "data.multi_label", "Several labels per text (sigmoid outputs, one threshold per label); "
           "default: detected from the data (labels joined by ',' or '|', several __label__ tags, 0/1 columns); "
           "--no-multi-label refuses such data."),
)
OPTIONS_BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}


def setting_type(dotted: str) -> Any:
    """The type hint of a setting's dataclass field, e.g. ``int | None`` for ``model.depth``."""
    section, _, key = dotted.partition(".")
    return typing.get_type_hints(SECTIONS[section])[key]


def option_type(option: Option) -> type:
    """What the option's value is on the command line: bool (an on/off flag), int, float, str,
    list (repeatable) or a str Enum of the setting's choices. Lists of numbers (``--stages``)
    are one comma-separated string, split by the setting's own conversion."""
    section, _, key = option.setting.partition(".")
    if (section, key) in CHOICES:
        return enum.Enum(option.name.title().replace("_", ""), {c: c for c in CHOICES[(section, key)]}, type=str)
    hint = setting_type(option.setting)
    if typing.get_origin(hint) in (Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    origin = typing.get_origin(hint)
    if origin is list and typing.get_args(hint) == (str,):
        return list
    if origin in (list, tuple):
        return str
    return hint


def build_config(preset: str | Path | None, options: Mapping[str, Any] | None = None,
                 settings: Iterable[str] = ()) -> RunConfig:
    """Preset (or defaults and the automatic recipe) + ``OPTIONS`` by name + ``section.key=value`` strings.

    Options given as None or an empty list are not set. Raises ConfigError naming the bad option.
    """
    cfg = load_config(preset)
    cfg.auto = preset is None  # no preset: the automatic recipe decides what the options leave open
    for name, value in (options or {}).items():
        option = OPTIONS_BY_NAME.get(name)
        if option is None:
            raise ConfigError(f"unknown option {name!r}")
        if value is None or (isinstance(value, (list, tuple)) and not value):
            continue
        if isinstance(value, enum.Enum):
            value = value.value
        if option.replaces:  # the preset may have set the other one
            cfg.model[option.replaces.partition(".")[2]] = None
        cfg.set(option.setting, value, source=option.flag)
    for item in settings:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        cfg.set(key.strip(), yaml.safe_load(raw), source="--set")
    cfg.validate()
    return cfg
