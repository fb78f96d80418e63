"""Model and layers: shapes, gradients, shortcuts, k-max order, padding invariance, counts."""

from __future__ import annotations

import itertools
import random
import warnings

import pytest
import torch
import torch.nn.functional as F

from vdcnn.encoders import CharEncoder
from vdcnn.layers import DOWNSAMPLERS, SHORTCUT_KINDS, ConvBlock, kmax_pool
from vdcnn.errors import ConfigError
from vdcnn.model import (DEPTHS, VDCNN, ModelConfig, count_parameters, create_model, fold_batchnorm, forward_flops,
                         inference_copy, list_models)
import vdcnn.model as model_module
from tests.variants import CORPUS, PAIRWISE_VARIANTS, make_encoder

TEXTS = [*CORPUS[:4], "ok", ""]

# 900 characters of seeded random words: long, and (like real text) without long
# exact repeats, whose equal activations would make float32 k-max ties.
_rng = random.Random(0)
LONG_TEXT = " ".join("".join(_rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(_rng.randint(2, 9)))
                     for _ in range(200))[:900]

VARIANTS = [
    (depth, down, shortcut, kind)
    for depth, down, shortcut in itertools.product(DEPTHS, DOWNSAMPLERS, (False, True))
    for kind in (SHORTCUT_KINDS if shortcut else ("projection",))
]


def small_config(**kw) -> ModelConfig:
    """Paper layout with narrow channels and head, so every variant runs in milliseconds."""
    base = dict(vocab_size=71, num_classes=3, channels=(8, 16, 32, 64), fc_dims=(32,), embedding_dim=8)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("depth,downsample,shortcut,kind", VARIANTS)
def test_every_variant_trains(depth, downsample, shortcut, kind):
    torch.manual_seed(0)
    model = VDCNN(small_config(depth=depth, downsample=downsample, shortcut=shortcut, shortcut_kind=kind))
    ids, lengths = CharEncoder().encode_batch(TEXTS, 96)
    ids, lengths = torch.from_numpy(ids), torch.from_numpy(lengths)
    logits = model(ids, lengths)
    assert logits.shape == (len(TEXTS), 3)
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([0, 1, 2, 0, 1, 2])).backward()
    no_grad = [n for n, p in model.named_parameters()
               if n != "embedding.weight" and (p.grad is None or p.grad.abs().sum() == 0)]
    assert no_grad == []
    # The embedding learns every symbol it saw, but never the padding row.
    assert model.embedding.weight.grad[0].abs().sum() == 0


def brute_force_kmax(x: torch.Tensor, k: int) -> torch.Tensor:
    out = torch.zeros(x.shape[0], x.shape[1], k)
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            values = x[b, c].tolist()
            top = sorted(range(len(values)), key=lambda i: (-values[i], i))[:k]
            out[b, c] = torch.tensor([values[i] for i in sorted(top)])
    return out


@pytest.mark.parametrize("k", [1, 3, 8])
def test_kmax_keeps_top_values_in_original_order(k):
    torch.manual_seed(1)
    x = torch.randn(3, 5, 17)
    assert torch.equal(kmax_pool(x, k), brute_force_kmax(x, k))
    # Ties (ReLU zeros) go to the earlier positions.
    z = torch.relu(torch.randn(2, 4, 12))
    assert torch.equal(kmax_pool(z, 8), brute_force_kmax(z, 8))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_kmax_fast_path_matches_the_stable_sort_on_ties_and_signs(dtype):
    torch.manual_seed(2)
    x = torch.relu(torch.randn(4, 6, 64)) - 0.3 * (torch.rand(4, 6, 64) < 0.2)  # ties at 0 and -0.3, signs
    x = x.to(dtype)  # 16-bit floats take int32 keys, float32 int64 ones
    x[0, 0, :5] = -0.0
    x[1, 2, 10:20] = 2.5  # a tie across the k-th place
    assert torch.equal(kmax_pool(x, 8), brute_force_kmax(x.float(), 8).to(dtype))
    lengths = torch.tensor([64, 40, 9, 3])
    masked = x.clone()
    for b, n in enumerate(lengths):
        masked[b, :, n:] = float("-inf")
    expected = brute_force_kmax(masked.float(), 8).nan_to_num(neginf=0.0).to(dtype)
    assert torch.equal(kmax_pool(x, 8, lengths), expected)
    with torch.inference_mode():  # inference overwrites the activation's padding instead of copying it
        assert torch.equal(kmax_pool(x.clone(), 8, lengths), expected)
        assert torch.equal(kmax_pool(x.clone().transpose(1, 2).contiguous().transpose(1, 2), 8, lengths), expected)


@pytest.mark.parametrize("k", [1, 8, 16])
def test_kmax_on_channels_last_activations_matches_the_stable_sort_with_gradients(k):
    """Channels-last float32 rows (the CPU's layout) are selected by repeated max, the others by
    top-k of integer keys: the same values and the same gradients, with and without lengths, and
    with fewer positions than k (the missing slots read zero)."""
    torch.manual_seed(3)
    base = torch.relu(torch.randn(5, 12, 7)) - 0.5 * (torch.rand(5, 12, 7) < 0.2)  # ties at 0 and -0.5
    base[0, 0, :4] = -0.0
    lengths = torch.tensor([7, 5, 2, 1, 7])
    for lens in (None, lengths):
        grads = []
        for layout in ("contiguous", "channels_last"):
            x = base.clone() if layout == "contiguous" else base.transpose(1, 2).contiguous().transpose(1, 2)
            x.requires_grad_(True)
            out = kmax_pool(x, k, lens)
            masked = base.clone()
            if lens is not None:
                for b, n in enumerate(lens):
                    masked[b, :, n:] = float("-inf")
            expected = brute_force_kmax(masked, min(k, 7))
            expected = torch.cat([expected, torch.zeros(5, 12, k - expected.size(-1))], -1).nan_to_num(neginf=0.0)
            assert torch.equal(out.detach(), expected), (layout, lens)
            out.backward(torch.arange(out.numel(), dtype=torch.float32).reshape(out.shape))
            grads.append(x.grad)
        assert torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("stride,kernel,padding", [(1, 3, 1), (2, 3, 1), (1, 1, 0), (2, 1, 0)])
def test_cpu_conv_is_the_plain_conv1d_in_channels_last_layout(stride, kernel, padding):
    from vdcnn.layers import Conv1d

    torch.manual_seed(3)
    conv = Conv1d(16, 32, kernel, stride=stride, padding=padding)
    x = torch.randn(5, 16, 37, requires_grad=True)
    plain = F.conv1d(x, conv.weight, conv.bias, stride=stride, padding=padding)
    y = conv(x)
    assert y.shape == plain.shape and torch.allclose(y, plain, atol=1e-5, rtol=1e-5)
    assert y.stride(1) == 1  # channels innermost, as oneDNN convolves fastest
    grad = torch.randn_like(plain)
    want = torch.autograd.grad(plain, (x, conv.weight), grad)
    got = torch.autograd.grad(y, (x, conv.weight), grad)
    assert all(torch.allclose(a, b, atol=1e-4, rtol=1e-4) for a, b in zip(got, want))
    with torch.no_grad(), warnings.catch_warnings():  # traced for export it is the plain Conv1d
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(conv, (x,), check_trace=False)(x)
    assert traced.is_contiguous() and torch.allclose(traced, plain, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("variant", PAIRWISE_VARIANTS, ids=lambda v: v.id)
def test_channels_last_layout_keeps_outputs_and_gradients(variant, monkeypatch):
    """The CPU layout (channels-last convolutions, 2-D pooling, where-masking) against the plain
    Conv1d path it replaces: the same logits and gradients (BatchNorm at its running statistics:
    in training mode an untrained deep net amplifies float32 rounding to 1e-2 on either path), and
    the same logits without autograd, folded or not."""
    import vdcnn.layers as layers

    torch.manual_seed(0)
    model = VDCNN(variant.model_config())
    ids, lengths = make_encoder(variant.encoder).encode_batch(TEXTS * 3, 160)
    ids, lengths = torch.from_numpy(ids).long(), torch.from_numpy(lengths).long()
    model.train()
    for _ in range(2):  # non-trivial running statistics
        model(ids, lengths)
    model.eval()

    def run(grad: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad()
        if not grad:
            with torch.inference_mode():
                return model(ids, lengths).clone(), []
        logits = model(ids, lengths)
        (logits * torch.linspace(-1, 1, logits.numel()).reshape(logits.shape)).sum().backward()
        return logits.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    def plain(grad: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        with monkeypatch.context() as m:
            m.setattr(layers, "_eager_cpu", lambda x: False)
            return run(grad)

    (fast, fast_grads), (want, want_grads) = run(True), plain(True)
    assert torch.allclose(fast, want, atol=1e-4, rtol=1e-4)
    assert len(fast_grads) == len(want_grads)
    for a, b in zip(fast_grads, want_grads):  # gradients reach 1e2 in a d49 net: relative to each one's size
        assert (a - b).norm() <= 1e-4 * b.norm() + 1e-6
    for fold in (False, True):
        if fold:
            fold_batchnorm(model)
        (fast, _), (want, _) = run(False), plain(False)
        assert torch.allclose(fast, want, atol=1e-4, rtol=1e-4), (fold, (fast - want).abs().max())


def test_masked_batchnorm_statistics_do_not_depend_on_the_layout():
    from vdcnn.layers import MaskedBatchNorm1d, channels_last

    torch.manual_seed(0)
    x, lengths = torch.randn(6, 32, 40), torch.tensor([40, 33, 20, 7, 1, 40])
    plain, fast = MaskedBatchNorm1d(32).train(), MaskedBatchNorm1d(32).train()
    y = fast(channels_last(x), lengths)
    assert y.stride(1) == 1 and torch.allclose(y, plain(x, lengths), atol=1e-5)
    assert torch.allclose(fast.running_var, plain.running_var, atol=1e-6)


@pytest.mark.parametrize("kind", SHORTCUT_KINDS)
@pytest.mark.parametrize("stride,in_ch,out_ch", [(1, 8, 8), (1, 8, 16), (2, 8, 16)])
def test_zero_residual_block_is_identity_or_shortcut(kind, stride, in_ch, out_ch):
    block = ConvBlock(in_ch, out_ch, stride=stride, shortcut=True, shortcut_kind=kind).eval()
    with torch.no_grad():
        block.bn2.weight.zero_()
        block.bn2.bias.zero_()  # the residual branch F(x) is now exactly 0
    x = torch.randn(2, in_ch, 10)
    y, _ = block(x)
    if in_ch == out_ch and stride == 1:
        assert torch.equal(y, x)
    else:
        assert y.shape == (2, out_ch, (10 + stride - 1) // stride)
        assert torch.equal(y, block.shortcut(x, None))
        if kind == "zero_pad":
            assert torch.equal(y[:, :in_ch], x[:, :, ::stride])
            assert torch.equal(y[:, in_ch:], torch.zeros_like(y[:, in_ch:]))


@pytest.mark.parametrize("downsample", list(DOWNSAMPLERS))
def test_projection_shapes_line_up_at_every_stage(downsample):
    model = VDCNN(small_config(depth=17, downsample=downsample, shortcut=True))
    x = torch.randn(2, 8, 64)
    lengths = torch.tensor([64, 40])
    strides = []
    for stage in model.stages:
        if stage.downsample is not None:
            x, lengths = stage.downsample(x, lengths)
        for block in stage:
            y, new_lengths = block(x, lengths)
            expected = x.shape[-1] if block.stride == 1 else (x.shape[-1] + 1) // 2
            assert y.shape == (2, block.conv2.out_channels, expected)
            assert new_lengths.tolist() == (lengths if block.stride == 1 else (lengths + 1) // 2).tolist()
            strides.append(block.stride)
            x, lengths = y, new_lengths
    # conv downsampling halves the length in each later stage's first block; the others pool between stages.
    assert strides.count(2) == (3 if downsample == "conv" else 0)
    assert x.shape[-1] == (8 if downsample != "none" else 64)


def independent_parameter_count(depth: int, vocab: int = 71, classes: int = 4) -> int:
    """The plain VDCNN counted by hand: bias-free convs before BN, biased first conv and FCs."""
    count = vocab * 16 + (16 * 64 * 3 + 64)
    in_ch = 64
    for blocks, ch in zip(DEPTHS[depth], (64, 128, 256, 512)):
        for _ in range(blocks):
            count += in_ch * ch * 3 + ch * ch * 3 + 4 * ch
            in_ch = ch
    return count + (512 * 8 * 2048 + 2048) + (2048 * 2048 + 2048) + (2048 * classes + classes)


@pytest.mark.parametrize("depth,millions", [(9, 14.18), (17, 16.27), (29, 16.64), (49, 19.77)])
def test_parameter_counts_match_an_independent_count(depth, millions):
    model = VDCNN(ModelConfig(depth=depth))
    assert count_parameters(model) == independent_parameter_count(depth)
    assert round(count_parameters(model) / 1e6, 2) == millions
    assert round(count_parameters(model.head) / 1e6, 2) == 12.60


def test_flops_of_the_paper_presets():
    assert round(forward_flops(ModelConfig(depth=9)) / 1e9, 2) == 0.61
    assert round(forward_flops(ModelConfig(depth=29)) / 1e9, 2) == 1.82


def _alone_padded_batched(model, texts, encoder=CharEncoder(), max_length=1024):
    ids, lengths = encoder.encode_batch(texts, max_length)
    ids, lengths = torch.from_numpy(ids), torch.from_numpy(lengths)
    with torch.no_grad():
        padded = model(ids)  # lengths inferred from the padding
        alone = torch.cat([model(ids[i:i + 1, : max(int(lengths[i]), 1)]) for i in range(len(texts))])
        long_mates = model(ids[:, : int(lengths.max())], lengths)
    return padded, alone, long_mates


# Pairwise over depth x downsampling x shortcut kind x encoder (see tests/variants.py): the whole
# product (144) took 472 s for folding and ~5 s a case for padding on the shared 2 cores.
@pytest.mark.parametrize("variant", PAIRWISE_VARIANTS, ids=lambda v: v.id)
def test_padding_never_changes_the_output(variant):
    torch.manual_seed(0)
    model = VDCNN(variant.model_config()).eval()
    encoder = make_encoder(variant.encoder)
    # Float64: exact up to rounding. Float32: within 1e-5 relative to the logit scale, except that
    # k-max pooling may keep another of two candidates a rounding apart (kernels differ by shape), which
    # moves an untrained net's logits a lot: at most one of the texts, keeping its predicted class.
    texts = TEXTS + [LONG_TEXT]
    padded, alone, mates = _alone_padded_batched(model.double(), texts, encoder)
    assert torch.allclose(padded, alone, atol=1e-9, rtol=0)
    assert torch.allclose(padded, mates, atol=1e-9, rtol=0)
    padded, alone, mates = _alone_padded_batched(model.float(), texts, encoder)
    scale = padded.abs().max().clamp(min=1)
    for other in (alone, mates):
        moved = (padded - other).abs().amax(1) / scale
        assert int((moved >= 1e-5).sum()) <= 1, moved
        assert torch.equal(padded.argmax(1), other.argmax(1))


def test_paper_sized_model_is_padding_invariant_in_float32():
    torch.manual_seed(0)
    model = VDCNN(ModelConfig(depth=9)).eval()
    padded, alone, mates = _alone_padded_batched(model, TEXTS)
    assert (padded - alone).abs().max() < 1e-5
    assert (padded - mates).abs().max() < 1e-5


def test_training_batchnorm_counts_only_real_positions():
    torch.manual_seed(0)
    model = VDCNN(small_config(depth=9, shortcut=True)).train()
    ids, lengths = CharEncoder().encode_batch(TEXTS, 200)
    ids, lengths = torch.from_numpy(ids).long(), torch.from_numpy(lengths).long()
    short = ids[:, : int(lengths.max())]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    out_short = model(short, lengths)
    stats_short = model.stages[0][0].bn1.running_mean.clone()
    model.load_state_dict(state)
    out_long = model(ids, lengths)  # same batch, padded further
    assert torch.allclose(out_short, out_long, atol=1e-5)
    assert torch.allclose(stats_short, model.stages[0][0].bn1.running_mean, atol=1e-6)


def test_unmasked_mode_sees_padding():
    torch.manual_seed(0)
    model = VDCNN(small_config(depth=9, mask_padding=False)).eval()
    ids, _ = CharEncoder().encode_batch(TEXTS[:2], 256)
    ids = torch.from_numpy(ids)
    with torch.no_grad():
        assert not torch.allclose(model(ids), model(ids[:, :120]), atol=1e-4)


@pytest.mark.parametrize("variant", PAIRWISE_VARIANTS, ids=lambda v: v.id)
def test_batchnorm_folding_keeps_outputs(variant):
    torch.manual_seed(0)
    model = VDCNN(variant.model_config())
    ids, lengths = make_encoder(variant.encoder).encode_batch(TEXTS * 3, 160)
    ids, lengths = torch.from_numpy(ids).long(), torch.from_numpy(lengths).long()
    model.train()
    for _ in range(3):  # give BatchNorm non-trivial running statistics
        model(ids, lengths)
    model.eval()
    with torch.no_grad():
        before = model(ids, lengths)
        after = fold_batchnorm(model)(ids, lengths)
    assert torch.allclose(before, after, atol=1e-4, rtol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in model.modules())
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv1d)][1:]  # after the first conv
    assert convs and all(c.bias is not None for c in convs)  # every conv took its BatchNorm in


def test_inference_copy_scores_folded_and_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = VDCNN(ModelConfig(depth=9, vocab_size=make_encoder("char").vocab_size, num_classes=3, mask_padding=True))
    ids, lengths = make_encoder("char").encode_batch(TEXTS * 3, 160)
    ids, lengths = torch.from_numpy(ids).long(), torch.from_numpy(lengths).long()
    model.train()
    for _ in range(3):
        model(ids, lengths)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    copy = inference_copy(model)
    assert copy is not model and model.training  # the trained model keeps its mode, BatchNorm and weights
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in copy.modules())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(ids, lengths), copy(ids, lengths), atol=1e-4, rtol=1e-4)
    assert inference_copy(copy) is copy  # nothing left to fold


@pytest.mark.parametrize("bad", [dict(depth=7), dict(downsample="avg"), dict(shortcut_kind="dense"),
                                 dict(depth=None, stages=(1, 0, 1, 1)), dict(dropout=1.5), dict(num_classes=1)])
def test_bad_model_settings_raise_clear_errors(bad):
    from vdcnn.errors import ConfigError

    with pytest.raises(ConfigError):
        ModelConfig(**bad)


def test_custom_stages():
    cfg = ModelConfig(depth=None, stages=(3, 1, 1, 2), shortcut=True)
    assert cfg.conv_layers == 1 + 2 * 7
    assert len(VDCNN(cfg).stages[0]) == 3


@pytest.mark.parametrize("name", list_models())
def test_every_named_model_builds_the_papers_layout(name):
    depth = int(name.removeprefix("vdcnn"))
    overrides = dict(num_classes=3, channels=(8, 16, 32, 64), fc_dims=(32,), embedding_dim=8, shortcut=True)
    by_name, by_factory = create_model(name, **overrides), getattr(model_module, name)(**overrides)
    for model in (by_name, by_factory):
        assert [len(stage) for stage in model.stages] == list(DEPTHS[depth])
        assert model.config.conv_layers == depth and model.config.shortcut
        ids = torch.randint(1, 71, (2, 40))
        assert model.eval()(ids).shape == (2, 3)
    assert count_parameters(by_name) == count_parameters(by_factory)


def test_paper_defaults_and_unknown_names():
    model = create_model("vdcnn29")
    assert model.config.fc_dims == (2048, 2048) and model.config.downsample == "max"
    assert [s.downsample is None for s in model.stages] == [True, False, False, False]
    with pytest.raises(ConfigError, match="vdcnn9, vdcnn17, vdcnn29, vdcnn49"):
        create_model("vdcnn30")
    with pytest.raises(ConfigError, match="unknown model setting"):
        create_model("vdcnn9", widths=3)


@pytest.mark.parametrize("downsample", list(DOWNSAMPLERS))
def test_each_stage_owns_its_downsampling_and_keeps_the_stored_weight_names(downsample):
    model = VDCNN(small_config(depth=17, downsample=downsample, shortcut=True))
    pools = [type(s.downsample).__name__ if s.downsample is not None else None for s in model.stages]
    expected = {"max": "MaxPoolDown", "kmax": "KMaxDown"}.get(downsample)
    assert pools == [None] + [expected] * 3
    strided = [stage[0].stride for stage in model.stages]
    assert strided == [1] + [2 if downsample == "conv" else 1] * 3
    # Run folders store weights as stages.I.J.*: the layout of every saved model so far.
    keys = model.state_dict().keys()
    assert "stages.1.0.conv1.weight" in keys and "stages.3.1.bn2.running_var" in keys
    assert not any("downsample" in k for k in keys)
