"""Accuracy of VDCNN recipes against bag-of-words baselines, on the same split, in one run.

    VDCNN_DATA_DIR=../shared/data python benchmarks/accuracy.py \
        --configs ag_news_cpu [more presets or YAML paths] [--out runs/accuracy] [--seeds 0]

Every model trains on the AG News train rows less a stratified 10 % validation
split (seed 0), is selected on that validation split only, and is scored once
on the full test split. The baselines (scikit-learn) use exactly the same rows.
Prints one table: model, encoder, depth, shortcut, best val acc, test acc,
train time, machine; also writes it to OUT/accuracy.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

# `python benchmarks/X.py` puts this folder first on sys.path, where datasets.py would hide the
# `datasets` package: the repository root takes its place.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
from benchmarks.speed import machine  # noqa: E402
from vdcnn.fileio import write_text  # noqa: E402
from vdcnn.config import load_config  # noqa: E402
from vdcnn.data import load_split, stratified_split  # noqa: E402
from vdcnn.train import train  # noqa: E402


def baselines(seed: int = 0) -> list[dict]:
    """TF-IDF + logistic regression, and hashing + TF-IDF + linear SGD, on the same split."""
    from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer, TfidfVectorizer
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from sklearn.pipeline import make_pipeline

    data = load_split("ag_news", "train")
    test = load_split("ag_news", "test", label_names=data.label_names)
    train_idx, val_idx = stratified_split(data.labels, 0.1, seed)
    texts = np.array(data.texts, dtype=object)
    rows = []
    models = {
        "TF-IDF 1-2-grams + logistic regression": make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True), LogisticRegression(C=10, max_iter=1000)),
        "hashing 1-2-grams + TF-IDF + linear SGD": make_pipeline(
            HashingVectorizer(ngram_range=(1, 2), n_features=2**20, alternate_sign=False), TfidfTransformer(sublinear_tf=True),
            SGDClassifier(loss="modified_huber", alpha=2e-5, max_iter=30, tol=None, random_state=seed)),
    }
    for name, model in models.items():
        start = time.perf_counter()
        model.fit(list(texts[train_idx]), data.labels[train_idx])
        elapsed = time.perf_counter() - start
        val = float((model.predict(list(texts[val_idx])) == data.labels[val_idx]).mean())
        acc = float((model.predict(test.texts) == test.labels).mean())
        rows.append({"model": name, "encoder": "words", "depth": "-", "shortcut": "-", "val": val, "test": acc,
                     "time": elapsed})
    return rows


def vdcnn_row(preset: str, out: Path, seed: int) -> dict:
    cfg = load_config(preset)
    cfg.set("train.seed", seed)
    cfg.set("data.dataset", "ag_news")
    run = out / f"{Path(preset).stem}-seed{seed}"
    if (run / "config.json").exists():
        meta = json.loads((run / "config.json").read_text())
        if not meta.get("results"):
            train(None, run, resume=True, progress=False)
    else:
        train(cfg, run, progress=False)
    meta = json.loads((run / "config.json").read_text())
    res = meta["results"]
    model = meta["model"]
    depth = 1 + 2 * sum(model["stages"]) if model.get("stages") else model["depth"]
    return {"model": f"VDCNN ({Path(preset).stem}, seed {seed})", "preset": Path(preset).stem, "encoder": meta["encoder"]["type"], "depth": depth,
            "shortcut": "yes" if model["shortcut"] else "no", "val": res["best_val_acc"], "test": res["test_acc"],
            "time": res["wall_time_s"]}


def format_table(rows: list[dict], where: str) -> str:
    lines = ["| model | encoder | depth | shortcut | best val acc | test acc | train time | machine |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['encoder']} | {r['depth']} | {r['shortcut']} | {r['val'] * 100:.2f} % | "
                     f"{r['test'] * 100:.2f} % | {r['time']:.0f} s | {where} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="*", default=["ag_news_cpu"])
    parser.add_argument("--seeds", default="0", help="comma-separated seeds for every VDCNN preset")
    parser.add_argument("--out", type=Path, default=Path("runs/accuracy"))
    args = parser.parse_args()
    if not os.environ.get("VDCNN_DATA_DIR"):
        sys.exit("set VDCNN_DATA_DIR to the folder holding ag_news/ (e.g. ../shared/data)")
    rows = baselines()
    for preset in args.configs:
        for seed in [int(s) for s in args.seeds.split(",")]:
            rows.append(vdcnn_row(preset, args.out, seed))
    table = format_table(rows, machine()) + "\n\n" + seed_summary(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    write_text(args.out / "accuracy.md", table + "\n")
    print(table)


def seed_summary(rows: list[dict]) -> str:
    """One line per VDCNN preset: mean test accuracy over its seeds and their spread (max - min)."""
    by_preset: dict[str, list[float]] = {}
    for r in rows:
        if "preset" in r:
            by_preset.setdefault(r["preset"], []).append(r["test"] * 100)
    return "\n".join(f"{name}: {len(accs)} seed(s), test mean {np.mean(accs):.2f} %, spread "
                     f"{max(accs) - min(accs):.2f} points" for name, accs in by_preset.items())


if __name__ == "__main__":
    main()
