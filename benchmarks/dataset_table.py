"""vdcnn's automatic recipe on every real dataset, against the models users pick instead, on the same split.

    VDCNN_DATA_DIR=../shared/data python benchmarks/dataset_table.py [--datasets trec6,sst2,...]
        [--seeds 0,1,2] [--ablation] [--out runs/datasets]

Each dataset is trained as a new user would: `vdcnn train --dataset $VDCNN_DATA_DIR/NAME` and
nothing else, except `--seed S --split-seed 0` for the seeds after the first (seed 0 with split
seed 0 is exactly the plain command), so every seed sees the same train / validation rows. Runs
go one after the other (each has the machine to itself); a finished run is reused only when its
stored dataset, seed and split seed are the ones asked for.

Beside vdcnn (mean ± SD over the seeds) the same split is given to TF-IDF + logistic regression
(C chosen on validation) and fastText (defaults, word bigrams, autotuned on validation; skipped
with the reason where `fasttext-numpy2-wheel` is not installed), see `benchmarks/peers.py`.
McNemar's exact test pairs each vdcnn seed with the best peer on test. Each run's own report
gives the network without the linear path (``vdcnn.linear_path``, fitted after training and weighted
on validation) and the linear path alone on test, with the weight validation gave it; `--ablation`
also trains the n-gram path alone and the conv path alone (seed 0), so a win of the whole is never
mistaken for a win of the conv net. Prints one table (also OUT/datasets.md). Metric: macro-F1 for SMS Spam
(13 % spam), accuracy elsewhere.
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

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import peers  # noqa: E402
from benchmarks.speed import machine  # noqa: E402
from vdcnn.fileio import write_json  # noqa: E402

DATASETS = ("trec6", "sst2", "sms_spam", "tnews", "ag_news", "20newsgroups_bydate")
METRIC = {"sms_spam": "macro_f1"}
ABLATIONS = {"ngram": ["--set", "model.conv=false", "--no-autotune"], "conv": ["--set", "model.ngram_buckets=0", "--no-autotune"]}


def layout_of(meta: dict) -> str:
    """What the recipe and autotune chose for one run: encoder, depth (stages), pooling, downsamplings, n-gram path."""
    model = meta["model"]
    layout = (f"{meta['encoder']['type']}, depth {1 + 2 * sum(model.get('stages') or [])}"
              if model.get("stages") else meta["encoder"]["type"])
    if model.get("kmax") == 1:
        layout += ", max over time"
    return layout + f", {model.get('downsamples', 'all')} down" + (", n-grams" if model.get("ngram_buckets") else "")


def train_one(data: Path, run: Path, seed: int, extra: list[str]) -> dict:
    """`vdcnn train --dataset DATA --out RUN` (plus the seed); returns the run's config.json."""
    meta_path = run / "config.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        r = meta.get("run", {})
        same = (r.get("data", {}).get("dataset") == str(data) and r.get("train", {}).get("seed") == seed
                and r.get("data", {}).get("split_seed") in ({None, 0} if seed == 0 else {0})
                and meta.get("results", {}).get("test_acc") is not None
                and meta.get("benchmark_args") == extra)
        if same:
            return meta
        shutil.rmtree(run)
    cmd = [sys.executable, "-m", "vdcnn", "train", "--dataset", str(data), "--out", str(run), "--no-progress",
           "--no-baseline"]
    if seed != 0:
        cmd += ["--seed", str(seed), "--split-seed", "0"]
    cmd += extra
    print("$ vdcnn", " ".join(cmd[3:]), flush=True)
    started = time.perf_counter()
    log_path = run.parent / f"{run.name}.log"
    with open(log_path, "w") as log:
        done = subprocess.run(cmd, stderr=subprocess.STDOUT, stdout=log, cwd=Path(__file__).resolve().parent.parent)
    if done.returncode != 0:
        raise SystemExit(f"{run.name}: vdcnn train failed (exit {done.returncode}); see {log_path}")
    print(f"  done in {time.perf_counter() - started:.0f} s", flush=True)
    meta = json.loads(meta_path.read_text())
    meta["benchmark_args"] = extra
    write_json(meta_path, meta)  # atomic, as every write of a run's config.json
    return meta


def test_predictions(run: Path, texts: list[str], names: list[str]) -> np.ndarray:
    """Label indices (in the split's label order) that the run predicts for ``texts``."""
    from vdcnn.classifier import Classifier

    clf = Classifier.load(run)
    index = {n: i for i, n in enumerate(names)}
    probs = clf.predict_proba(texts)
    return np.array([index[clf.labels[j]] for j in probs.argmax(1)])


def dataset_rows(name: str, seeds: list[int], out: Path, ablation: bool, autotune_s: int) -> dict:
    from vdcnn.data import load_splits

    data = Path(os.environ["VDCNN_DATA_DIR"]) / name
    metric = METRIC.get(name, "accuracy")
    splits = load_splits(str(data), seed=0)
    names, y = splits.label_names, np.asarray(splits.test.labels)
    ours, metas = [], []
    for seed in seeds:
        run = out / f"{name}-seed{seed}"
        metas.append(train_one(data, run, seed, []))
        pred = test_predictions(run, splits.test.texts, names)
        ours.append({"seed": seed, "pred": pred, **peers.score(y, pred, names)})
    extra = {}
    if ablation:
        for kind, args in ABLATIONS.items():
            run = out / f"{name}-{kind}-only"
            train_one(data, run, 0, args)
            pred = test_predictions(run, splits.test.texts, names)
            extra[kind] = peers.score(y, pred, names)[metric]
    rivals = [peers.tfidf_lr(splits, metric)]
    reason = peers.fasttext_available()
    if reason is None:
        rivals += peers.fasttext_peers(splits, metric, autotune_s)
    best = max((r for r in rivals if r["pred"] is not None), key=lambda r: r[metric])
    tests = [peers.mcnemar(y, o["pred"], best["pred"]) for o in ours]
    values = np.array([o[metric] for o in ours]) * 100
    layouts = [layout_of(m) for m in metas]
    layout = layouts[0] if len(set(layouts)) == 1 else " / ".join(layouts)  # each seed's, where they differ
    parts = {}  # the linear path's ablation, from each run's own report (test, never used to choose)
    for part in ("network", "linear"):
        got = [mm.get("linear_path", {}).get(f"test_{part}", {}).get(metric) for mm in metas]
        parts[part] = [g * 100 for g in got if g is not None]
    parts["weights"] = [mm.get("linear_path", {}).get("weight", 0.0) for mm in metas]
    return {"dataset": name, "rows": len(splits.train), "classes": len(names), "metric": metric, "layout": layout,
            "parts": parts,
            "mean": values.mean(), "sd": values.std(ddof=1) if len(values) > 1 else 0.0, "values": values,
            "rivals": rivals, "best": best, "tests": tests, "ablation": extra, "fasttext": reason,
            "time": np.mean([mm["results"]["wall_time_s"] for mm in metas])}


def format_table(rows: list[dict], where: str) -> str:
    peer_names = []
    for r in rows:
        for p in r["rivals"]:
            key = p["name"].split(" (C=")[0].split(" [")[0]
            if key not in peer_names:
                peer_names.append(key)
    head = (["dataset", "train rows", "classes", "vdcnn (recipe chose)", "vdcnn, mean ± SD (seeds)"]
            + ["network alone (no linear path)", "linear path alone", "linear path weight"]
            + (["n-gram path alone", "conv path alone"] if any(r["ablation"] for r in rows) else [])
            + peer_names + ["vdcnn − best peer", "McNemar p (each seed)", "train time", "machine"])
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for r in rows:
        cells = [r["dataset"], f"{r['rows']:,}", str(r["classes"]), r["layout"],
                 f"{r['mean']:.2f} ± {r['sd']:.2f} ({', '.join(f'{v:.2f}' for v in r['values'])})"]
        p = r["parts"]
        cells += [f"{np.mean(p[k]):.2f}" + (f" ± {np.std(p[k], ddof=1):.2f}" if len(p[k]) > 1 else "") if p[k] else "–"
                  for k in ("network", "linear")]
        cells.append(", ".join(f"{w:g}" for w in p["weights"]))
        if any(x["ablation"] for x in rows):
            cells += [f"{r['ablation'][k] * 100:.2f}" if k in r["ablation"] else "–" for k in ABLATIONS]
        by_name = {p["name"].split(" (C=")[0].split(" [")[0]: p for p in r["rivals"]}
        cells += [f"{by_name[n][r['metric']] * 100:.2f}" if n in by_name else "–" for n in peer_names]
        cells += [f"{r['mean'] - r['best'][r['metric']] * 100:+.2f} ({r['metric'].replace('_', '-')}; vs {r['best']['name']})",
                  " / ".join(f"{p:.3g}" for _, _, p in r["tests"]), f"{r['time'] / 60:.1f} min", where]
        lines.append("| " + " | ".join(cells) + " |")
    notes = {r["fasttext"] for r in rows if r["fasttext"]}
    return "\n".join(lines + [f"\n{n}" for n in notes])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--ablation", action="store_true", help="also train the n-gram path and the conv path alone")
    parser.add_argument("--autotune-s", type=int, default=60, help="fastText's autotune duration")
    parser.add_argument("--out", type=Path, default=Path("runs/datasets"))
    args = parser.parse_args()
    if not os.environ.get("VDCNN_DATA_DIR"):
        sys.exit("set VDCNN_DATA_DIR to the folder holding the datasets (e.g. ../shared/data)")
    args.out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    for name in args.datasets.split(","):
        rows.append(dataset_rows(name, seeds, args.out, args.ablation, args.autotune_s))
        print(format_table(rows[-1:], machine()), flush=True)
    table = format_table(rows, machine())
    (args.out / "datasets.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
