"""Accuracy of VDCNN recipes against bag-of-words baselines, on the same split, in one run.

    VDCNN_DATA_DIR=../shared/data python benchmarks/accuracy.py \
        --configs ag_news_quick ag_news_cpu ag_news_cpu_char --seeds 0,1,2 [--out runs/accuracy]

Every model trains on the AG News train rows less one stratified 10 % validation
split (split seed 0 for every run: the seeds change initialisation, order and noise,
not the rows), is selected on that validation split only, and is scored once on the
full test split and on ``ag_news_holdout`` (2,000 other train-split rows, used for
checking only). The TF-IDF + logistic-regression baseline is ``vdcnn baseline``'s, fitted
on exactly the same rows. Runs already finished in OUT are reused (a killed benchmark
resumes) when their recipe is the preset's (an edited preset is refused: choose another OUT),
and cached probabilities only for the same weights and rows. Prints the table, one line per preset over its seeds, and ensembles (mean
probabilities) of the runs, chosen by validation; writes them to OUT/accuracy.md.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import sys
from pathlib import Path

import numpy as np

# `python benchmarks/X.py` puts this folder first on sys.path, where datasets.py would hide the
# `datasets` package: the repository root takes its place.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
from benchmarks.speed import machine  # noqa: E402
from vdcnn.baseline import evaluate_baseline, fit_baseline  # noqa: E402
from vdcnn.checkpoint import WEIGHTS_FILE, read_config  # noqa: E402
from vdcnn.classifier import load_classifier  # noqa: E402
from vdcnn.compare import check_same_recipe  # noqa: E402
from vdcnn.config import RunConfig, load_config  # noqa: E402
from vdcnn.data import Splits, TextDataset, load_split, run_label_rule  # noqa: E402
from vdcnn.fileio import write_text  # noqa: E402
from vdcnn.train import load_training_data, train  # noqa: E402

SPLIT_SEED = 0
HOLDOUT = "ag_news_holdout"


def evaluation_sets(preset: str) -> tuple[Splits, TextDataset]:
    """The validation/test splits every run shares, and the holdout rows."""
    cfg = load_config(preset)
    cfg.set("data.dataset", "ag_news")
    cfg.set("data.split_seed", SPLIT_SEED)
    splits = load_training_data(cfg)
    holdout = load_split(HOLDOUT, "test", label_names=splits.label_names)
    return splits, holdout


def baseline_row(splits: Splits, holdout: TextDataset) -> dict:
    """TF-IDF 1-2-grams + logistic regression (C=4), as `vdcnn baseline`, on the same rows."""
    names = splits.label_names
    fitted = fit_baseline(splits.train.texts, splits.train.labels, len(names))
    acc = {k: evaluate_baseline(fitted, d.texts, d.labels, names)["accuracy"]
           for k, d in (("val", splits.val), ("test", splits.test), ("holdout", holdout))}
    return {"model": f"TF-IDF {fitted.analyzer} + logistic regression (C=4)", "encoder": "words", "depth": "-",
            "shortcut": "-", **acc, "time": fitted.fit_seconds}


def train_or_reuse(cfg: RunConfig, run: Path) -> dict:
    """Reuse a finished run in ``run``, resume an interrupted one, or train ``cfg`` there; its config.json.

    A run folder of another recipe (an edited preset) is refused (ConfigError), never reported as this one."""
    if (run / "config.json").exists():
        check_same_recipe(run, cfg)
        if not read_config(run).get("results"):
            train(None, run, resume=True, progress=False)
    else:
        train(cfg, run, progress=False)
    return read_config(run)


def vdcnn_row(preset: str, out: Path, seed: int, splits: Splits, holdout: TextDataset) -> dict:
    """Train (or reuse) one preset at one seed; its accuracies and probabilities on val/test/holdout."""
    cfg = load_config(preset)
    cfg.set("train.seed", seed)
    cfg.set("data.dataset", "ag_news")
    cfg.set("data.split_seed", SPLIT_SEED)
    run = out / f"{Path(preset).stem}-seed{seed}"
    meta = train_or_reuse(cfg, run)
    res = meta["results"]
    model = meta["model"]
    depth = 1 + 2 * sum(model["stages"]) if model.get("stages") else model["depth"]
    probs = run_probabilities(run, meta, splits, holdout)
    return {"model": f"VDCNN ({Path(preset).stem}, seed {seed})", "preset": Path(preset).stem,
            "encoder": meta["encoder"]["type"], "depth": depth, "shortcut": "yes" if model["shortcut"] else "no",
            "val": res["best_val_acc"], "test": res["test_acc"], "holdout": accuracy(probs["holdout"], holdout),
            "time": res["wall_time_s"], "probs": probs}


def _fingerprint(run: Path, sets: dict[str, TextDataset]) -> str:
    """What cached probabilities depend on: the saved weights and every scored row (text and label)."""
    h = hashlib.sha256((run / WEIGHTS_FILE).read_bytes())
    for name, data in sets.items():
        h.update(f"{name}:{len(data)}".encode())
        h.update("\n".join(data.texts).encode("utf-8", "surrogatepass"))
        h.update(np.asarray(data.labels, dtype=np.int64).tobytes())
    return h.hexdigest()


def run_probabilities(run: Path, meta: dict, splits: Splits, holdout: TextDataset) -> dict[str, np.ndarray]:
    """Class probabilities of the run's saved model on val, test and holdout (cached in the run folder,
    and read back only for the same weights and rows)."""
    sets = {"val": splits.val, "test": splits.test, "holdout": holdout}
    cache = run / "accuracy-probs.npz"
    key = _fingerprint(run, sets)
    if cache.exists():
        with np.load(cache) as saved:
            if "key" in saved.files and str(saved["key"]) == key:
                return {k: saved[k] for k in saved.files if k != "key"}
    if list(run_label_rule(meta).names) != list(splits.label_names):
        sys.exit(f"{run}: labels {meta.get('labels')} differ from the split's {splits.label_names}")
    clf = load_classifier(run, device="cpu")
    probs = {k: clf.predict_proba(d.texts) for k, d in sets.items()}
    np.savez(cache, key=np.array(key), **probs)
    return probs


def accuracy(probs: np.ndarray, data: TextDataset) -> float:
    return float((probs.argmax(1) == data.labels).mean())


def ensembles(rows: list[dict], splits: Splits, holdout: TextDataset) -> list[dict]:
    """Mean probabilities of every preset's seeds, and of every pair of presets' seeds together."""
    by_preset: dict[str, list[dict]] = {}
    for r in rows:
        if "probs" in r:
            by_preset.setdefault(r["preset"], []).append(r)
    groups = {f"{p} x{len(rs)}": rs for p, rs in by_preset.items() if len(rs) > 1}
    for (p, a), (q, b) in itertools.combinations(by_preset.items(), 2):
        groups[f"{p} x{len(a)} + {q} x{len(b)}"] = a + b
    out = []
    for name, members in groups.items():
        mean = {k: np.mean([m["probs"][k] for m in members], axis=0) for k in ("val", "test", "holdout")}
        out.append({"ensemble": name, "val": accuracy(mean["val"], splits.val), "test": accuracy(mean["test"], splits.test),
                    "holdout": accuracy(mean["holdout"], holdout),
                    "time": sum(m["time"] for m in members)})
    return sorted(out, key=lambda e: -e["val"])


def format_table(rows: list[dict], where: str) -> str:
    lines = ["| model | encoder | depth | shortcut | best val acc | test acc | holdout acc | train time | machine |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['encoder']} | {r['depth']} | {r['shortcut']} | {r['val'] * 100:.2f} % | "
                     f"{r['test'] * 100:.2f} % | {r['holdout'] * 100:.2f} % | {r['time']:.0f} s | {where} |")
    return "\n".join(lines)


def format_ensembles(groups: list[dict]) -> str:
    lines = ["| ensemble (mean probabilities), best validation first | val acc | test acc | holdout acc | train time, summed |",
             "| --- | --- | --- | --- | --- |"]
    for e in groups:
        lines.append(f"| {e['ensemble']} | {e['val'] * 100:.2f} % | {e['test'] * 100:.2f} % | {e['holdout'] * 100:.2f} % "
                     f"| {e['time'] / 60:.1f} min |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="*", default=["ag_news_cpu"])
    parser.add_argument("--seeds", default="0", help="comma-separated seeds for every VDCNN preset")
    parser.add_argument("--out", type=Path, default=Path("runs/accuracy"))
    args = parser.parse_args()
    if not os.environ.get("VDCNN_DATA_DIR"):
        sys.exit("set VDCNN_DATA_DIR to the folder holding ag_news/ (e.g. ../shared/data)")
    splits, holdout = evaluation_sets(args.configs[0])
    print(f"split seed {SPLIT_SEED}: {len(splits.train):,} train, {len(splits.val):,} validation, "
          f"{len(splits.test):,} test, {len(holdout):,} holdout rows", file=sys.stderr)
    rows = [baseline_row(splits, holdout)]
    for preset in args.configs:
        for seed in [int(s) for s in args.seeds.split(",")]:
            rows.append(vdcnn_row(preset, args.out, seed, splits, holdout))
    table = format_table(rows, machine()) + "\n\n" + seed_summary(rows)
    groups = ensembles(rows, splits, holdout)
    if groups:
        table += "\n\n" + format_ensembles(groups)
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
    from vdcnn.errors import VdcnnError

    try:
        main()
    except VdcnnError as exc:  # e.g. OUT holds runs of an edited preset
        sys.exit(f"error: {exc}")
