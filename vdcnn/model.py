"""The VDCNN model: embedding, temporal conv, residual stages, k-max pooling, FC head."""

from __future__ import annotations

from copy import deepcopy
from typing import Any, Iterable

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .errors import ConfigError
from .layers import Conv1d, ConvBlock, KMaxPool1d, Lengths, ProjectionShortcut, Stage, zero_padding
from .model_config import CHANNELS, DEPTHS, ModelConfig
from .ngrams import LinearNgrams, NgramBag

__all__ = ["CHANNELS", "DEPTHS", "MODELS", "ModelConfig", "VDCNN", "count_parameters", "create_model", "describe",
           "fold_batchnorm", "forward_flops", "list_models", "recalibrate_batchnorm", "vdcnn9", "vdcnn17",
           "vdcnn29", "vdcnn49"]

class VDCNN(nn.Module):
    """Very deep CNN for text (Conneau et al. 2017) with optional residual shortcuts.

    ``forward(ids, lengths=None)``: ``ids`` is ``(batch, time)``; without
    ``lengths`` each text's length is taken as the position after its last
    non-pad id, so trailing padding never changes a prediction.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        if not c.conv and not c.ngram_buckets:
            raise ConfigError("conv: false needs the n-gram path (ngram_buckets > 0)")
        self.stages = nn.ModuleList()
        if c.conv:
            self.embedding = nn.Embedding(c.vocab_size, c.embedding_dim, padding_idx=c.pad_id)
            self.first_conv = Conv1d(c.embedding_dim, c.channels[0], kernel_size=3, padding=1)
            in_ch = c.channels[0]
            for i, (n_blocks, out_ch) in enumerate(zip(c.blocks, c.channels)):
                self.stages.append(Stage(in_ch, out_ch, n_blocks, c.stage_downsample(i), c.shortcut,
                                         c.shortcut_kind, c.drop_path))
                in_ch = out_ch
            self.kmax = KMaxPool1d(c.kmax)
            layers: list[nn.Module] = []
            width = in_ch * c.kmax
            for dim in c.fc_dims:
                layers += [nn.Linear(width, dim), nn.ReLU(inplace=True)]
                if c.dropout:
                    layers.append(nn.Dropout(c.dropout))
                width = dim
            layers.append(nn.Linear(width, c.num_classes))
            self.head = nn.Sequential(*layers)
        self.ngrams = (NgramBag(c.ngram_buckets, c.ngram_dim, c.ngram_orders, c.num_classes)
                       if c.ngram_buckets else None)
        self.linear = (LinearNgrams(c.linear_buckets, c.linear_orders, c.num_classes, c.linear_tf)
                       if c.linear_buckets else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation for convolutions and linear layers."""
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm1d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if self.config.conv:
            # A small classifier layer starts every class near equal probability.
            nn.init.normal_(self.head[-1].weight, std=0.01)
        if self.ngrams is not None:
            self.ngrams.reset_parameters()

    def lengths_from_ids(self, ids: Tensor) -> Tensor:
        """Position after the last non-pad id of each row (at least 1)."""
        real = ids != self.config.pad_id
        last = ids.size(1) - real.flip(1).int().argmax(1)
        return torch.where(real.any(1), last, torch.ones_like(last))

    def features(self, ids: Tensor, lengths: Lengths = None) -> Tensor:
        """Pooled ``(batch, channels * kmax)`` features of the conv path, before the FC head."""
        return self._conv_features(ids, self._real_lengths(ids, lengths) if self.config.mask_padding else None)

    def _real_lengths(self, ids: Tensor, lengths: Lengths) -> Tensor:
        """The given lengths clamped to ``[1, time]``, or the ones read from the padding."""
        return self.lengths_from_ids(ids) if lengths is None else lengths.clamp(min=1, max=ids.size(1))

    def _conv_features(self, ids: Tensor, lengths: Lengths) -> Tensor:
        x = self.embedding(ids.long()).transpose(1, 2)
        x = self.first_conv(zero_padding(x, lengths))
        for stage in self.stages:
            x, lengths = stage(x, lengths)
        return self.kmax(x, lengths).flatten(1)

    def forward(self, ids: Tensor, lengths: Lengths = None) -> Tensor:
        if self.linear is None:
            return self._network(ids, lengths)
        return self._network(ids, lengths) + self.linear(ids, self._real_lengths(ids, lengths))

    def _network(self, ids: Tensor, lengths: Lengths) -> Tensor:
        """The trained part's logits: the conv head's plus the n-gram path's."""
        if self.ngrams is None:
            return self.head(self.features(ids, lengths))
        # The n-gram path always needs the real lengths (its mean must not count padding).
        lengths = self._real_lengths(ids, lengths)
        ngram_logits = self.ngrams(ids, lengths)
        if not self.config.conv:
            return ngram_logits
        conv_lengths = lengths if self.config.mask_padding else None
        return self.head(self._conv_features(ids, conv_lengths)) + ngram_logits

    def stage_modules(self) -> list[nn.Module]:
        """One module per stage, for per-stage gradient norms."""
        return list(self.stages)


# Named architectures (timm style): the paper's depths; any ModelConfig field overrides.
MODELS: dict[str, dict[str, Any]] = {f"vdcnn{depth}": {"depth": depth} for depth in DEPTHS}


def list_models() -> list[str]:
    """Names ``create_model`` accepts."""
    return list(MODELS)


def create_model(name: str, **overrides: Any) -> VDCNN:
    """A VDCNN by name, e.g. ``create_model("vdcnn29", num_classes=4, shortcut=True, downsample="kmax")``."""
    if name not in MODELS:
        raise ConfigError(f"unknown model {name!r}; choose {', '.join(MODELS)}")
    return VDCNN(ModelConfig.from_dict({**MODELS[name], **overrides}))


def vdcnn9(**overrides: Any) -> VDCNN:
    """VDCNN-9: one block per stage (the paper's smallest)."""
    return create_model("vdcnn9", **overrides)


def vdcnn17(**overrides: Any) -> VDCNN:
    """VDCNN-17: two blocks per stage."""
    return create_model("vdcnn17", **overrides)


def vdcnn29(**overrides: Any) -> VDCNN:
    """VDCNN-29: 5, 5, 2, 2 blocks."""
    return create_model("vdcnn29", **overrides)


def vdcnn49(**overrides: Any) -> VDCNN:
    """VDCNN-49: 8, 8, 5, 3 blocks."""
    return create_model("vdcnn49", **overrides)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def forward_flops(config: ModelConfig, length: int = 1024) -> int:
    """Forward FLOPs (2 x multiply-adds) of convolutions and linear layers for one text."""
    c = config
    t = length
    ngram_flops = 2 * c.ngram_dim * c.num_classes + len(c.ngram_orders) * t * c.ngram_dim if c.ngram_buckets else 0
    ngram_flops += len(c.linear_orders) * t * c.num_classes if c.linear_buckets else 0
    if not c.conv:
        return ngram_flops
    flops = ngram_flops + 2 * c.embedding_dim * c.channels[0] * 3 * t
    in_ch = c.channels[0]
    for i, (n_blocks, out_ch) in enumerate(zip(c.blocks, c.channels)):
        if c.stage_downsample(i) != "none":
            t = (t + 1) // 2
        for j in range(n_blocks):
            flops += 2 * in_ch * out_ch * 3 * t + 2 * out_ch * out_ch * 3 * t
            if c.shortcut and c.shortcut_kind == "projection" and in_ch != out_ch:
                flops += 2 * in_ch * out_ch * t
            in_ch = out_ch
    width = in_ch * c.kmax
    for dim in c.fc_dims + (c.num_classes,):
        flops += 2 * width * dim
        width = dim
    return flops


def describe(config: ModelConfig, length: int = 1024) -> list[dict[str, Any]]:
    """Per-stage layout rows: stage, blocks, channels, output length, parameters."""
    model = VDCNN(config)
    rows: list[dict[str, Any]] = []
    if model.ngrams is not None:
        rows.append({"stage": f"n-gram path (orders {', '.join(map(str, config.ngram_orders))})", "blocks": "-",
                     "channels": config.ngram_dim, "length": length, "params": count_parameters(model.ngrams)})
    if model.linear is not None:
        rows.append({"stage": f"linear path (orders {', '.join(map(str, config.linear_orders))})", "blocks": "-",
                     "channels": config.num_classes, "length": length, "params": count_parameters(model.linear)})
    if not config.conv:
        return rows
    rows += [
        {"stage": "embedding + conv", "blocks": "-", "channels": config.channels[0], "length": length,
         "params": count_parameters(model.embedding) + count_parameters(model.first_conv)}
    ]
    t = length
    for i, stage in enumerate(model.stages):
        if config.stage_downsample(i) != "none":
            t = (t + 1) // 2
        rows.append({"stage": f"stage {i + 1}", "blocks": len(stage), "channels": config.channels[i],
                     "length": t, "params": count_parameters(stage)})
    rows.append({"stage": f"k-max (k={config.kmax}) + FC", "blocks": "-", "channels": config.num_classes,
                 "length": config.kmax, "params": count_parameters(model.head)})
    return rows


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]]) -> int:
    """Recompute every BatchNorm's running statistics for the model's current weights.

    Averaged weights (EMA, SWA) never produced the running statistics they inherit
    from the live model; one forward pass in training mode over ``(ids, lengths)``
    batches, averaging the batch statistics equally, gives them their own.
    Returns the number of batches used (0 leaves the statistics untouched).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    batches = list(batches)
    if not norms or not batches:
        return 0
    was_training = model.training
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.eval()  # drop-path and dropout off: the statistics of the network as it will be used ...
    for m in norms:
        m.train()  # ... with only the BatchNorms measuring their batches
    with torch.no_grad():
        for ids, lengths in batches:
            model(ids, lengths)
    for m, momentum in zip(norms, saved):
        m.momentum = momentum
    model.train(was_training)
    return len(batches)


def fold_batchnorm(model: VDCNN) -> VDCNN:
    """Fold eval-mode BatchNorm into the preceding convolution (in place) for inference.

    ``fuse_conv_bn_eval`` applies as is: a MaskedBatchNorm1d in eval mode is a plain
    BatchNorm1d (the mask only changes the statistics gathered in training). Masking
    stays correct because the folded conv adds its bias at padded positions too, and
    those are zeroed again before the next convolution or pooling.
    """
    model.eval()
    for module in list(model.modules()):
        if isinstance(module, ConvBlock):
            pairs = [("conv1", "bn1"), ("conv2", "bn2")]
        elif isinstance(module, ProjectionShortcut):
            pairs = [("conv", "bn")]
        else:
            continue
        for conv_name, bn_name in pairs:
            bn = getattr(module, bn_name)
            if isinstance(bn, nn.BatchNorm1d):
                setattr(module, conv_name, fuse_conv_bn_eval(getattr(module, conv_name), bn))
                setattr(module, bn_name, _PassThroughNorm())
    return model


def inference_copy(model: nn.Module) -> nn.Module:
    """``model`` for scoring only: a copy with BatchNorm folded (``fold_batchnorm``), as ``vdcnn eval`` and
    ``predict`` run it, while the model itself stays trainable and savable; ``model`` itself when it
    has no BatchNorm to fold."""
    if not any(isinstance(m, nn.BatchNorm1d) for m in model.modules()):
        return model
    return fold_batchnorm(deepcopy(model))  # type: ignore[arg-type]


def cast_network(model: VDCNN, dtype: torch.dtype) -> VDCNN:
    """A copy of ``model`` whose conv path (embedding, convolutions, head) holds its weights in
    ``dtype``, for bf16 inference: under autocast each batch would otherwise cast every weight again
    (for the depth-9 head alone 12.6M of them), with the same result. BatchNorm (when not folded)
    and the n-gram paths stay float32, as under autocast."""
    copy = deepcopy(model)
    for name in ("embedding", "first_conv", "stages", "head"):
        part = getattr(copy, name, None)
        if part is not None:
            part.to(dtype)
    for module in copy.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.float()
    return copy


class _PassThroughNorm(nn.Identity):
    """Stands in for a folded BatchNorm; accepts and ignores lengths."""

    def forward(self, x: Tensor, lengths: Lengths = None) -> Tensor:  # type: ignore[override]
        return x


