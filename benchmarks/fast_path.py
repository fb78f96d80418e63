"""Does the fast path change accuracy? One recipe trained four ways, same rows, seeds and epochs.

    VDCNN_DATA_DIR=../shared/data python benchmarks/fast_path.py [--config ag_news_quick] \
        [--limit 20000] [--epochs 2] [--seeds 0,1,2] [--paths bucketed+bf16,bucketed,bf16,plain] [--out runs/fast_path]

Paths: bucketed+bf16 (length-bucketed batches cut to their longest text, bf16 autocast where
the CPU has it: the default before the two were measured apart), bucketed (fp32: the CPU default
now), bf16 (every batch padded to the maximum length) and plain (fp32, padded:
``--no-bf16 --set train.bucket=false``). The preset's time budget
is switched off so every path trains the same number of epochs on the same
stratified subset of AG News train rows (validation carved from it, split seed 0);
every model is then scored on the full test split in fp32 by the same code. Runs
already finished in OUT are reused. Prints one table and the mean difference.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

# `python benchmarks/X.py` puts this folder first on sys.path, where datasets.py would hide the
# `datasets` package: the repository root takes its place.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
from benchmarks.accuracy import accuracy, train_or_reuse  # noqa: E402
from benchmarks.speed import machine  # noqa: E402
from vdcnn.checkpoint import read_config  # noqa: E402
from vdcnn.classifier import load_classifier  # noqa: E402
from vdcnn.config import load_config  # noqa: E402
from vdcnn.data import load_split, run_label_rule  # noqa: E402
from vdcnn.fileio import write_text  # noqa: E402

PATHS = {
    "bucketed+bf16": {"train.bf16": True, "train.bucket": True},  # the fast path before it was split
    "bucketed": {"train.bf16": False, "train.bucket": True},  # the CPU default since
    "bf16": {"train.bf16": True, "train.bucket": False},
    "plain": {"train.bf16": False, "train.bucket": False},
}


def train_path(preset: str, path: str, seed: int, args: argparse.Namespace) -> Path:
    """Train (or reuse, or resume) one path at one seed; returns its run folder."""
    cfg = load_config(preset)
    for key, value in {"train.seed": seed, "data.dataset": "ag_news", "data.limit": args.limit,
                       "data.split_seed": 0, "train.epochs": args.epochs, "train.time_budget": None,
                       **PATHS[path]}.items():
        cfg.set(key, value)
    run = args.out / f"{path}-seed{seed}"
    train_or_reuse(cfg, run)
    return run


def scores(run: Path) -> dict:
    """Best validation accuracy (as trained) and test accuracy scored in fp32, and the run's time."""
    meta = read_config(run)
    test = load_split("ag_news", "test", label_rule=run_label_rule(meta))
    probs = load_classifier(run, device="cpu").predict_proba(test.texts)
    return {"val": meta["results"]["best_val_acc"], "test": accuracy(probs, test),
            "time": meta["results"]["wall_time_s"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="ag_news_quick")
    parser.add_argument("--limit", type=int, default=20000, help="stratified subset of the train rows")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--paths", default=",".join(PATHS), help="paths to train; the last is the reference")
    parser.add_argument("--out", type=Path, default=Path("runs/fast_path"))
    args = parser.parse_args()
    if not os.environ.get("VDCNN_DATA_DIR"):
        sys.exit("set VDCNN_DATA_DIR to the folder holding ag_news/ (e.g. ../shared/data)")
    seeds = [int(s) for s in args.seeds.split(",")]
    paths = args.paths.split(",")
    unknown = [p for p in paths if p not in PATHS]
    if unknown:
        sys.exit(f"unknown path {unknown[0]!r}; choose from {', '.join(PATHS)}")
    rows = {(path, seed): scores(train_path(args.config, path, seed, args)) for seed in seeds for path in paths}
    lines = [f"{args.config}, {args.limit:,} train rows (10 % validation), {args.epochs} epochs, {machine()}", "",
             "| seed | " + " | ".join(f"{p}: val / test" for p in paths) + " |", "|" + " --- |" * (len(paths) + 1)]

    def cell(r: dict) -> str:
        return f"{r['val'] * 100:.2f} % / {r['test'] * 100:.2f} %"

    for seed in seeds:
        lines.append(f"| {seed} | " + " | ".join(cell(rows[p, seed]) for p in paths) + " |")
    mean = {p: {k: float(np.mean([rows[p, s][k] for s in seeds])) for k in ("val", "test", "time")} for p in paths}
    lines.append("| mean | " + " | ".join(cell(mean[p]) for p in paths) + " |")
    base = paths[-1]
    lines.append("")
    for p in paths[:-1]:
        diffs = [(rows[p, s]["test"] - rows[base, s]["test"]) * 100 for s in seeds]
        lines.append(f"{p} - {base}: validation {(mean[p]['val'] - mean[base]['val']) * 100:+.2f} points, test "
                     f"{np.mean(diffs):+.2f} (per seed {', '.join(f'{d:+.2f}' for d in diffs)}); "
                     f"{mean[p]['time'] / mean[base]['time']:.2f}x the time")
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "fast_path.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    from vdcnn.errors import VdcnnError

    try:
        main()
    except VdcnnError as exc:  # e.g. OUT holds runs of an edited preset
        sys.exit(f"error: {exc}")
