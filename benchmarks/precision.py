"""Accuracy of a trained run in fp32, bf16 and int8 on its test split, and how often the labels agree.

    python benchmarks/precision.py RUN [RUN ...] [--limit N] [--json FILE]

For each run folder: fp32 (PyTorch, the default), bf16 autocast (PyTorch, where the CPU runs
bf16 natively; otherwise "-") and int8 (``vdcnn export --to onnx --quantize int8``, calibrated
on the run's training texts, run by ONNX Runtime; the bundle goes to a temporary folder, the run
folder is only read). Agreement is the share of test texts whose label matches fp32's.
Texts are scored as ``vdcnn eval`` scores them (the run's long-text mode and temperature).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# `python benchmarks/X.py` puts this folder first on sys.path, where datasets.py would hide the
# `datasets` package: the repository root takes its place.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
from vdcnn.checkpoint import read_config  # noqa: E402
from vdcnn.classifier import Classifier, load_bundle  # noqa: E402
from vdcnn.data import load_split, run_label_rule  # noqa: E402
from vdcnn.export import export_run  # noqa: E402
from vdcnn.runtime import bf16_supported, tune_malloc  # noqa: E402


def test_split(run: Path, limit: int | None):
    """The run's test split (its dataset, columns and label rule), the first ``limit`` rows if given."""
    meta = read_config(run)
    data = meta.get("run", {}).get("data", {})
    ds = load_split(data["dataset"], data.get("test_split") or "test", text_columns=data.get("text_columns"),
                    label_column=data.get("label_column"), label_rule=run_label_rule(meta, str(run / "config.json")),
                    trained_on=data["dataset"])
    texts, labels = ds.texts, np.asarray(ds.labels)
    if limit:
        texts, labels = texts[:limit], labels[:limit]
    return Path(str(data["dataset"])).name, texts, labels


def score(run: Path, limit: int | None) -> dict:
    """Accuracy, agreement with fp32 and texts/s of each precision on one run."""
    name, texts, labels = test_split(run, limit)
    row: dict = {"run": str(run), "dataset": name, "n": len(labels)}
    fp32_labels = None
    kinds = ["fp32", "bf16", "int8"]
    with tempfile.TemporaryDirectory(prefix="vdcnn-precision-") as tmp:
        for kind in kinds:
            if kind == "bf16" and not bf16_supported("cpu"):
                row[kind] = None
                continue
            extra = {}
            if kind == "int8":
                start = time.perf_counter()
                bundle = export_run(run, "onnx", Path(tmp) / "int8", quantize="int8")
                extra["export_s"] = round(time.perf_counter() - start, 1)
                info = json.loads((bundle / "bundle.json").read_text())
                extra["calibration_agreement"] = info["quantization"]["calibration_label_agreement"]
                clf = load_bundle(bundle)
            else:
                clf = Classifier.load(run, device="cpu", bf16=kind == "bf16")
            start = time.perf_counter()
            predicted = clf.predict_proba(texts).argmax(1)
            seconds = time.perf_counter() - start
            if fp32_labels is None:
                fp32_labels = predicted
            row[kind] = {"accuracy": float((predicted == labels).mean()),
                         "agreement": float((predicted == fp32_labels).mean()),
                         "changed": int((predicted != fp32_labels).sum()),
                         "texts_per_s": round(len(labels) / seconds, 1), **extra}
            print(f"  {name} {kind}: accuracy {row[kind]['accuracy'] * 100:.2f} %, agreement "
                  f"{row[kind]['agreement'] * 100:.2f} %", file=sys.stderr)
    return row


def pct(entry: dict | None, key: str) -> str:
    return "-" if entry is None else f"{entry[key] * 100:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="Run folders (read only).")
    parser.add_argument("--limit", type=int, default=None, help="Score the first N test texts only.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the rows as JSON.")
    args = parser.parse_args()
    tune_malloc()
    rows = [score(run, args.limit) for run in args.runs]
    print(f"{'dataset':<22}{'test':>7}{'fp32':>8}{'bf16':>8}{'int8':>8}{'bf16 = fp32':>13}{'int8 = fp32':>13}"
          f"{'int8 - fp32':>13}")
    for r in rows:
        delta = "-" if r["int8"] is None else f"{(r['int8']['accuracy'] - r['fp32']['accuracy']) * 100:+.2f}"
        print(f"{r['dataset']:<22}{r['n']:>7}{pct(r['fp32'], 'accuracy'):>8}{pct(r['bf16'], 'accuracy'):>8}"
              f"{pct(r['int8'], 'accuracy'):>8}{pct(r['bf16'], 'agreement'):>13}{pct(r['int8'], 'agreement'):>13}"
              f"{delta:>13}")
    print("(accuracy and label agreement with fp32, %, on each run's test split)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
