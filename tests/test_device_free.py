"""Exported TorchScript bundles run on any device: the trace holds no device constant."""

from __future__ import annotations

import io
import re

import pytest
import torch

from tests.variants import Variant
from vdcnn.export import _example_inputs, _export_torchscript
from vdcnn.layers import DOWNSAMPLERS
from vdcnn.model import VDCNN

# Every downsampler (k-max pooling among them) with and without shortcuts, at depth 9.
CASES = [Variant(9, down, sc, "char") for down in DOWNSAMPLERS for sc in ("off", "zero_pad")]


def _device_constants(data: bytes) -> list[str]:
    module = torch.jit.load(io.BytesIO(data), map_location="cpu")
    graphs = [str(module.inlined_graph)]
    return [line.strip() for g in graphs for line in g.splitlines()
            if re.search(r'value="(cpu|cuda)', line) or "Device = prim::Constant" in line]


@pytest.mark.parametrize("variant", CASES, ids=lambda v: v.id)
def test_traced_model_holds_no_device_constant(variant):
    """`torch.jit.trace` records every `device=` argument as a constant: a bundle traced on CPU would
    then make CPU tensors inside a model that `map_location` moved to CUDA."""
    torch.manual_seed(0)
    config = variant.model_config()
    model = VDCNN(config).eval()
    data = _export_torchscript(model, _example_inputs(config.vocab_size, 3, 64, seed=0))
    assert _device_constants(data) == []


def test_bundle_loads_on_every_device_it_finds():
    torch.manual_seed(0)
    config = CASES[-1].model_config()
    model = VDCNN(config).eval()
    data = _export_torchscript(model, _example_inputs(config.vocab_size, 3, 64, seed=0))
    ids, lengths = _example_inputs(config.vocab_size, 2, 80, seed=1)
    with torch.no_grad():
        expected = model(ids, lengths)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        module = torch.jit.load(io.BytesIO(data), map_location=device)
        with torch.no_grad():
            got = module(ids.to(device), lengths.to(device)).cpu()
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
