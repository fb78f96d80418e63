"""Calibrated probabilities: temperature scaling, a top-label map, expected calibration error,
reliability diagrams.

After training, one temperature ``T > 0`` is fitted on the validation split's logits by
minimising the negative log-likelihood of ``softmax(logits / T)`` (Guo et al., 2017). One
temperature cannot fix a model that is underconfident where it is unsure and overconfident where
it is sure (TNEWS: ECE 0.049 on validation after T). So, with enough validation texts, a
monotone map of the top probability ``c`` follows, fitted on whether the top label was right: beta
calibration (Kull et al., 2017), ``logit g = a ln c - b ln(1 - c) + m`` with ``a, b >= 0``, or a
monotone piecewise-linear function of ``logit c`` with one to three knots at quantiles of the
fitting rows (``SplineMap``: on TNEWS beta calibration fitted on the test split itself still left
an ECE of 0.019, the spline fitted on validation 0.016), whichever gives the lowest NLL on
validation rows it was not fitted on (two folds). The top class gets ``g`` and the others share
``1 - g`` in their proportions. The map is kept only when it beats the temperature alone on
those held-out rows, and ``g`` is held above every other class's share, so predicted labels
never change (neither does dividing by ``T``, in float64). Both are stored in ``config.json``
under ``calibration`` (``temperature``, ``top_label``) and every backend applies them after its
logits. A run without the key has ``T = 1``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence, Union

import numpy as np

from .errors import ConfigError

ECE_BINS = 15
# The search range of 1/T. A validation split the model gets all right pulls T towards 0 without
# end; the upper bound keeps such a fit from making every probability 0 or 1. T goes up to 500:
# a linear path blended in at weight 64 (``linear_path.BLEND_WEIGHTS``) scales the logits by ~65.
MIN_INVERSE_T, MAX_INVERSE_T = 0.002, 20.0
# Fewer validation texts than this fit a temperature to noise: the run keeps T = 1.
MIN_CALIBRATION_TEXTS = 100
# Fewer than this: temperature only (the top-label map has three to five parameters, checked on half the texts).
MIN_TOP_LABEL_TEXTS = 500
SPLINE_KNOTS = (1, 2, 3)  # knots of the piecewise-linear top-label maps tried beside beta calibration


@dataclass(frozen=True)
class SplineMap:
    """A monotone piecewise-linear map of the top probability's logit ``x = ln c - ln(1 - c)``:
    ``logit g = m + weights[0] * x + sum_j weights[j + 1] * max(x - knots[j], 0)``, where every
    running sum of ``weights`` (the slope of one segment) is >= 0."""

    knots: tuple[float, ...]
    weights: tuple[float, ...]
    m: float

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "spline", "knots": list(self.knots), "weights": list(self.weights), "m": self.m}


# Beta calibration's (a, b, m), or a spline.
TopLabelMap = Union[tuple[float, float, float], SplineMap]


def temperature_of(meta: dict[str, Any] | None) -> float:
    """The temperature stored in a run's ``config.json`` or a bundle's ``bundle.json`` (1 when none)."""
    calibration = (meta or {}).get("calibration") or {}
    t = calibration.get("temperature", 1.0) if isinstance(calibration, dict) else 1.0
    try:
        t = float(t)
    except (TypeError, ValueError):
        t = float("nan")
    if not (math.isfinite(t) and t > 0):
        raise ConfigError(f"the stored calibration temperature must be a positive number, got {t!r}")
    return t


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Probabilities of ``logits / temperature`` in float64 (dividing there keeps every row's order)."""
    scaled = np.asarray(logits, dtype=np.float64)
    if temperature != 1.0:
        scaled = scaled / temperature
    if not scaled.size:
        return scaled.copy()
    exp = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def _nll(logits: np.ndarray, labels: np.ndarray, inverse_t: float) -> float:
    z = logits * inverse_t
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature that minimises the NLL of ``softmax(logits / T)`` on ``labels``.

    The NLL is convex in ``1/T``, so a bounded Brent search on ``1/T`` finds the global minimum
    within ``T`` in [0.05, 500].
    """
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or len(logits) != len(labels) or not len(labels):
        raise ConfigError("fit_temperature needs logits (N, classes) and N labels, N > 0")
    if not np.isfinite(logits).all():
        raise ConfigError("fit_temperature got non-finite logits")
    result = minimize_scalar(lambda b: _nll(logits, labels, b), bounds=(MIN_INVERSE_T, MAX_INVERSE_T),
                             method="bounded", options={"xatol": 1e-6})
    return float(1.0 / result.x)


def calibrated_nll(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / T)`` at the fitted ``T``:
    how well the logits rank and separate the classes, whatever their scale (a proper score that
    uses every row's probabilities, so it is less noisy on a few hundred rows than accuracy)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    return _nll(logits, labels, 1.0 / fit_temperature(logits, labels))


def _bin_index(confidence: np.ndarray, bins: int) -> np.ndarray:
    """Bin ``i`` holds confidences in ``(i/bins, (i+1)/bins]`` (bin 0 also holds 0)."""
    return np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> list[dict[str, Any]]:
    """Per equal-width bin of the top probability: its range, count, mean confidence and accuracy."""
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(labels)
    index = _bin_index(confidence, bins)
    rows = []
    for b in range(bins):
        inside = index == b
        n = int(inside.sum())
        rows.append({"low": b / bins, "high": (b + 1) / bins, "count": n,
                     "confidence": float(confidence[inside].mean()) if n else None,
                     "accuracy": float(correct[inside].mean()) if n else None})
    return rows


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: the count-weighted mean over ``bins`` equal-width bins of |accuracy - mean top probability|."""
    n = len(labels)
    if not n:
        return 0.0
    return float(sum(r["count"] / n * abs(r["accuracy"] - r["confidence"])
                     for r in reliability(probs, labels, bins) if r["count"]))


def ece_noise_floor(probs: np.ndarray, bins: int = ECE_BINS, draws: int = 200, seed: int = 0) -> tuple[float, float]:
    """The ECE a perfectly calibrated model with these top probabilities would still show on this
    many texts (each top label drawn right with its own probability): the mean and the 95th
    percentile over ``draws``. An ECE within it is sampling noise, not miscalibration."""
    confidence = np.asarray(probs, dtype=np.float64).max(axis=1)
    n = len(confidence)
    if not n:
        return 0.0, 0.0
    index = _bin_index(confidence, bins)
    expected = np.bincount(index, weights=confidence, minlength=bins)
    rng = np.random.default_rng(seed)
    eces = np.array([np.abs(np.bincount(index, weights=rng.random(n) < confidence, minlength=bins) - expected).sum() / n
                     for _ in range(draws)])
    return float(eces.mean()), float(np.quantile(eces, 0.95))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """The logistic function without overflow (and without importing scipy on the predict path)."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _top_features(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    top = np.clip(np.asarray(probs, dtype=np.float64).max(axis=1), 1e-12, 1 - 1e-12)
    return np.log(top), -np.log1p(-top)


def _spline_basis(x: np.ndarray, knots: Sequence[float]) -> np.ndarray:
    return np.stack([x] + [np.maximum(x - k, 0.0) for k in knots], axis=1)


def _fit_logistic(features: np.ndarray, right: np.ndarray, start: np.ndarray,
                  bounds: list[tuple[float | None, float | None]], to_weights: np.ndarray) -> np.ndarray:
    """Parameters ``theta`` (bounded) of ``logit g = features @ (to_weights @ theta[:-1]) + theta[-1]``
    that minimise the logistic loss of ``g`` against ``right``."""
    from scipy.optimize import minimize

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = features @ (to_weights @ theta[:-1]) + theta[-1]
        g = _sigmoid(z) - right
        return float(np.mean(np.logaddexp(0.0, z) - right * z)), np.append(
            to_weights.T @ (features.T @ g) / len(right), np.mean(g))

    return minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds).x


def _right(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return (np.asarray(probs).argmax(axis=1) == np.asarray(labels)).astype(np.float64)


def fit_top_label(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float, float]:
    """Beta calibration ``(a, b, m)`` of the top probability on whether the top label is right
    (logistic loss; ``a, b >= 0`` keep the map monotone; ``(1, 1, 0)`` is the identity)."""
    log_c, log_rest = _top_features(probs)
    theta = _fit_logistic(np.stack([log_c, log_rest], axis=1), _right(probs, labels), np.array([1.0, 1.0, 0.0]),
                          [(0.0, None), (0.0, None), (None, None)], np.eye(2))
    return tuple(float(v) for v in theta)  # type: ignore[return-value]


def fit_spline_map(probs: np.ndarray, labels: np.ndarray, knots: int) -> SplineMap:
    """A monotone piecewise-linear map (``SplineMap``) of the top probability's logit on whether the top
    label is right, with its knots at quantiles of these rows' logits (fewer where they repeat)."""
    log_c, log_rest = _top_features(probs)
    x = log_c + log_rest
    at = np.unique(np.quantile(x, np.linspace(0.0, 1.0, knots + 2)[1:-1])) if knots else np.zeros(0)
    n = len(at) + 1
    to_weights = np.eye(n) - np.eye(n, k=-1)  # segment slopes (>= 0) -> the basis' weights
    theta = _fit_logistic(_spline_basis(x, at), _right(probs, labels), np.append(np.ones(n), 0.0),
                          [(0.0, None)] * n + [(None, None)], to_weights)
    weights = to_weights @ theta[:-1]
    return SplineMap(tuple(float(k) for k in at), tuple(float(w) for w in weights), float(theta[-1]))


def _map_logit(params: TopLabelMap, log_c: Any, log_rest: Any) -> Any:
    """``logit g`` of the map ``params`` from ``ln c`` and ``-ln(1 - c)`` (numpy arrays or torch tensors)."""
    if isinstance(params, SplineMap):
        x = log_c + log_rest
        z = params.m + params.weights[0] * x
        for knot, weight in zip(params.knots, params.weights[1:]):
            z = z + weight * (x - knot).clip(min=0.0)
        return z
    a, b, m = params
    return a * log_c + b * log_rest + m


def apply_top_label(probs: np.ndarray, params: TopLabelMap | None) -> np.ndarray:
    """``probs`` with the top class's probability mapped by ``params`` (beta calibration's ``(a, b, m)`` or a
    ``SplineMap``) and the other classes sharing the rest in their proportions; the top class stays strictly on top."""
    probs = np.asarray(probs, dtype=np.float64)
    if params is None or not probs.size:
        return probs
    g = _sigmoid(_map_logit(params, *_top_features(probs)))
    ordered = np.sort(probs, axis=1)
    top, second = ordered[:, -1], (ordered[:, -2] if probs.shape[1] > 1 else np.zeros(len(probs)))
    rest = 1.0 - top
    sure = rest <= 1e-12  # nothing left to share: kept as it is
    # Above every other class after the rescaling: g > second * (1 - g) / rest.
    g = np.where(sure, top, np.clip(np.maximum(g, second / np.maximum(rest + second, 1e-300) * (1 + 1e-9)), 0.0, 1.0))
    out = probs * np.where(sure, 1.0, (1.0 - g) / np.maximum(rest, 1e-300))[:, None]
    out[np.arange(len(probs)), probs.argmax(axis=1)] = g
    return out


def torch_top_label(probs: Any, params: TopLabelMap | None) -> Any:
    """``apply_top_label`` on a torch tensor, differentiable (for integrated gradients)."""
    import torch

    if params is None:
        return probs
    top, index = probs.max(dim=1, keepdim=True)
    top = top.clamp(1e-12, 1 - 1e-12)
    second = probs.topk(2, dim=1).values[:, 1:2] if probs.size(1) > 1 else torch.zeros_like(top)
    rest = 1.0 - top
    g = torch.sigmoid(_map_logit(params, torch.log(top), -torch.log1p(-top)))
    g = torch.maximum(g, second / (rest + second).clamp_min(1e-30) * (1 + 1e-9)).clamp(0.0, 1.0)
    scaled = probs * (1.0 - g) / rest.clamp_min(1e-12)
    return scaled.scatter(1, index, g)


def top_label_of(meta: dict[str, Any] | None) -> TopLabelMap | None:
    """The top-label map stored in a run's or bundle's ``calibration``: beta calibration's ``(a, b, m)``,
    a ``SplineMap`` (``"kind": "spline"``), or None when none."""
    calibration = (meta or {}).get("calibration") or {}
    entry = calibration.get("top_label") if isinstance(calibration, dict) else None
    if entry is None:
        return None
    if isinstance(entry, dict) and entry.get("kind") == "spline":
        return _spline_of(entry)
    try:
        params = tuple(float(entry[k]) for k in ("a", "b", "m"))
    except (TypeError, KeyError, ValueError):
        raise ConfigError("the stored calibration top_label must hold numbers a, b and m") from None
    if not all(math.isfinite(v) for v in params) or params[0] < 0 or params[1] < 0:
        raise ConfigError(f"the stored calibration top_label must hold finite a, b >= 0 and m, got {entry!r}")
    return params  # type: ignore[return-value]


def _spline_of(entry: dict[str, Any]) -> SplineMap:
    bad = ConfigError("the stored calibration top_label spline must hold increasing finite knots, one more finite "
                      f"weight than knots with every running sum >= 0 (a monotone map) and a finite m, got {entry!r}")
    if not all(isinstance(entry.get(key), list) for key in ("knots", "weights")):
        raise bad
    try:
        knots = tuple(float(k) for k in entry["knots"])
        weights = tuple(float(w) for w in entry["weights"])
        m = float(entry["m"])
    except (TypeError, KeyError, ValueError):
        raise bad from None
    values = knots + weights + (m,)
    if (len(weights) != len(knots) + 1 or not all(math.isfinite(v) for v in values)
            or any(b <= a for a, b in zip(knots, knots[1:])) or min(np.cumsum(weights)) < -1e-9):
        raise bad
    return SplineMap(knots, weights, m)


def _probs_nll(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-300, 1.0))))


def _top_label_candidates() -> dict[str, Callable[[np.ndarray, np.ndarray], TopLabelMap]]:
    out: dict[str, Callable[[np.ndarray, np.ndarray], TopLabelMap]] = {"beta": fit_top_label}
    for k in SPLINE_KNOTS:
        out[f"spline, {k} knot{'s' if k > 1 else ''}"] = lambda p, y, k=k: fit_spline_map(p, y, k)
    return out


def _choose_top_label(probs: np.ndarray, labels: np.ndarray) -> tuple[str | None, dict[str, Any]]:
    """The top-label map (a name of ``_top_label_candidates``) with the lowest NLL on validation rows it was
    not fitted on (two folds: even and odd rows), or None where none beats the temperature alone there;
    and the check's report."""
    folds = [np.arange(len(labels)) % 2 == k for k in (0, 1)]
    n = max(len(labels), 1)
    before = sum(_probs_nll(probs[held], labels[held]) * held.sum() for held in folds) / n
    heldout: dict[str, float] = {}
    for name, fit in _top_label_candidates().items():
        total = 0.0
        for fit_rows, held in (folds, folds[::-1]):
            params = fit(probs[fit_rows], labels[fit_rows])
            total += _probs_nll(apply_top_label(probs[held], params), labels[held]) * held.sum()
        heldout[name] = total / n
    best = min(heldout, key=heldout.get)  # type: ignore[arg-type]
    kept = bool(heldout[best] < before)
    report = {"heldout_nll_temperature": round(float(before), 6), "heldout_nll_top_label": round(heldout[best], 6),
              "heldout_nll": {k: round(v, 6) for k, v in heldout.items()}, "kept": kept}
    if kept:
        report["chosen"] = best
    return (best if kept else None), report


def calibrate(logits: np.ndarray, labels: np.ndarray, fitted_on: str = "validation") -> dict[str, Any]:
    """The ``calibration`` entry of ``config.json``: the fitted temperature, the top-label map where it
    pays (``top_label``), ECE and NLL before and after."""

    labels = np.asarray(labels, dtype=np.int64)
    t = round(fit_temperature(logits, labels), 6)  # the value stored is the value scored
    logits64 = np.asarray(logits, dtype=np.float64)
    scaled = softmax(logits, t)
    entry = {
        "method": "temperature",
        "temperature": t,
        "fitted_on": fitted_on,
        "n": int(len(labels)),
        "ece_before": round(expected_calibration_error(softmax(logits), labels), 6),
        "ece_after": round(expected_calibration_error(scaled, labels), 6),
        "nll_before": round(_nll(logits64, labels, 1.0), 6),
        "nll_after": round(_nll(logits64, labels, 1.0 / t), 6),
        "bins": ECE_BINS,
    }
    if len(labels) >= MIN_TOP_LABEL_TEXTS and logits64.shape[1] > 1:
        chosen, entry["top_label_check"] = _choose_top_label(scaled, labels)
        if chosen is not None:
            params = _top_label_candidates()[chosen](scaled, labels)
            stored = (params.to_dict() if isinstance(params, SplineMap)
                      else {"a": params[0], "b": params[1], "m": params[2]})
            params = top_label_of({"calibration": {"top_label": stored}})  # the value stored is the value scored
            mapped = apply_top_label(scaled, params)
            entry.update(method="temperature+top_label", top_label=stored,
                         ece_temperature=entry["ece_after"],
                         ece_after=round(expected_calibration_error(mapped, labels), 6),
                         nll_after=round(_probs_nll(mapped, labels), 6))
    return entry


def calibrated_softmax(logits: np.ndarray, temperature: float = 1.0,
                       top_label: TopLabelMap | None = None) -> np.ndarray:
    """The calibrated probabilities of ``logits``: softmax over ``temperature``, then the top-label map."""
    return apply_top_label(softmax(logits, temperature), top_label)


def format_calibration(entry: dict[str, Any]) -> str:
    """One log line for a ``calibration`` entry."""
    kind = (entry.get("top_label_check") or {}).get("chosen", "beta")
    top = (f" and a top-label map ({kind}; ECE {entry['ece_temperature']:.4f} with the temperature alone)"
           if entry.get("top_label") else "")
    return (f"calibration: temperature {entry['temperature']:.3f}{top} fitted on {entry['fitted_on']} "
            f"({entry['n']:,} texts): ECE {entry['ece_before']:.4f} -> {entry['ece_after']:.4f}, "
            f"NLL {entry['nll_before']:.4f} -> {entry['nll_after']:.4f}")


def after_training(model: Any, train_set: Any, val_set: Any, cfg: Any, device: Any, trim: bool,
                   log: Callable[[str], None]) -> dict[str, Any]:
    """What a finished run adds to ``config.json``: ``long_text`` (the share of training texts cut)
    and, unless ``train.calibrate`` is off, ``calibration`` (temperature fitted on ``val_set``)."""
    from .evaluate import predict_logits
    from .long_text import long_text_stats

    entries: dict[str, Any] = {"long_text": long_text_stats(train_set.lengths, cfg.encoder.max_length)}
    if entries["long_text"]["default"] == "windows":
        log(f"long texts: {entries['long_text']['train_share_cut']:.0%} of the training texts were cut at "
            f"{cfg.encoder.max_length} ids, so inference reads longer texts as overlapping windows by default")
    if np.asarray(val_set.labels).ndim == 2:
        return entries  # multi-label: vdcnn.multilabel fits per-label calibration and thresholds
    if not getattr(cfg.train, "calibrate", True):
        entries["calibration"] = {"method": "none", "temperature": 1.0, "reason": "--no-calibrate"}
    elif len(val_set) < MIN_CALIBRATION_TEXTS:
        entries["calibration"] = {"method": "none", "temperature": 1.0,
                                  "reason": f"{len(val_set)} validation texts (fewer than {MIN_CALIBRATION_TEXTS})"}
        log(f"calibration: skipped, {entries['calibration']['reason']}; probabilities are the raw softmax")
    else:
        logits = predict_logits(model, val_set.ids, val_set.lengths, max(cfg.train.batch_size, 256), device, trim)
        if np.isfinite(logits).all():
            entries["calibration"] = calibrate(logits, val_set.labels)
            log(format_calibration(entries["calibration"]))
        else:
            log("calibration: skipped, the model gives non-finite validation logits")
    return entries


def calibration_report(classifier: Any, raw: np.ndarray, calibrated: np.ndarray, labels: np.ndarray,
                       bins: int = ECE_BINS) -> dict[str, Any]:
    """ECE and reliability bins of the raw and the calibrated probabilities of ``classifier``
    (an ensemble: the means of its members' raw and calibrated probabilities)."""
    members = getattr(classifier, "members", [classifier])
    temperatures = [float(getattr(m, "temperature", 1.0)) for m in members]
    mapped = [getattr(m, "top_label", None) is not None for m in members]
    floor, floor95 = ece_noise_floor(calibrated, bins)
    return {
        "temperature": temperatures[0] if len(temperatures) == 1 else temperatures,
        "top_label": mapped[0] if len(mapped) == 1 else mapped,
        "calibrated": any(t != 1.0 for t in temperatures) or any(mapped),
        "bins": bins,
        "ece_before": expected_calibration_error(raw, labels, bins),
        "ece_after": expected_calibration_error(calibrated, labels, bins),
        "ece_floor": floor,  # what a perfectly calibrated model would show on these texts (ece_noise_floor)
        "ece_floor_95": floor95,
        "n": int(len(labels)),
        "reliability_before": reliability(raw, labels, bins),
        "reliability_after": reliability(calibrated, labels, bins),
    }


def format_calibration_report(report: dict[str, Any]) -> str:
    """The calibration lines of ``vdcnn eval``."""
    head = f"calibration ({report['bins']}-bin expected calibration error of the top probability)"
    floor = ""
    if "ece_floor" in report:
        floor = (f"\nnoise     a perfectly calibrated model would show {report['ece_floor']:.4f} on these "
                 f"{report['n']:,} texts (95 % of draws below {report['ece_floor_95']:.4f})")
    if not report["calibrated"]:
        return f"{head}\nECE       {report['ece_before']:.4f} (not calibrated: temperature 1){floor}"
    top = report.get("top_label")
    top = " and a top-label map" if top is True or (isinstance(top, list) and any(top)) else ""
    return (f"{head}\nECE       {report['ece_before']:.4f} raw, {report['ece_after']:.4f} calibrated "
            f"(temperature {format_temperatures(report)}{top}){floor}")


def format_temperatures(report: dict[str, Any]) -> str:
    t = report["temperature"]
    return f"{t:.3f}" if isinstance(t, float) else ", ".join(f"{x:.3f}" for x in t)
