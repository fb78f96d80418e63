"""The architecture's settings, without torch: what ``config.json`` stores and the CLI validates.

``vdcnn.model`` builds the network from a ``ModelConfig``; this module stays free of torch so that
reading settings (``vdcnn --help``, config files) costs no torch import.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from .errors import ConfigError

# Downsampling between stages, by name (``vdcnn.layers.DOWNSAMPLERS`` maps each to its module).
DOWNSAMPLE_NAMES: tuple[str, ...] = ("max", "kmax", "conv", "none")
SHORTCUT_KINDS: tuple[str, ...] = ("projection", "zero_pad")
# Term frequencies of the linear path, in the order its fit tries them on validation (ties keep the first).
LINEAR_TF: tuple[str, ...] = ("log", "count")

# Blocks per stage for the paper's depths (2 conv layers per block, plus the first conv).
DEPTHS: dict[int, tuple[int, ...]] = {9: (1, 1, 1, 1), 17: (2, 2, 2, 2), 29: (5, 5, 2, 2), 49: (8, 8, 5, 3)}
CHANNELS: tuple[int, ...] = (64, 128, 256, 512)


@dataclass
class ModelConfig:
    """Everything needed to rebuild a VDCNN; saved next to its weights."""

    vocab_size: int = 71
    num_classes: int = 4
    depth: int | None = 9
    stages: tuple[int, ...] | None = None  # blocks per stage; overrides depth
    channels: tuple[int, ...] = CHANNELS
    embedding_dim: int = 16
    shortcut: bool = False
    shortcut_kind: str = "projection"
    downsample: str = "max"
    kmax: int = 8
    fc_dims: tuple[int, ...] = (2048, 2048)
    dropout: float = 0.0
    drop_path: float = 0.0
    mask_padding: bool = True
    pad_id: int = 0
    # Length-aware layout: how many stage transitions downsample (None = every one, the paper).
    downsamples: int | None = None
    # The n-gram path (fastText inside the model): hashed n-grams of the input ids, embedded,
    # averaged and mapped to logits that are added to the conv head's. 0 buckets = off.
    ngram_buckets: int = 0
    ngram_orders: tuple[int, ...] = (1, 2, 3)
    ngram_dim: int = 64
    conv: bool = True  # False: the n-gram path alone (an ablation)
    # The linear path: a logistic regression over hashed n-grams of the input ids, fitted after
    # training on the run's training rows and weighted on validation (``vdcnn.linear_path``);
    # its logits are added to the rest. 0 buckets = off.
    linear_buckets: int = 0
    linear_orders: tuple[int, ...] = (1, 2, 3)
    # Term frequency of the linear path: "log" = 1 + log(count) of each n-gram in the text with the
    # TF-IDF vector's l2 norm (TF-IDF's sublinear tf); "count" = raw counts (the runs saved before it).
    linear_tf: str = "count"

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels)
        self.fc_dims = tuple(self.fc_dims)
        self.ngram_orders = tuple(self.ngram_orders)
        self.linear_orders = tuple(self.linear_orders)
        if self.stages is not None:
            self.stages = tuple(self.stages)
        self.validate()

    @property
    def blocks(self) -> tuple[int, ...]:
        """Blocks per stage, from ``stages`` or the paper's ``depth`` presets."""
        if self.stages is not None:
            return self.stages
        return DEPTHS[self.depth]  # type: ignore[index]

    @property
    def conv_layers(self) -> int:
        """Depth as the paper counts it: convolutional layers including the first."""
        return 1 + 2 * sum(self.blocks)

    def validate(self) -> None:
        if self.stages is None:
            if self.depth not in DEPTHS:
                raise ConfigError(f"depth must be one of {', '.join(map(str, DEPTHS))} (or give stages), got {self.depth!r}")
        else:
            if not self.stages or any(not isinstance(b, int) or b < 1 for b in self.stages):
                raise ConfigError(f"stages must be a list of positive block counts, got {list(self.stages)!r}")
            if len(self.stages) != len(self.channels):
                raise ConfigError(f"stages has {len(self.stages)} entries but channels has {len(self.channels)}")
        if self.downsample not in DOWNSAMPLE_NAMES:
            raise ConfigError(f"downsample must be one of {', '.join(DOWNSAMPLE_NAMES)}, got {self.downsample!r}")
        if self.shortcut_kind not in SHORTCUT_KINDS:
            raise ConfigError(f"shortcut_kind must be one of {', '.join(SHORTCUT_KINDS)}, got {self.shortcut_kind!r}")
        for name in ("vocab_size", "num_classes", "embedding_dim", "kmax"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.num_classes < 2:
            raise ConfigError(f"num_classes must be at least 2, got {self.num_classes}")
        if any(not isinstance(c, int) or c < 1 for c in self.channels + self.fc_dims):
            raise ConfigError("channels and fc_dims must be positive integers")
        if self.downsamples is not None and (not isinstance(self.downsamples, int) or self.downsamples < 0):
            raise ConfigError(f"downsamples must be a non-negative integer (or null for every stage), got {self.downsamples!r}")
        if not isinstance(self.ngram_buckets, int) or self.ngram_buckets < 0:
            raise ConfigError(f"ngram_buckets must be a non-negative integer (0 = no n-gram path), got {self.ngram_buckets!r}")
        if not self.ngram_orders or any(not isinstance(n, int) or not 1 <= n <= 8 for n in self.ngram_orders):
            raise ConfigError(f"ngram_orders must be n-gram sizes between 1 and 8, got {list(self.ngram_orders)!r}")
        if not isinstance(self.linear_buckets, int) or self.linear_buckets < 0:
            raise ConfigError(f"linear_buckets must be a non-negative integer (0 = no linear path), got {self.linear_buckets!r}")
        if not self.linear_orders or any(not isinstance(n, int) or not 1 <= n <= 8 for n in self.linear_orders):
            raise ConfigError(f"linear_orders must be n-gram sizes between 1 and 8, got {list(self.linear_orders)!r}")
        if self.linear_tf not in LINEAR_TF:
            raise ConfigError(f"linear_tf must be one of {', '.join(LINEAR_TF)}, got {self.linear_tf!r}")
        if not isinstance(self.ngram_dim, int) or self.ngram_dim < 1:
            raise ConfigError(f"ngram_dim must be a positive integer, got {self.ngram_dim!r}")
        for name in ("dropout", "drop_path"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {value!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def stage_downsample(self, index: int) -> str:
        """The downsampling on entry to stage ``index``: the first ``downsamples`` transitions pool."""
        if index == 0 or (self.downsamples is not None and index > self.downsamples):
            return "none"
        return self.downsample

    @property
    def pooled_length_factor(self) -> int:
        """How many input positions one position of the last stage covers (2 per downsampling)."""
        return 2 ** sum(self.stage_downsample(i) != "none" for i in range(len(self.blocks)))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ConfigError(f"unknown model setting(s): {', '.join(sorted(unknown))}")
        return cls(**d)
