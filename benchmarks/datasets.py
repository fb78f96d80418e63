"""The automatic recipe on every real dataset, against TF-IDF + logistic regression on the same split.

    VDCNN_DATA_DIR=../shared/data python benchmarks/datasets.py [--datasets trec6,sst2,...] [--out runs/datasets]

Each dataset is trained exactly as a new user would: `vdcnn train --dataset $VDCNN_DATA_DIR/NAME`
with no other option (the automatic recipe, the dataset's own validation split or a carved one,
the built-in baseline fitted on the same training rows), one after the other so each run has the
machine to itself. A finished run folder is reused. Prints one table (also OUT/datasets.md):
dataset, rows, classes, encoder chosen, vdcnn accuracy and macro-F1, baseline accuracy and
macro-F1, gap (vdcnn − baseline on the dataset's metric: macro-F1 for SMS Spam, accuracy
elsewhere), training time, machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

# `python benchmarks/X.py` puts this folder first on sys.path, where datasets.py would hide the
# `datasets` package: the repository root takes its place.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
from benchmarks.speed import machine  # noqa: E402

DATASETS = ("trec6", "sst2", "sms_spam", "tnews", "ag_news")
METRIC = {"sms_spam": "macro_f1"}  # imbalanced (13 % spam): accuracy says little there


def train_one(name: str, out: Path) -> dict:
    """`vdcnn train --dataset DIR --out RUN` as a user runs it; returns the run's config.json."""
    run = out / name
    meta_path = run / "config.json"
    if not (meta_path.exists() and json.loads(meta_path.read_text()).get("results", {}).get("baseline")):
        if run.exists():
            shutil.rmtree(run)
        data = Path(os.environ["VDCNN_DATA_DIR"]) / name
        cmd = [sys.executable, "-m", "vdcnn", "train", "--dataset", str(data), "--out", str(run), "--no-progress"]
        print("$ vdcnn train --dataset", data, "--out", run, flush=True)
        started = time.perf_counter()
        with open(out / f"{name}.log", "w") as log:
            done = subprocess.run(cmd, stderr=subprocess.STDOUT, stdout=log, cwd=Path(__file__).resolve().parent.parent)
        if done.returncode != 0:
            raise SystemExit(f"{name}: vdcnn train failed (exit {done.returncode}); see {out / f'{name}.log'}")
        print(f"  done in {time.perf_counter() - started:.0f} s (log: {out / f'{name}.log'})", flush=True)
    return json.loads(meta_path.read_text())


def row(name: str, meta: dict) -> dict:
    res = meta["results"]
    base = res["baseline"]["test"]
    metric = METRIC.get(name, "accuracy")
    ours = res["test_macro_f1"] if metric == "macro_f1" else res["test_acc"]
    return {
        "dataset": name, "rows": res["baseline"]["train_rows"], "classes": len(meta["labels"]),
        "encoder": meta["encoder"]["type"], "acc": res["test_acc"], "f1": res["test_macro_f1"],
        "b_acc": base["accuracy"], "b_f1": base["macro_f1"], "metric": metric,
        "gap": (ours - base[metric]) * 100, "time": res["wall_time_s"],
    }


def format_table(rows: list[dict], where: str) -> str:
    lines = ["| dataset | train rows | classes | encoder | vdcnn acc | vdcnn macro-F1 | TF-IDF+LR acc | "
             "TF-IDF+LR macro-F1 | gap (metric) | train time | machine |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['rows']:,} | {r['classes']} | {r['encoder']} | {r['acc'] * 100:.2f} % | "
                     f"{r['f1'] * 100:.2f} | {r['b_acc'] * 100:.2f} % | {r['b_f1'] * 100:.2f} | "
                     f"{r['gap']:+.2f} ({r['metric'].replace('_', '-')}) | {r['time'] / 60:.1f} min | {where} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--out", type=Path, default=Path("runs/datasets"))
    args = parser.parse_args()
    if not os.environ.get("VDCNN_DATA_DIR"):
        sys.exit("set VDCNN_DATA_DIR to the folder holding the datasets (e.g. ../shared/data)")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [row(name, train_one(name, args.out)) for name in args.datasets.split(",")]
    table = format_table(rows, machine())
    (args.out / "datasets.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
