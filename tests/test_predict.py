"""Prediction: batch-invariance, bucketed vs unbucketed equality, bounded memory when streaming."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from benchmarks.predict_memory import peak_rss_of_predict
from tests.conftest import real_data_dir
from vdcnn.evaluate import predict_logits
from vdcnn.predict import Classifier


def _peak_rss_of_predict(run: Path, text_file: Path) -> tuple[int, int]:
    """(peak RSS in MiB, output lines) of `vdcnn predict RUN FILE` in a fresh process.

    The tiny run reads long texts as windows by default (its training texts were cut); these
    2,000-character lines are truncated so the test measures streaming, not 60 windows a line."""
    peak, lines, _ = peak_rss_of_predict(run, text_file, "--chunk-size", "512", "--long-text", "truncate")
    return peak // 2**20, lines


def _write_lines(path: Path, n_lines: int, line_chars: int = 2000) -> Path:
    words = "the striker scored a late goal as shares fell after the bank cut its forecast and a new chip".split()
    rng = np.random.default_rng(0)
    with open(path, "w", encoding="utf-8") as f:
        for start in range(0, n_lines, 1000):
            block = []
            for _ in range(min(1000, n_lines - start)):
                line = " ".join(rng.choice(words, line_chars // 4))
                block.append(line[:line_chars])
            f.write("\n".join(block) + "\n")
    return path


def test_streaming_predict_memory_does_not_grow_with_the_file(tiny_run, tmp_path):
    small = _write_lines(tmp_path / "small.txt", 5_000)   # ~10 MB
    large = _write_lines(tmp_path / "large.txt", 80_000)  # ~160 MB: 16x the lines
    small_peak, small_lines = _peak_rss_of_predict(tiny_run, small)
    large_peak, large_lines = _peak_rss_of_predict(tiny_run, large)
    assert (small_lines, large_lines) == (5_000, 80_000)
    size_mb = large.stat().st_size / 2**20
    # Reading the whole file would add at least its size; streaming adds (almost) nothing.
    assert large_peak - small_peak < 0.25 * size_mb, (small_peak, large_peak, size_mb)


def test_a_text_gets_the_same_probabilities_alone_or_among_much_longer_texts(tiny_run):
    clf = Classifier.load(tiny_run)
    short = "The striker scored a late goal."
    long_texts = [("Shares fell after the bank cut its forecast. " * 30).strip(),
                  ("Engineers tested a quantum computer chip; " * 40).strip()]
    alone = clf.predict_proba([short])[0]
    clf.batch_size = 3
    mixed = clf.predict_proba([long_texts[0], short, long_texts[1]])[1]
    np.testing.assert_allclose(alone, mixed, atol=1e-5)


def test_bucketed_and_unbucketed_inference_agree_on_real_texts():
    """Length-bucketed, trimmed batches (the default) give the logits of plain padded batches,
    and a text scored alone gets the same logits as in a batch, within the project's 1e-4.

    Exactness stops at float rounding (~1e-6 here): kernels are picked by shape. A batch of
    one would get other convolution kernels, so inference never runs one (see iterate_ids)."""
    from vdcnn.data import load_split
    from vdcnn.encoders import CharEncoder
    from vdcnn.model import VDCNN, ModelConfig

    real_data_dir()
    texts = load_split("ag_news", "test").texts[::76]  # 100 real texts of varied lengths
    ids, lengths = CharEncoder().encode_batch(texts, 1024)
    torch.manual_seed(0)
    model = VDCNN(ModelConfig(depth=9)).eval()
    bucketed = predict_logits(model, ids, lengths, batch_size=16, trim=True)
    padded = predict_logits(model, ids, lengths, batch_size=16, trim=False)
    np.testing.assert_allclose(bucketed, padded, atol=1e-4, rtol=1e-4)
    alone = np.concatenate([predict_logits(model, ids[i:i + 1], lengths[i:i + 1], 1) for i in range(len(texts))])
    assert (alone.argmax(1) == bucketed.argmax(1)).all()
    assert np.abs(alone - bucketed).max() < 1e-4


def test_folded_and_unfolded_batchnorm_predict_alike(tiny_run):
    texts = ["The striker scored a late goal.", "Shares fell after the bank cut its forecast.", ""]
    folded = Classifier.load(tiny_run)  # the default folds BatchNorm into the convolutions
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in folded.model.modules())
    reference = Classifier.load(tiny_run, fold_bn=False).predict_proba(texts)
    np.testing.assert_allclose(folded.predict_proba(texts), reference, atol=1e-5)


def test_inference_imports_neither_training_nor_the_cli_and_leaves_the_process_alone(tiny_run):
    """Loading and using a classifier pulls in no training code and changes no process setting."""
    import subprocess
    import sys

    code = (
        "import os, sys\n"
        "os.umask(0o027)\n"
        "from vdcnn.predict import Classifier\n"
        "import vdcnn.export, vdcnn.runtime\n"
        f"probs = Classifier.load({str(tiny_run)!r}).predict_proba(['a late goal'])\n"
        "assert probs.shape == (1, 3)\n"
        "loaded = sorted(m for m in sys.modules if m in ('vdcnn.train', 'vdcnn.cli', 'vdcnn.cli.main', 'cli'))\n"
        "now = os.umask(0); os.umask(now)\n"
        "print(loaded, vdcnn.runtime._tuned, oct(now))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[]", "False", "0o27"]  # no train/cli modules, malloc untouched, umask kept


def test_bf16_classifier_predicts_as_autocast_without_casting_weights_per_batch(tiny_run):
    """``bf16=True`` keeps a bf16 copy of the conv path (no weight cast per batch) whose logits are
    autocast's over the float32 model; the classifier's own model stays float32 (explain uses it)."""
    import pytest

    from vdcnn.runtime import bf16_supported

    if not bf16_supported("cpu"):
        pytest.skip("this CPU has no native bf16 (AVX512-BF16 or AMX)")
    texts = ["The striker scored a late goal.", "Shares fell after the bank cut its forecast.", "",
             "A new chip doubles the speed of phones " * 8]
    clf = Classifier.load(tiny_run, bf16=True, long_text="truncate")
    assert all(p.dtype == torch.float32 for p in clf.model.parameters())
    ids, lengths = clf.encoder.encode_batch(texts, clf.max_length)
    autocast = predict_logits(clf.model, ids, lengths, autocast_dtype=torch.bfloat16)
    np.testing.assert_allclose(clf.predict_logits(texts), autocast, atol=1e-6)
    fp32 = Classifier.load(tiny_run, long_text="truncate").predict_logits(texts)
    assert np.abs(clf.predict_logits(texts) - fp32).max() < 0.1  # bf16 rounding, not another model
    assert (clf.predict_logits(texts) != fp32).any()  # and it did run in bf16
