"""Long documents: truncation vs overlapping windows on test sets built from AG News test texts.

    VDCNN_DATA_DIR=../shared/data python benchmarks/long_text.py RUN [--docs 400] [--seed 0]
    python benchmarks/long_text.py RUN --own-test      # any run: its own test split (real long texts)

AG News texts are short (mean 236 characters), so documents longer than a run's max length are
built from its test split, with every label well defined:

* ``joined``: 4 test texts of one class joined with a space; the label is that class.
* ``late``: 3 filler texts, then 1 test text whose class is the label. A filler is a random test
  text with its characters shuffled: the character statistics of news, no words, so no class
  evidence; truncation reads only filler, the evidence is in the last quarter.
* ``single``: the late sets' evidence texts alone (the reference: what the model gets right
  when it reads them whole).

Each set is scored with ``long_text="truncate"`` and ``"windows"`` (calibrated probabilities, the
run's batch size), and the time of each pass gives texts/s. Prints one table (markdown).

``--own-test`` scores any run on its own dataset's test split instead (e.g. 20 Newsgroups posts):
all texts, and the texts longer than the max length alone, with how many predictions windows
turned right and wrong against truncation.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import os
import sys
import time
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))
from vdcnn.classifier import load_classifier  # noqa: E402


def read_ag_news_test(root: Path) -> tuple[list[str], np.ndarray]:
    """Texts ("title description") and 0-based labels of AG News test."""
    with gzip.open(root / "ag_news" / "test.csv.gz", "rt", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    return [f"{r[1]} {r[2]}" for r in rows], np.array([int(r[0]) - 1 for r in rows])


def build_sets(texts: list[str], labels: np.ndarray, docs: int, seed: int) -> dict[str, tuple[list[str], np.ndarray]]:
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    joined, joined_y = [], []
    for k in range(docs):
        c = classes[k % len(classes)]
        pick = rng.choice(np.flatnonzero(labels == c), 4, replace=False)
        joined.append(" ".join(texts[i] for i in pick))
        joined_y.append(c)
    late, single, late_y = [], [], []
    for i in rng.choice(len(texts), docs, replace=False):
        filler = [("".join(rng.permutation(list(texts[j])))) for j in rng.choice(len(texts), 3, replace=False)]
        late.append(" ".join([*filler, texts[i]]))
        single.append(texts[i])
        late_y.append(labels[i])
    return {"joined": (joined, np.array(joined_y)), "late": (late, np.array(late_y)),
            "single": (single, np.array(late_y))}


def score(clf, texts: list[str], labels: np.ndarray, mode: str) -> tuple[float, float]:
    begun = time.perf_counter()
    probs = clf.predict_proba(texts, long_text=mode)
    seconds = time.perf_counter() - begun
    return float((probs.argmax(1) == labels).mean()), len(texts) / seconds


def own_test(run: Path, clf) -> None:
    """Truncation vs windows on the run's own test split: every text, and the texts it cuts."""
    from benchmarks.precision import test_split

    source, texts, labels = test_split(run, None)
    texts = list(texts)
    ids_len = clf.encoder.encode_batch(texts, clf.max_length + 1)[1]
    cut = ids_len > clf.max_length
    preds, rates = {}, {}
    for mode in ("truncate", "windows"):
        begun = time.perf_counter()
        preds[mode] = clf.predict_proba(texts, long_text=mode).argmax(1)
        rates[mode] = len(texts) / (time.perf_counter() - begun)
    print(f"run {run} on {source}: {len(texts):,} test texts, max length {clf.max_length}, "
          f"{int(cut.sum()):,} longer ({cut.mean():.0%}); default long_text {clf.long_text}")
    print("| texts | n | truncate acc | windows acc | windows right where truncate wrong | the reverse | "
          "truncate texts/s (all) | windows texts/s (all) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, rows in (("all", np.ones(len(texts), bool)), (f"longer than {clf.max_length} ids", cut)):
        t_ok, w_ok = preds["truncate"][rows] == labels[rows], preds["windows"][rows] == labels[rows]
        n = int(rows.sum())
        print(f"| {name} | {n:,} | {t_ok.mean() * 100 if n else float('nan'):.2f} % | "
              f"{w_ok.mean() * 100 if n else float('nan'):.2f} % | {int((w_ok & ~t_ok).sum())} | "
              f"{int((t_ok & ~w_ok).sum())} | {rates['truncate']:,.0f} | {rates['windows']:,.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--docs", type=int, default=400, help="Documents per set.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--own-test", action="store_true", help="Score the run's own test split instead.")
    args = parser.parse_args()
    root = Path(os.environ.get("VDCNN_DATA_DIR", "../shared/data"))
    clf = load_classifier(args.run, device="cpu", batch_size=args.batch_size)
    if args.own_test:
        own_test(args.run, clf)
        return
    if sorted(clf.labels) != sorted(["World", "Sports", "Business", "Sci/Tech"]):
        sys.exit(f"error: {args.run} is not an AG News run (labels {clf.labels})")
    texts, labels = read_ag_news_test(root)
    order = [clf.labels.index(name) for name in ["World", "Sports", "Business", "Sci/Tech"]]
    labels = np.array(order)[labels]  # the run's label order
    sets = build_sets(texts, labels, args.docs, args.seed)
    print(f"run {args.run} (max length {clf.max_length}, default long_text {clf.long_text}); "
          f"{args.docs} documents per set, seed {args.seed}")
    print("| set | mean chars | longer than max length | truncate acc | windows acc | truncate texts/s | "
          "windows texts/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, (docs, y) in sets.items():
        lengths = np.array([len(t) for t in docs])
        ids_len = clf.encoder.encode_batch(docs, clf.max_length)[1]
        cut = float(np.mean(ids_len >= clf.max_length))
        (acc_t, rate_t), (acc_w, rate_w) = score(clf, docs, y, "truncate"), score(clf, docs, y, "windows")
        print(f"| {name} | {lengths.mean():.0f} | {cut * 100:.0f} % | {acc_t * 100:.2f} % | {acc_w * 100:.2f} % | "
              f"{rate_t:,.0f} | {rate_w:,.0f} |")


if __name__ == "__main__":
    main()
