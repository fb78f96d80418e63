"""The n-gram path: fastText's model inside VDCNN.

``NgramBag`` hashes every n-gram (of the orders given) of a text's input ids into a fixed
number of buckets, embeds each bucket, averages the embeddings over the text's real n-grams
and maps the mean to class logits with one linear layer: the fastText classifier (Joulin et
al. 2017), over the encoder's ids (subword n-grams for the subword encoder, character n-grams
for the character and byte encoders). The hashing is plain integer arithmetic on the ids, so
the path needs no extra input, travels inside the model's weights and exports to ONNX and
TorchScript with the rest of the network.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_PRIME = 1_000_003  # polynomial hash multiplier
_MODULUS = 2_147_483_647  # 2**31 - 1: keeps every intermediate far below int64's range


def hash_ngrams(ids: Tensor, lengths: Tensor, orders: tuple[int, ...], buckets: int) -> tuple[Tensor, Tensor]:
    """Bucket ids ``(batch, len(orders) * time)`` of every n-gram and a float mask of the real ones.

    The n-gram starting at position i is real when it ends inside the text (i + n <= length).
    Shapes never depend on the values or on the text length being at least n, so a trace stays
    valid for any input.
    """
    ids = ids.long()
    time = ids.size(1)
    widest = max(orders)
    padded = F.pad(ids, (0, widest - 1))
    starts = torch.arange(time, device=ids.device, dtype=torch.long).unsqueeze(0)
    hashed: list[Tensor] = []
    masks: list[Tensor] = []
    for n in orders:
        h = torch.full_like(ids, n)  # the order seeds the hash: a bigram never shares a unigram's bucket by design
        for j in range(n):
            h = (h * _PRIME + padded[:, j:j + time] + 1) % _MODULUS
        hashed.append(h % buckets)
        masks.append(starts + n <= lengths.long().unsqueeze(1))
    return torch.cat(hashed, 1), torch.cat(masks, 1).to(torch.float32)


def occurrences(hashed: Tensor, mask: Tensor, buckets: int) -> Tensor:
    """How many of the text's real n-grams share each position's bucket (float; padding counts 1).

    Sorting each row puts equal buckets side by side; the length of each run of equal values is
    the count. Padded positions get distinct values past every bucket, so they form runs of one.
    Sort, cumsum, scatter and gather only: it traces and exports (ONNX opset 16+) for any length.
    """
    positions = torch.arange(hashed.size(1), device=hashed.device, dtype=torch.long).unsqueeze(0)
    keyed = torch.where(mask > 0, hashed, positions + buckets)
    ordered, order = torch.sort(keyed, dim=1)
    starts = torch.ones_like(ordered, dtype=torch.long)
    starts[:, 1:] = (ordered[:, 1:] != ordered[:, :-1]).long()
    run = starts.cumsum(1) - 1
    ones = torch.ones_like(mask)
    sizes = torch.zeros_like(mask).scatter_add(1, run, ones).gather(1, run)
    return torch.zeros_like(mask).scatter(1, order, sizes)


class NgramBag(nn.Module):
    """Hashed n-gram embeddings, averaged over the text, to logits (an EmbeddingBag in mean mode)."""

    def __init__(self, buckets: int, dim: int, orders: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        self.buckets = buckets
        self.orders = tuple(orders)
        self.embedding = nn.Embedding(buckets, dim)
        self.out = nn.Linear(dim, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """fastText's initialisation: small uniform input vectors, a zero output layer."""
        dim = self.embedding.embedding_dim
        nn.init.uniform_(self.embedding.weight, -1.0 / dim, 1.0 / dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        buckets, mask = hash_ngrams(ids, lengths, self.orders, self.buckets)
        vectors = self.embedding(buckets).float() * mask.unsqueeze(-1)
        mean = vectors.sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
        return self.out(mean)

    def extra_repr(self) -> str:
        return f"orders={list(self.orders)}, buckets={self.buckets}"


class LinearNgrams(nn.Module):
    """A linear classifier over the same hashed n-grams: the TF-IDF vector of the text's buckets
    times one row of class scores per bucket, plus a bias. ``tf="log"``: 1 + log(count) of each
    bucket, l2-normalised (TF-IDF's sublinear tf); ``tf="count"``: every occurrence counts 1,
    divided by the root of the summed squared idf of the occurrences (runs saved before it). Its
    weights are not learned by the training loop but fitted afterwards as a regularised logistic
    regression on the same features (``vdcnn.linear_path``), with the idf folded into them."""

    def __init__(self, buckets: int, orders: tuple[int, ...], num_classes: int, tf: str = "count") -> None:
        super().__init__()
        self.buckets = buckets
        self.orders = tuple(orders)
        self.tf = tf
        self.weight = nn.Embedding(buckets, num_classes)
        self.bias = nn.Parameter(torch.zeros(num_classes))
        self.register_buffer("idf", torch.ones(buckets, 1))
        nn.init.zeros_(self.weight.weight)

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        buckets, mask = hash_ngrams(ids, lengths, self.orders, self.buckets)
        share = mask  # each occurrence's part of its bucket's term frequency
        square = mask  # and of the bucket's squared term frequency, for the norm
        if self.tf == "log":
            count = occurrences(buckets, mask, self.buckets)
            tf = 1.0 + torch.log(count)
            share = mask * tf / count
            square = share * tf
        idf = F.embedding(buckets, self.idf).squeeze(-1).float()
        norm = torch.sqrt((idf * idf * square).sum(1, keepdim=True)).clamp(min=1e-6)
        scores = (self.weight(buckets).float() * share.unsqueeze(-1)).sum(1)
        return scores / norm + self.bias

    def extra_repr(self) -> str:
        return f"orders={list(self.orders)}, buckets={self.buckets}, tf={self.tf}"
