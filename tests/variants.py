"""Every model variant, timm-style: depth x downsampling x shortcut kind x encoder, with tiny widths.

``ALL_VARIANTS`` is the whole cross product (144); ``PAIRWISE_VARIANTS`` (16) holds every pair of
values of any two axes at least once, for tests too slow to run on the whole product (BatchNorm
folding, padding invariance); ``EACH_VALUE_VARIANTS`` (4) holds every value of every axis, for
the slowest (export to two formats: 20-50 s a deep variant on the shared 2 cores).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

from vdcnn.encoders import ByteEncoder, CharEncoder, Encoder, SubwordEncoder
from vdcnn.layers import DOWNSAMPLERS, SHORTCUT_KINDS
from vdcnn.model import DEPTHS, ModelConfig

SHORTCUTS = ("off", *SHORTCUT_KINDS)  # off, projection, zero_pad
ENCODERS = ("char", "byte", "subword")
AXES = (tuple(DEPTHS), tuple(DOWNSAMPLERS), SHORTCUTS, ENCODERS)

# News-like sentences for the subword vocabulary and the tests' inputs.
CORPUS = [
    "Stocks rally as the central bank holds interest rates steady, easing fears of a slowdown.",
    "The home side scored twice in the final ten minutes to win the cup.",
    "A new chip promises faster phones and longer battery life, the company said on Tuesday.",
    "Rebels and government forces agreed to a ceasefire after talks in the capital.",
    "Shares fell after the bank cut its forecast for the second time this year.",
    "Engineers tested a quantum computer chip that runs at room temperature.",
]


@dataclass(frozen=True)
class Variant:
    depth: int
    downsample: str
    shortcut: str  # off, projection or zero_pad
    encoder: str

    @property
    def id(self) -> str:
        return f"d{self.depth}-{self.downsample}-{self.shortcut}-{self.encoder}"

    def model_config(self, num_classes: int = 3, **overrides) -> ModelConfig:
        """Paper layout with narrow channels and head, so that every variant runs in milliseconds."""
        settings = dict(vocab_size=make_encoder(self.encoder).vocab_size, num_classes=num_classes, depth=self.depth,
                        downsample=self.downsample, shortcut=self.shortcut != "off",
                        shortcut_kind="projection" if self.shortcut == "off" else self.shortcut,
                        channels=(8, 16, 32, 64), fc_dims=(32,), embedding_dim=8)
        settings.update(overrides)
        return ModelConfig(**settings)


def _pairwise_rows() -> list[tuple[int, int, int, int]]:
    """Rows (i, j, (i+j) mod 3, (i+2j) mod 3) over the two 4-value axes: every pair of two axes' values."""
    rows = [(i, j, (i + j) % 3, (i + 2 * j) % 3) for i in range(4) for j in range(4)]
    sizes = [len(axis) for axis in AXES]
    for a, b in itertools.combinations(range(4), 2):
        assert len({(r[a], r[b]) for r in rows}) == sizes[a] * sizes[b], (a, b)
    return rows


ALL_VARIANTS = [Variant(*values) for values in itertools.product(*AXES)]
PAIRWISE_VARIANTS = [Variant(*(axis[k] for axis, k in zip(AXES, row))) for row in _pairwise_rows()]
EACH_VALUE_VARIANTS = [Variant(*(axis[i % len(axis)] for axis in AXES)) for i in range(max(map(len, AXES)))]


@lru_cache(maxsize=None)
def make_encoder(name: str) -> Encoder:
    if name == "char":
        return CharEncoder()
    if name == "byte":
        return ByteEncoder()
    return SubwordEncoder.train(CORPUS * 3, vocab_size=300, min_frequency=1)
