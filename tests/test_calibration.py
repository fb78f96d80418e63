"""Calibrated probabilities: the temperature fit, ECE, storage in the run, every backend, eval's report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import TINY, write_topic_csv
from vdcnn.calibration import (
    MAX_INVERSE_T, SplineMap, apply_top_label, calibrate, ece_noise_floor, expected_calibration_error,
    fit_temperature, fit_top_label, reliability, temperature_of, top_label_of, torch_top_label,
)
from vdcnn.cli.main import app
from vdcnn.classifier import EnsembleClassifier
from vdcnn.encoders import CharEncoder
from vdcnn.errors import CheckpointError, ConfigError
from vdcnn.evaluate import softmax
from vdcnn.model import ModelConfig
from vdcnn.predict import Classifier


def _draw(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One class per row of ``probs``, drawn with those probabilities."""
    return np.minimum((rng.random((len(probs), 1)) > np.cumsum(probs, axis=1)).sum(axis=1), probs.shape[1] - 1)


def _sample(true_t: float, n: int = 20_000, k: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits / true_t): true_t is the temperature that calibrates them."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (n, k)).astype(np.float32)
    p = softmax(logits, true_t)
    return logits, _draw(rng, p)


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_fit_temperature_recovers_a_known_temperature(true_t):
    logits, labels = _sample(true_t)
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.05)
    entry = calibrate(logits, labels)
    assert entry["nll_after"] <= entry["nll_before"] + 1e-9
    if true_t != 1.0:
        assert entry["ece_after"] < entry["ece_before"] and entry["ece_after"] < 0.02


def test_logits_scaled_by_a_linear_path_at_its_top_weight_are_still_calibrated():
    """A linear path blended in at weight 64 scales the logits by about 65: T must follow them there."""
    logits, labels = _sample(1.0)
    scaled = logits * 65
    assert fit_temperature(scaled, labels) == pytest.approx(65, rel=0.05)
    assert calibrate(scaled, labels)["ece_after"] < 0.02


def test_a_separable_validation_split_does_not_send_the_temperature_to_zero():
    logits = np.array([[5.0, 0.0], [0.0, 5.0]] * 100, dtype=np.float32)
    labels = np.array([0, 1] * 100)
    assert fit_temperature(logits, labels) == pytest.approx(1 / MAX_INVERSE_T, rel=1e-3)


def test_ece_on_a_hand_checked_case():
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.58, 0.42], [0.45, 0.55]])
    labels = np.array([0, 1, 0, 1])
    # 15 bins: 0.9 falls in (13/15, 14/15] with accuracy 1/2; 0.58 and 0.55 in (8/15, 9/15], both right.
    expected = 2 / 4 * abs(0.5 - 0.9) + 2 / 4 * abs(1.0 - (0.58 + 0.55) / 2)
    assert expected_calibration_error(probs, labels) == pytest.approx(expected)
    bins = reliability(probs, labels)
    assert [b["count"] for b in bins if b["count"]] == [2, 2]
    assert bins[13]["accuracy"] == 0.5 and bins[8]["confidence"] == pytest.approx(0.565)
    # A top probability exactly on an edge belongs to the bin it closes: 1.0 to the last one.
    assert reliability(np.array([[1.0, 0.0]]), np.array([0]))[14]["count"] == 1
    assert expected_calibration_error(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([0, 1])) == 0.0


def test_ece_noise_floor_is_what_a_calibrated_model_shows_on_that_many_texts():
    """Labels drawn from the probabilities themselves (a perfectly calibrated model): the observed
    ECE falls inside the floor's range, which shrinks as the texts grow (about 1/sqrt(n));
    an overconfident model's ECE stands far above it."""
    rng = np.random.default_rng(3)
    floors = {}
    for n in (500, 20_000):
        probs = softmax(rng.normal(size=(n, 4)) * 2.5)
        labels = np.array([rng.choice(4, p=p) for p in probs])
        mean, p95 = ece_noise_floor(probs)
        assert 0 < mean < p95 and expected_calibration_error(probs, labels) < p95 * 1.2
        overconfident = softmax(np.log(probs) * 3)
        assert expected_calibration_error(overconfident, labels) > 2 * p95
        floors[n] = mean
    assert floors[500] > 4 * floors[20_000]


def _sure_and_unsure(n: int = 6000, k: int = 15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits of a model that is underconfident where it is unsure and overconfident where it is sure (as
    TNEWS's network + linear path): the label is drawn from softmax(logits * s) with s < 1 for large
    logit spreads and s > 1 for small ones, so no single temperature calibrates them."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1, (n, k)) * rng.uniform(0.3, 3.0, (n, 1))
    spread = logits.std(1, keepdims=True)
    p = softmax(logits * (1.5 / spread) ** 0.6)
    return logits, _draw(rng, p)


def test_the_top_label_map_fixes_what_one_temperature_cannot_and_changes_no_label():
    logits, labels = _sure_and_unsure()
    entry = calibrate(logits[:3000], labels[:3000])
    assert entry["method"] == "temperature+top_label" and entry["top_label_check"]["kept"] is True
    json.dumps(entry)  # stored in config.json as it is
    assert entry["ece_after"] < entry["ece_temperature"]
    params = top_label_of({"calibration": entry})
    scaled = softmax(logits[3000:], entry["temperature"])
    mapped = apply_top_label(scaled, params)
    held = labels[3000:]
    assert expected_calibration_error(mapped, held) < 0.7 * expected_calibration_error(scaled, held)  # on rows not fitted on
    np.testing.assert_array_equal(mapped.argmax(1), scaled.argmax(1))
    np.testing.assert_allclose(mapped.sum(1), 1.0, atol=1e-12)
    import torch

    got = torch_top_label(torch.from_numpy(scaled), params).numpy()
    np.testing.assert_allclose(got, mapped, atol=1e-9)


def test_the_top_label_map_keeps_the_top_label_on_top_whatever_its_parameters():
    """A map that would push the top probability under the second one is held just above it."""
    rng = np.random.default_rng(1)
    probs = softmax(rng.normal(0, 2, (500, 4)))
    probs[:10, 1] = probs[:10, 0]  # ties: the first of them stays the label
    probs /= probs.sum(1, keepdims=True)
    for params in [(0.0, 0.0, -20.0), (5.0, 0.0, 0.0), (0.0, 5.0, 3.0), (1.0, 1.0, 0.0)]:
        mapped = apply_top_label(probs, params)
        np.testing.assert_array_equal(mapped.argmax(1), probs.argmax(1))
        np.testing.assert_allclose(mapped.sum(1), 1.0, atol=1e-12)
        assert (mapped >= 0).all()
    np.testing.assert_allclose(apply_top_label(probs, (1.0, 1.0, 0.0)), probs, atol=1e-12)  # the identity


def _kinked(n: int = 8000, k: int = 15, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose top label is right with a probability that bends twice along the top probability's
    logit x (slope 1, then 0.15 from x = -0.5, then 1.5 from x = 1.5): a shape beta calibration's two
    logarithms cannot follow, and a piecewise-linear map of x can."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1, (n, k)) * rng.uniform(0.3, 4.0, (n, 1))
    probs = softmax(logits)
    top = probs.max(1)
    x = np.log(top) - np.log1p(-top)
    s = np.where(x < -0.5, x, -0.5 + 0.15 * (x + 0.5))
    s = np.where(x > 1.5, -0.5 + 0.3 + 1.5 * (x - 1.5), s)
    right = rng.random(n) < 1 / (1 + np.exp(-s))
    rest = probs.copy()
    rest[np.arange(n), probs.argmax(1)] = 0
    rest /= rest.sum(1, keepdims=True)
    return logits, np.where(right, probs.argmax(1), _draw(rng, rest))


def test_a_spline_map_follows_a_miscalibration_that_beta_calibration_cannot():
    logits, labels = _kinked()
    fit, held = slice(0, 4000), slice(4000, None)
    entry = calibrate(logits[fit], labels[fit])
    check = entry["top_label_check"]
    assert check["chosen"].startswith("spline") and check["heldout_nll"]["beta"] > check["heldout_nll_top_label"]
    assert entry["top_label"]["kind"] == "spline"
    json.dumps(entry)
    params = top_label_of({"calibration": entry})
    assert isinstance(params, SplineMap) and (np.cumsum(params.weights) >= 0).all()
    scaled = softmax(logits[held], entry["temperature"])
    spline = apply_top_label(scaled, params)
    beta = apply_top_label(scaled, fit_top_label(softmax(logits[fit], entry["temperature"]), labels[fit]))
    assert expected_calibration_error(spline, labels[held]) < 0.75 * expected_calibration_error(beta, labels[held])
    np.testing.assert_array_equal(spline.argmax(1), scaled.argmax(1))
    np.testing.assert_allclose(spline.sum(1), 1.0, atol=1e-12)
    import torch

    np.testing.assert_allclose(torch_top_label(torch.from_numpy(scaled), params).numpy(), spline, atol=1e-9)


@pytest.mark.parametrize("entry", [
    {"kind": "spline", "knots": [1.0, 0.5], "weights": [1.0, 0.0, 0.0], "m": 0.0},  # knots out of order
    {"kind": "spline", "knots": [0.0], "weights": [0.5, -1.0], "m": 0.0},  # decreasing past the knot
    {"kind": "spline", "knots": [0.0], "weights": [1.0], "m": 0.0},  # a weight short
    {"kind": "spline", "knots": [0.0], "weights": [1.0, float("nan")], "m": 0.0},
    {"kind": "spline", "knots": "0", "weights": [1.0, 0.0], "m": 0.0},
])
def test_bad_stored_spline_maps_are_refused(entry):
    with pytest.raises(ConfigError, match="spline"):
        top_label_of({"calibration": {"top_label": entry}})


def test_a_temperature_that_calibrates_keeps_no_top_label_map_it_does_not_need():
    """Labels drawn from softmax(logits / 2.5): the temperature alone is right, and the map may only be
    kept where it does not hurt rows it was not fitted on."""
    logits, labels = _sample(2.5, n=6000)
    entry = calibrate(logits, labels)
    check = entry["top_label_check"]
    assert check["heldout_nll_top_label"] >= check["heldout_nll_temperature"] - 0.002
    assert entry["ece_after"] < 0.02
    assert "top_label_check" not in calibrate(logits[:400], labels[:400])  # too few texts: temperature only


def test_bad_stored_temperatures_are_refused():
    assert temperature_of({}) == 1.0 and temperature_of({"calibration": {"method": "none"}}) == 1.0
    for bad in (0, -1, "x", float("nan")):
        with pytest.raises(ConfigError, match="positive number"):
            temperature_of({"calibration": {"temperature": bad}})


@pytest.fixture(scope="module")
def hand_run(tmp_path_factory) -> Path:
    """A small run folder made without training, with a calibration temperature of 2.5 in config.json."""
    from tests.test_export import make_run

    encoder = CharEncoder()
    config = ModelConfig(vocab_size=encoder.vocab_size, num_classes=4, depth=9, channels=(16, 32, 64, 128),
                         fc_dims=(64,))
    run = make_run(tmp_path_factory.mktemp("hand_run"), config, encoder)
    meta = json.loads((run / "config.json").read_text())
    meta["calibration"] = {"method": "temperature", "temperature": 2.5}
    (run / "config.json").write_text(json.dumps(meta))
    return run


def _copy_run(run: Path, to: Path) -> Path:
    """A copy of a run folder's files, to edit its config.json without touching the shared fixture."""
    to.mkdir()
    for f in run.iterdir():
        if f.is_file():
            (to / f.name).write_bytes(f.read_bytes())
    return to


TEXTS = ["Stocks rallied after the central bank held rates.", "The striker scored twice in the final.",
         "A new chip doubles battery life.", "Talks between the two governments broke down.", "ok", ""]


def test_temperature_applied_by_the_run_classifier_labels_unchanged(hand_run):
    clf = Classifier.load(hand_run, device="cpu")
    assert clf.temperature == 2.5
    logits = clf.predict_logits(TEXTS)
    probs = clf.predict_proba(TEXTS)
    np.testing.assert_allclose(probs, softmax(logits / 2.5), rtol=1e-6, atol=1e-12)  # float32 logits
    raw = clf.predict_proba(TEXTS, calibrated=False)
    np.testing.assert_array_equal(raw, softmax(logits))
    assert (probs.argmax(1) == raw.argmax(1)).all()
    assert (probs.max(1) < raw.max(1)).all()  # T > 1 softens every prediction
    assert [p[0][0] for p in clf.predict(TEXTS)] == [clf.labels[i] for i in raw.argmax(1)]


def test_a_run_without_calibration_behaves_as_before(hand_run, tmp_path):
    old = _copy_run(hand_run, tmp_path / "old")
    meta = json.loads((old / "config.json").read_text())
    del meta["calibration"]
    (old / "config.json").write_text(json.dumps(meta))
    clf = Classifier.load(old, device="cpu")
    assert clf.temperature == 1.0 and clf.long_text == "truncate"
    np.testing.assert_array_equal(clf.predict_proba(TEXTS), softmax(clf.predict_logits(TEXTS)))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_bundles_apply_the_temperature(hand_run, tmp_path, fmt):
    pytest.importorskip("onnxruntime")
    from tests.test_export import assert_parity
    from vdcnn.export import export_run

    bundle = export_run(hand_run, fmt, tmp_path / fmt)
    assert json.loads((bundle / "bundle.json").read_text())["calibration"]["temperature"] == 2.5
    loaded = Classifier.load(bundle)
    assert loaded.temperature == 2.5
    reference = Classifier.load(hand_run, device="cpu")
    assert_parity(loaded.predict_proba(TEXTS), reference.predict_proba(TEXTS), what=fmt)
    assert_parity(loaded.predict_proba(TEXTS, calibrated=False), reference.predict_proba(TEXTS, calibrated=False))
    # Without the stored temperature the same bundle gives other (raw) probabilities.
    info = json.loads((bundle / "bundle.json").read_text())
    info["calibration"]["temperature"] = -1
    (bundle / "bundle.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="positive number"):
        Classifier.load(bundle)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
@pytest.mark.parametrize("stored", [{"a": 0.8, "b": 0.4, "m": 0.3},
                                    {"kind": "spline", "knots": [-0.5, 1.0], "weights": [1.2, -0.9, 0.5], "m": 0.2}],
                         ids=["beta", "spline"])
def test_every_backend_applies_the_top_label_map(hand_run, tmp_path, fmt, stored):
    pytest.importorskip("onnxruntime")
    from tests.test_export import assert_parity
    from vdcnn.export import export_run

    run = _copy_run(hand_run, tmp_path / "run")
    meta = json.loads((run / "config.json").read_text())
    meta["calibration"]["top_label"] = stored
    (run / "config.json").write_text(json.dumps(meta))
    clf = Classifier.load(run, device="cpu")
    assert clf.top_label == top_label_of({"calibration": {"top_label": stored}}) is not None
    expected = apply_top_label(softmax(clf.predict_logits(TEXTS) / 2.5), clf.top_label)
    np.testing.assert_allclose(clf.predict_proba(TEXTS), expected, rtol=1e-6, atol=1e-12)  # float32 logits
    bundle = export_run(run, fmt, tmp_path / fmt)
    assert_parity(Classifier.load(bundle).predict_proba(TEXTS), expected, what=fmt)
    explained = clf.explain(TEXTS[:2], method="integrated_gradients")
    np.testing.assert_allclose([e.probability for e in explained], expected[:2].max(1), atol=1e-6)
    meta["calibration"]["top_label"] = {"a": -1, "b": 0.4, "m": 0.3}
    (run / "config.json").write_text(json.dumps(meta))
    with pytest.raises((ConfigError, CheckpointError), match="top_label"):
        Classifier.load(run, device="cpu")


def test_an_ensemble_averages_calibrated_member_probabilities(hand_run):
    a = Classifier.load(hand_run, device="cpu")
    b = Classifier.load(hand_run, device="cpu")
    b.temperature = 0.5
    ensemble = EnsembleClassifier([a, b])
    np.testing.assert_allclose(ensemble.predict_proba(TEXTS), (a.predict_proba(TEXTS) + b.predict_proba(TEXTS)) / 2)
    raw, calibrated = ensemble.predict_proba_raw_and_calibrated(TEXTS)
    np.testing.assert_allclose(raw, a.predict_proba(TEXTS, calibrated=False))
    np.testing.assert_allclose(calibrated, ensemble.predict_proba(TEXTS))


@pytest.fixture(scope="module")
def calibrated_runs(tmp_path_factory) -> dict[str, Path]:
    """Two tiny runs with 120 validation texts (enough to fit a temperature): calibrated and not."""
    root = tmp_path_factory.mktemp("calibrated")
    data = write_topic_csv(root / "topics.csv", rows_per_class=200)
    write_topic_csv(root / "holdout.csv", rows_per_class=200, seed=7)  # eval never scores training rows as test
    runs = {}
    for name, flag in (("on", []), ("off", ["--no-calibrate"])):
        runs[name] = root / name
        result = CliRunner().invoke(app, ["train", "--dataset", str(data), "--out", str(runs[name]),
                                          "--max-length", "64", "--epochs", "1", "--batch-size", "32",
                                          "--val-fraction", "0.2", "--optimizer", "adamw", "--lr", "0.003",
                                          "--no-progress", "--no-baseline", *flag, *TINY])
        assert result.exit_code == 0, result.output
    return runs


def test_training_fits_and_stores_the_temperature(calibrated_runs):
    meta = json.loads((calibrated_runs["on"] / "config.json").read_text())
    entry = meta["calibration"]
    assert entry["method"] == "temperature" and entry["fitted_on"] == "validation" and entry["n"] == 120
    assert 0 < entry["temperature"] != 1.0 and entry["nll_after"] <= entry["nll_before"]
    assert Classifier.load(calibrated_runs["on"]).temperature == entry["temperature"]
    assert meta["long_text"]["max_length"] == 64 and 0 <= meta["long_text"]["train_share_cut"] <= 1
    off = json.loads((calibrated_runs["off"] / "config.json").read_text())["calibration"]
    assert off == {"method": "none", "temperature": 1.0, "reason": "--no-calibrate"}
    assert Classifier.load(calibrated_runs["off"]).temperature == 1.0


def test_eval_reports_ece_before_and_after_and_draws_the_reliability_diagram(calibrated_runs, tmp_path):
    run = calibrated_runs["on"]
    plot = tmp_path / "confusion.png"
    result = CliRunner().invoke(app, ["eval", str(run), str(run.parent / "holdout.csv"), "--split", "train",
                                      "--json", str(tmp_path / "r.json"), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())["calibration"]
    t = json.loads((run / "config.json").read_text())["calibration"]["temperature"]
    assert report["temperature"] == t and report["calibrated"] and report["bins"] == 15
    assert f"ECE       {report['ece_before']:.4f} raw, {report['ece_after']:.4f} calibrated" in result.stdout
    assert sum(b["count"] for b in report["reliability_after"]) == 600
    assert 0 <= report["ece_floor"] <= report["ece_floor_95"] and report["n"] == 600
    assert f"would show {report['ece_floor']:.4f} on these 600 texts" in result.stdout
    png = plot.parent / "reliability-holdout-train.png"  # beside the confusion matrix, named after the data
    assert png.is_file(), result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    uncalibrated = CliRunner().invoke(app, ["eval", str(calibrated_runs["off"]), str(run.parent / "holdout.csv"),
                                            "--split", "train", "--plot", str(tmp_path / "off.png")])
    assert uncalibrated.exit_code == 0 and "not calibrated: temperature 1" in uncalibrated.stdout


def test_eval_of_an_ensemble_reports_each_members_temperature(calibrated_runs, tmp_path):
    run = calibrated_runs["on"]
    result = CliRunner().invoke(app, ["eval", str(run), str(run.parent / "holdout.csv"), "--split", "train",
                                      "--ensemble", str(calibrated_runs["off"]), "--plot", str(tmp_path / "c.png")])
    assert result.exit_code == 0, result.output
    t = json.loads((run / "config.json").read_text())["calibration"]["temperature"]
    assert f"(temperature {t:.3f}, 1.000)" in result.stdout
