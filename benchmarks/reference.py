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
