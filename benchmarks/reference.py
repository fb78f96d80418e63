"""A clean-room plain VDCNN, the baseline every benchmark ratio is measured against.

Written from the paper only: eager PyTorch, fixed length 1024 (every text padded),
stock ``nn.BatchNorm1d``, max-pool downsampling, order-preserving k-max via
``topk`` + sort, no masking, no folding, default allocator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

DEPTHS = {9: (1, 1, 1, 1), 17: (2, 2, 2, 2), 29: (5, 5, 2, 2), 49: (8, 8, 5, 3)}


class PlainBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(cin, cout, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm1d(cout)
        self.c2 = nn.Conv1d(cout, cout, 3, padding=1, bias=False)
        self.b2 = nn.BatchNorm1d(cout)

    def forward(self, x):
        return F.relu(self.b2(self.c2(F.relu(self.b1(self.c1(x))))))


class PlainVDCNN(nn.Module):
    def __init__(self, depth: int = 9, vocab: int = 71, classes: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, 16, padding_idx=0)
        self.conv = nn.Conv1d(16, 64, 3, padding=1)
        layers, cin = [], 64
        for i, (n, cout) in enumerate(zip(DEPTHS[depth], (64, 128, 256, 512))):
            if i > 0:
                layers.append(nn.MaxPool1d(3, 2, 1))
            for _ in range(n):
                layers.append(PlainBlock(cin, cout))
                cin = cout
        self.body = nn.Sequential(*layers)
        self.fc = nn.Sequential(nn.Linear(512 * 8, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(),
                                nn.Linear(2048, classes))

    def forward(self, ids):
        x = self.body(self.conv(self.embed(ids).transpose(1, 2)))
        idx = x.topk(8, dim=2).indices.sort(dim=2).values
        return self.fc(x.gather(2, idx).flatten(1))


# --- the whole-process baseline: `python benchmarks/reference.py predict|train ...` ----------------
# What a plain script does for the same jobs as `vdcnn predict` and `vdcnn train`: its own encoder
# (the paper's alphabet, every text padded to 1024), eager fp32, batches of 256 (predict) or 64
# (train, SGD with momentum), no bucketing. Only the standard library, numpy and torch.

ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789-,;.!?:'\"/\\|_@#$%^&*~`+=<>()[]{} "
INDEX = {c: i + 2 for i, c in enumerate(ALPHABET)}


def encode(texts, length: int = 1024) -> torch.Tensor:
    ids = torch.zeros(len(texts), length, dtype=torch.long)
    for row, text in enumerate(texts):
        codes = [INDEX.get(c, 1) for c in text.lower()[:length]]
        if codes:
            ids[row, :len(codes)] = torch.tensor(codes)
    return ids


def read_rows(path: str, limit: int | None = None):
    """``(texts, labels)`` of an AG News-style CSV (label, title, description; label 1-based), gzip ok."""
    import csv
    import gzip

    opener = gzip.open if path.endswith(".gz") else open
    texts, labels = [], []
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        for row in csv.reader(f):
            texts.append(" ".join(row[1:]))
            labels.append(int(row[0]) - 1)
            if limit and len(texts) >= limit:
                break
    return texts, torch.tensor(labels)


@torch.no_grad()
def accuracy(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor, batch: int = 256) -> float:
    model.eval()
    hits = sum(int((model(ids[i:i + batch]).argmax(1) == labels[i:i + batch]).sum())
               for i in range(0, len(ids), batch))
    return hits / max(len(ids), 1)


def main() -> None:
    import argparse
    import sys

    parser = argparse.ArgumentParser(description="The plain reference, whole process.")
    parser.add_argument("job", choices=["predict", "train"])
    parser.add_argument("file", help="predict: one text per line; train: the training CSV")
    parser.add_argument("--depth", type=int, default=9)
    parser.add_argument("--test", help="train: the test CSV")
    parser.add_argument("--limit", type=int, default=4000, help="train: rows used (a tenth is validation)")
    parser.add_argument("--classes", type=int, default=4)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = PlainVDCNN(args.depth, classes=args.classes)
    if args.job == "predict":
        with open(args.file, encoding="utf-8") as f:
            texts = [line.rstrip("\n") for line in f]
        model.eval()
        out = []
        with torch.no_grad():
            for i in range(0, len(texts), 256):
                out += model(encode(texts[i:i + 256])).argmax(1).tolist()
        sys.stdout.write("".join(f"{k}\n" for k in out))
        return
    texts, labels = read_rows(args.file, args.limit)
    ids = encode(texts)
    n_val = len(ids) // 10
    train_ids, train_y, val_ids, val_y = ids[n_val:], labels[n_val:], ids[:n_val], labels[:n_val]
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    order = torch.randperm(len(train_ids))
    for i in range(0, len(order), 64):
        idx = order[i:i + 64]
        loss = F.cross_entropy(model(train_ids[idx]), train_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    print(f"validation accuracy {accuracy(model, val_ids, val_y):.4f}")
    if args.test:
        test_texts, test_y = read_rows(args.test)
        print(f"test accuracy {accuracy(model, encode(test_texts), test_y):.4f}")


if __name__ == "__main__":
    main()
