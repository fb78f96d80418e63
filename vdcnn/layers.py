"""Building blocks of VDCNN: residual conv blocks, shortcuts, k-max pooling, downsampling.

Every module takes ``(x, lengths)`` and returns ``(y, lengths)``. ``x`` is
``(batch, channels, time)``; ``lengths`` holds each text's number of real
positions, or is ``None`` when padding is not masked (the paper's behaviour).
With lengths, padded positions never reach a convolution (they are zeroed),
a pooling (they are -inf) or a BatchNorm statistic, so a text's output does not
depend on how much padding or which batch-mates it comes with.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Lengths = Tensor | None


def arange_like(size: int, like: Tensor) -> Tensor:
    """``0 .. size-1`` (int64) on ``like``'s device. Traced (export), it is built from ``like``
    rather than with ``device=``, which the tracer would record as a constant: a bundle traced on
    CPU then runs on CUDA too."""
    if torch.jit.is_tracing():
        return torch.ones_like(like.reshape(-1)[:1], dtype=torch.int64).expand(size).cumsum(0) - 1
    return torch.arange(size, device=like.device)


def length_mask(lengths: Tensor, size: int) -> Tensor:
    """``(batch, 1, size)`` bool mask, True at real positions."""
    return (arange_like(size, lengths)[None, :] < lengths[:, None]).unsqueeze(1)


def halve(lengths: Lengths) -> Lengths:
    """Real length after any of the stride-2 downsamplings: ceil(L / 2)."""
    return None if lengths is None else (lengths + 1) // 2


def fill_padding(x: Tensor, lengths: Lengths, value: float) -> Tensor:
    """``x`` with every position past its text's length set to ``value``."""
    if lengths is None:
        return x
    if _may_overwrite(x):  # without autograd (inference) the fresh activation can be overwritten in place
        if not _eager_cpu(x):
            return x.masked_fill_(~length_mask(lengths, x.size(-1)), value)
        # Only positions past the batch's shortest text can be padding: with length-bucketed batches
        # that tail is short, and the rest of the activation is not touched at all. (On a CPU,
        # reading the shortest length costs no device synchronisation.)
        start = int(lengths.min())
        if start < x.size(-1):
            x[:, :, start:].masked_fill_(~length_mask(lengths - start, x.size(-1) - start), value)
        return x
    real = length_mask(lengths, x.size(-1))
    # where, not masked_fill: its output and gradient keep channels-last strides (Conv1d), which
    # masked_fill's would turn contiguous, and every layer below would then mix the two layouts.
    return torch.where(real, x, value)


def zero_padding(x: Tensor, lengths: Lengths) -> Tensor:
    return fill_padding(x, lengths, 0.0)


def _may_overwrite(x: Tensor) -> bool:
    return torch.is_inference(x) or (not torch.is_grad_enabled() and not x.requires_grad)


def relu(x: Tensor) -> Tensor:
    return F.relu(x, inplace=_may_overwrite(x))


def _eager_cpu(x: Tensor) -> bool:
    """True when ``x`` runs eagerly on a CPU: not traced for export, not scripted, not on an accelerator."""
    return (x.device.type == "cpu" and not torch.jit.is_tracing() and not torch.jit.is_scripting()
            and not torch.onnx.is_in_onnx_export())


class _Contiguous(torch.autograd.Function):
    """``x.contiguous()`` whose gradient comes back in ``x``'s channels-last layout: one copy,
    where a contiguous gradient would meet channels-last activations in every layer below
    (elementwise backward over mixed layouts runs several times slower)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        return x.contiguous()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        return channels_last(grad)


def contiguous(x: Tensor) -> Tensor:
    """``x.contiguous()``; a channels-last ``x`` that needs a gradient gets it back channels-last."""
    if x.requires_grad and x.stride(1) == 1 and not x.is_contiguous() and _eager_cpu(x):
        return _Contiguous.apply(x)
    return x.contiguous()


def channels_last(x: Tensor) -> Tensor:
    """``x`` (batch, channels, time) with channels-last strides: a transpose of a contiguous
    (batch, time, channels) array, the layout oneDNN convolves fastest on a CPU."""
    return x if x.stride(1) == 1 else x.transpose(1, 2).contiguous().transpose(1, 2)


class Conv1d(nn.Conv1d):
    """``nn.Conv1d`` that runs on a CPU as a channels-last 2-D convolution of height 1.

    oneDNN reorders a plain (batch, channels, time) input into its own layout on every call; in
    channels-last layout it convolves directly: for this model's shapes 1.4-3.1x faster in fp32
    and 1.3-9.8x in bf16 on an AMX CPU (``benchmarks/conv_roofline.py``). Same weights, same results up to
    float rounding; the output keeps its (batch, channels, time) shape with channels-last strides,
    which the next layers keep. Traced for export, on an accelerator or scripted: ``nn.Conv1d``.
    """

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if not _eager_cpu(input) or self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super()._conv_forward(input, weight, bias)
        out = F.conv2d(channels_last(input).unsqueeze(2), weight.unsqueeze(2), bias, (1, self.stride[0]),
                       (0, self.padding[0]), (1, self.dilation[0]), self.groups)
        return out.squeeze(2)


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d whose training statistics count only real (unpadded) positions.

    With ``sync = True`` the statistics are summed over all data-parallel ranks
    (the masked counterpart of SyncBatchNorm), so N processes normalise exactly
    as one process with the whole batch would.
    """

    sync: bool = False

    def forward(self, x: Tensor, lengths: Lengths = None) -> Tensor:  # type: ignore[override]
        if not self.training and self.running_mean is not None and x.dim() == 3 and _eager_cpu(x):
            # 2-D batch norm keeps channels-last activations (see Conv1d) as they are; 1-D reorders them.
            return F.batch_norm(x.unsqueeze(2), self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps).squeeze(2)
        if (lengths is None and not self.sync) or not self.training:
            return super().forward(x)
        if lengths is None:
            lengths = torch.full((x.size(0),), x.size(-1), device=x.device, dtype=torch.long)
        # Statistics in fp32 whatever the input dtype: under bf16 autocast a bf16 count above 256 is
        # rounded and a bf16 mean of activations far from zero loses its low bits.
        xf = x.float()
        mask = length_mask(lengths, x.size(-1)).to(torch.float32)
        if self.sync:
            mean, var, count = self._synced_stats(xf, mask)
            centered = xf - mean[None, :, None]
        else:
            count = mask.sum()
            mean = (xf * mask).sum((0, 2)) / count
            centered = xf - mean[None, :, None]
            var = (centered * mask).pow(2).sum((0, 2)) / count
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                # momentum None: a plain average over the batches seen since the last reset.
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * count / (count - 1).clamp(min=1)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.detach().to(self.running_var.dtype), momentum)
        scale = torch.rsqrt(var + self.eps)
        if self.affine:
            y = centered * (scale * self.weight)[None, :, None] + self.bias[None, :, None]
        else:
            y = centered * scale[None, :, None]
        return y.to(x.dtype)

    @staticmethod
    def _synced_stats(x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Mean and variance over every rank's real positions, in two exact passes: the summed
        counts and sums give the global mean, then the summed squared deviations from it give
        the variance (what SyncBatchNorm's merge of per-rank mean/variance by count computes,
        without E[x^2] - E[x]^2 cancellation)."""
        import torch.distributed as dist

        spread = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        channels = x.size(1)
        sums = torch.cat([(x * mask).sum((0, 2)), mask.sum().reshape(1)])
        if spread:
            sums = _AllReduceSum.apply(sums)
        count = sums[-1]
        mean = sums[:channels] / count.clamp(min=1)
        deviations = ((x - mean[None, :, None]) * mask).pow(2).sum((0, 2))
        if spread:
            deviations = _AllReduceSum.apply(deviations)
        return mean, deviations / count.clamp(min=1), count


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the gradient of a sum is the sum of the gradients."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        import torch.distributed as dist

        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        import torch.distributed as dist

        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def _topk_earliest(x: Tensor, k: int) -> Tensor:
    """Indices of the k largest values (float32, bfloat16 or float16) along the last axis, ties to
    the earlier position: exactly the stable sort's choice, via top-k on unique integer keys
    (order-preserving integer image of the float, then the reversed position). 16-bit floats
    get int32 keys, half the memory traffic of float32's int64 ones."""
    time = x.size(-1)
    x = x + 0.0  # turns -0.0 into 0.0
    if x.element_size() == 2 and time < 2**15:
        key, width = x.contiguous().view(torch.int16).to(torch.int32), 16
    else:
        key, width = x.float().contiguous().view(torch.int32).to(torch.int64), 32
    # In place, on the fresh key: flip the magnitude bits of negatives (monotone in the float value),
    # then make room for the reversed position.
    sign = key >> (width - 1)  # -1 for negatives, 0 otherwise
    key ^= sign & (2 ** (width - 1) - 1)
    key *= time
    key += time - 1 - torch.arange(time, device=x.device, dtype=key.dtype)
    return key.topk(k, dim=-1).indices


_TOPK_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_PASSES = 16  # up to this many kept positions, float32 channels-last rows are selected by repeated max


def _max_earliest(x: Tensor, k: int) -> Tensor:
    """``_topk_earliest``'s choice, in the same order, for a float32 ``x`` whose channels are innermost
    (channels-last): ``k`` passes of ``max`` over time, each taking the earliest of the tied maxima
    (as ``torch.max`` documents) and striking it out; a slot left with only -inf gets the index
    ``x.size(-1)``. Each pass reduces across time with the channels vectorised and builds no
    integer keys: for the head's k = 8 on a CPU, 1.1-2x faster than the top-k of integer keys (16 to 128
    positions) and no copy of a channels-last activation to time-innermost."""
    work = x.detach().transpose(1, 2).contiguous()  # (batch, time, channels); only indices come out of it
    if work.data_ptr() == x.data_ptr():
        work = work.clone()
    order = []
    for _ in range(k):
        value, index = work.max(1, keepdim=True)
        work.scatter_(1, index, float("-inf"))
        # Once a row holds only -inf (padding, or struck out), the earliest index would come again:
        # such slots point past the end instead, where kmax_pool reads zero.
        order.append(index.masked_fill_(value == float("-inf"), x.size(-1)))
    return torch.cat(order, 1).transpose(1, 2)


def kmax_pool(x: Tensor, k: Tensor | int, lengths: Lengths = None, out_size: int | None = None) -> Tensor:
    """Keep the ``k`` largest values of each channel in their original order.

    ``k`` is an int, or a per-sample tensor (k-max downsampling keeps the top half
    of each text's own positions). Padded positions are never chosen; slots a
    short text cannot fill are zero. Ties go to the earlier position, so the
    choice never depends on padding. ``out_size`` is the output length.
    """
    batch, channels, time = x.shape
    out_size = out_size if out_size is not None else int(k if isinstance(k, int) else k.max())
    by_max = x.dtype == torch.float32 and x.stride(1) == 1 and _eager_cpu(x) and out_size <= MAX_PASSES
    if not by_max:
        x = contiguous(x)  # selection along time: time innermost
    # Inference on a CPU overwrites the padding of the fresh activation with -inf (only its tail: see
    # fill_padding) instead of copying it; channels-last rows keep their strides (where, in training).
    if by_max or (lengths is not None and _may_overwrite(x) and _eager_cpu(x)):
        real = fill_padding(x, lengths, float("-inf"))
    else:
        real = x if lengths is None else x.masked_fill(~length_mask(lengths, time), float("-inf"))
    if torch.jit.is_tracing():
        # A trace must not bake in whether padding was needed: always pad (same result,
        # as the stable order puts the extra -inf columns after every real one).
        real = F.pad(real, (0, out_size), value=float("-inf"))
    elif time < out_size:
        real = F.pad(real, (0, out_size - time), value=float("-inf"))
    if torch.onnx.is_in_onnx_export():
        # ONNX TopK breaks ties by the lower index, as the stable sort does (and the
        # exporter cannot translate a stable sort).
        order = torch.topk(real, out_size, dim=2, largest=True, sorted=True).indices
    elif by_max:
        order = _max_earliest(real, out_size)
    elif real.dtype in _TOPK_DTYPES and not torch.jit.is_tracing() and 4 * out_size <= real.size(-1):
        order = _topk_earliest(real, out_size)
    else:
        order = torch.sort(real, dim=2, descending=True, stable=True).indices[:, :, :out_size]
    if isinstance(k, int):  # a plain number: no tensor (nor device constant, when traced) made of it
        keep: Tensor | int = k if lengths is None else lengths.clamp(max=k).reshape(-1, 1, 1)
    else:
        keep = k.reshape(-1, 1, 1) if lengths is None else torch.minimum(k.reshape(-1, 1, 1), lengths.reshape(-1, 1, 1))
    slots = arange_like(out_size, x).reshape(1, 1, -1)
    sentinel = real.size(-1)  # index of an extra zero column
    order = torch.where(slots < keep, order, sentinel)
    positions = torch.sort(order, dim=2).values
    # No padded position is gathered: slots < keep <= length hold real positions, the others the
    # zero column. So x needs no zeroing (in inference its padding may be -inf, from above).
    padded = torch.cat([x, x.new_zeros(batch, channels, sentinel + 1 - time)], dim=2)
    return padded.gather(2, positions)


class KMaxPool1d(nn.Module):
    """Order-preserving k-max pooling to a fixed ``k`` (the head's k = 8)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: Tensor, lengths: Lengths = None) -> Tensor:
        return kmax_pool(x, self.k, lengths)

    def extra_repr(self) -> str:
        return f"k={self.k}"


class MaxPoolDown(nn.Module):
    """Max-pool, kernel 3, stride 2: length L -> ceil(L / 2)."""

    def forward(self, x: Tensor, lengths: Lengths = None) -> tuple[Tensor, Lengths]:
        x = fill_padding(x, lengths, float("-inf"))
        if _eager_cpu(x):  # 2-D pooling keeps channels-last activations as they are (see Conv1d)
            return F.max_pool2d(x.unsqueeze(2), (1, 3), (1, 2), (0, 1)).squeeze(2), halve(lengths)
        return F.max_pool1d(x, kernel_size=3, stride=2, padding=1), halve(lengths)


class KMaxDown(nn.Module):
    """k-max pooling to half the length, each text keeping the top half of its own positions."""

    def forward(self, x: Tensor, lengths: Lengths = None) -> tuple[Tensor, Lengths]:
        out_size = (x.size(-1) + 1) // 2
        if lengths is None:
            return kmax_pool(x, out_size), None
        new_lengths = halve(lengths)
        return kmax_pool(x, new_lengths, lengths, out_size=out_size), new_lengths


# Downsampling between stages, by name. ``conv`` is not a pooling layer: the next
# stage's first block convolves with stride 2 instead (see ``ConvBlock``).
DOWNSAMPLERS: dict[str, Callable[[], nn.Module] | None] = {
    "max": MaxPoolDown,
    "kmax": KMaxDown,
    "conv": None,
    "none": None,
}

from .model_config import DOWNSAMPLE_NAMES, SHORTCUT_KINDS  # noqa: E402  (names without torch)

assert tuple(DOWNSAMPLERS) == DOWNSAMPLE_NAMES


class ProjectionShortcut(nn.Module):
    """1x1 convolution + BatchNorm with the block's stride: ResNet's option B."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv = Conv1d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)
        self.bn = MaskedBatchNorm1d(out_channels)

    def forward(self, x: Tensor, out_lengths: Lengths) -> Tensor:
        return self.bn(self.conv(x), out_lengths)


class ZeroPadShortcut(nn.Module):
    """Subsample with the block's stride and zero-fill the new channels: ResNet's option A."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.extra, self.stride = out_channels - in_channels, stride

    def forward(self, x: Tensor, out_lengths: Lengths) -> Tensor:
        return F.pad(x[:, :, :: self.stride], (0, 0, 0, self.extra))


class IdentityShortcut(nn.Module):
    def forward(self, x: Tensor, out_lengths: Lengths) -> Tensor:
        return x


def make_shortcut(in_channels: int, out_channels: int, stride: int, kind: str) -> nn.Module:
    """The shortcut for a block: identity when shapes match, else projection or zero padding."""
    if in_channels == out_channels and stride == 1:
        return IdentityShortcut()
    if kind == "projection":
        return ProjectionShortcut(in_channels, out_channels, stride)
    if kind == "zero_pad":
        if out_channels < in_channels:
            raise ValueError("zero-pad shortcuts cannot reduce channels")
        return ZeroPadShortcut(in_channels, out_channels, stride)
    raise ValueError(f"unknown shortcut kind {kind!r}; choose one of {', '.join(SHORTCUT_KINDS)}")


def drop_path(x: Tensor, p: float, training: bool) -> Tensor:
    """Stochastic depth: drop a sample's whole residual branch with probability p."""
    if p == 0.0 or not training:
        return x
    keep = x.new_empty(x.size(0), 1, 1).bernoulli_(1 - p)
    return x * keep / (1 - p)


class ConvBlock(nn.Module):
    """(Conv1d k3 -> BatchNorm -> ReLU) x 2, plus the input through a shortcut if asked.

    As in the VDCNN paper the shortcut is added to the output of the second
    ReLU, so a block whose residual branch outputs zero is exactly the identity.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        shortcut: bool = False,
        shortcut_kind: str = "projection",
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = Conv1d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = MaskedBatchNorm1d(out_channels)
        self.conv2 = Conv1d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = MaskedBatchNorm1d(out_channels)
        self.shortcut = make_shortcut(in_channels, out_channels, stride, shortcut_kind) if shortcut else None
        self.drop_path = drop_path

    def forward(self, x: Tensor, lengths: Lengths = None) -> tuple[Tensor, Lengths]:
        x = zero_padding(x, lengths)
        out_lengths = halve(lengths) if self.stride == 2 else lengths
        out = relu(self.bn1(self.conv1(x), out_lengths))
        out = zero_padding(out, out_lengths)
        out = relu(self.bn2(self.conv2(out), out_lengths))
        if self.shortcut is not None:
            out = drop_path(out, self.drop_path, self.training) + self.shortcut(x, out_lengths)
        return out, out_lengths


class Stage(nn.Module):
    """One resolution of the network: its downsampling on entry, then ``n_blocks`` ConvBlocks.

    The downsampling is chosen once, by name (``DOWNSAMPLERS``): a pooling layer before the
    blocks, or (``conv``) a stride-2 first convolution in the first block; ``none`` keeps the
    length. The blocks are the stage's items (``stage[0]``, ``len(stage)``), so their weights
    keep the names ``stages.I.J.*`` that run folders store.
    """

    def __init__(self, in_channels: int, out_channels: int, n_blocks: int, downsample: str = "none",
                 shortcut: bool = False, shortcut_kind: str = "projection", drop_path: float = 0.0) -> None:
        super().__init__()
        if downsample not in DOWNSAMPLERS:
            raise ValueError(f"unknown downsampling {downsample!r}; choose {', '.join(DOWNSAMPLERS)}")
        pool = DOWNSAMPLERS[downsample]
        self.downsample = pool() if pool is not None else None
        stride = 2 if downsample == "conv" else 1
        for j in range(n_blocks):
            self.add_module(str(j), ConvBlock(in_channels if j == 0 else out_channels, out_channels,
                                              stride if j == 0 else 1, shortcut, shortcut_kind, drop_path))

    def __len__(self) -> int:
        return len(self._modules) - (self.downsample is not None)

    def __getitem__(self, index: int) -> ConvBlock:
        return self._modules[str(range(len(self))[index])]  # type: ignore[return-value]

    def __iter__(self) -> Iterator[ConvBlock]:
        return (self._modules[str(j)] for j in range(len(self)))  # type: ignore[misc]

    def forward(self, x: Tensor, lengths: Lengths = None) -> tuple[Tensor, Lengths]:
        if self.downsample is not None:
            x, lengths = self.downsample(x, lengths)
        for block in self:
            x, lengths = block(x, lengths)
        return x, lengths
