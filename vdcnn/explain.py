"""Why a prediction: attributions over the input text, as scored character spans.

Two methods, both cheap enough for a CLI (a text costs at most ~50 forward passes):

* ``integrated_gradients`` (run folders, the default): the target class's probability is
  integrated along the straight line from a baseline to the text in embedding space. The
  baseline is the padding embedding at every position, with the lengths kept at the text's
  real length, so the baseline is "a text of the same length that says nothing". Scores
  add up to ``p(text) - p(baseline)`` (completeness), up to the error of a ``steps``-point
  midpoint rule; the reported ``baseline_probability`` lets anyone check.
* ``occlusion`` (any backend, the only one for export bundles, which have no gradients):
  the text is cut into at most ``MAX_WINDOWS`` windows of ids; each window is replaced by
  padding in turn and its score is the target probability's drop, shared evenly by its ids.

Scores per id are mapped back to character spans of the original text for every encoder:
char ids to their characters (lower-casing that changes a character's length is followed),
UTF-8 bytes to the character they belong to, subword tokens to the tokenizer's offsets
(overlapping tokens, such as the bytes of one character split over two tokens, are merged).
The spans tile the whole text; the part past ``max_length`` that the model never read is one
span scored 0, and ``truncated_at`` says where it starts.

Probabilities are the classifier's calibrated ones (its temperature divides the logits). With
``long_text="windows"`` a long text is read whole, as overlapping windows (``vdcnn.long_text``):
the prediction is the document's (mean of the windows' logits), each window is explained for
the document's target, and an id's score is the sum of its windows' scores divided by the number
of windows (the document's logits are their mean). This is an approximation: completeness holds
per window, not for the document.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .encoders import ByteEncoder, CharEncoder, Encoder, SubwordEncoder, _as_texts, _valid_unicode
from .errors import ConfigError
from .long_text import check_mode, document_logits, encode_documents, id_bound, window_starts

METHODS = ("integrated_gradients", "occlusion")
IG_STEPS = 32  # + 1 forward for the prediction + 1 for the baseline = 34 passes per text
MAX_WINDOWS = 48  # occlusion: + the text itself + the baseline = at most 50 passes per text

LogitsFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Span:
    """Characters ``text[start:end]`` and their share of the target's probability."""

    start: int
    end: int
    score: float


@dataclass
class Explanation:
    """One text's prediction and the attribution of its target class over character spans."""

    text: str
    label: str
    probability: float
    target: str
    target_probability: float
    baseline_probability: float
    spans: list[Span] = field(default_factory=list)
    truncated_at: int | None = None
    method: str = "integrated_gradients"

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "probability": round(self.probability, 6),
            "target": self.target,
            "target_probability": round(self.target_probability, 6),
            "baseline_probability": round(self.baseline_probability, 6),
            "method": self.method,
            "truncated_at": self.truncated_at,
            "attributions": [{"start": s.start, "end": s.end, "score": round(s.score, 6)} for s in self.spans],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    def char_scores(self) -> np.ndarray:
        """One score per character: each span's score shared evenly by its characters."""
        out = np.zeros(len(self.text), dtype=np.float64)
        for s in self.spans:
            if s.end > s.start:
                out[s.start:s.end] = s.score / (s.end - s.start)
        return out

    def _repr_html_(self) -> str:  # Jupyter shows an explanation coloured
        return render_html([self], full_page=False)


# --- ids to character spans ---------------------------------------------------------------


def token_offsets(encoder: Encoder, text: str, max_length: int) -> tuple[list[tuple[int, int]], bool]:
    """``(start, end)`` character offsets in ``text`` of each id the model reads, in order,
    and whether ``max_length`` cut the text (ids were dropped)."""
    text = _as_texts([text])[0]
    if isinstance(encoder, (CharEncoder, ByteEncoder)):
        cut = text[:max_length]  # both encoders cut the string first, then the ids
        if isinstance(encoder, ByteEncoder):
            widths = [len(c.encode("utf-8", "replace")) for c in cut]
        elif encoder.lowercase:  # a lower-cased character may be longer: "İ" gives "i" + U+0307
            widths = [len(c.lower()) for c in cut]
        else:
            widths = [1] * len(cut)
        owner = np.repeat(np.arange(len(cut)), widths)
        truncated = len(text) > max_length or len(owner) > max_length
        return [(int(i), int(i) + 1) for i in owner[:max_length]], truncated
    if isinstance(encoder, SubwordEncoder):
        # Offsets refer to the string given to the tokenizer, which has the text's characters
        # (lone surrogates become one "?" each); ``tokenizers`` tracks its normalisation.
        cut = _valid_unicode([text[: max_length * 16]])[0]
        offsets = encoder.tokenizer.encode(cut, add_special_tokens=False).offsets
        truncated = len(text) > max_length * 16 or len(offsets) > max_length
        return [(int(a), int(b)) for a, b in offsets[:max_length]], truncated
    raise ConfigError(f"cannot map ids to characters for encoder {type(encoder).__name__}")


def spans_from_tokens(offsets: Sequence[tuple[int, int]], scores: Sequence[float], text_length: int,
                      truncated: bool = False) -> tuple[list[Span], int | None]:
    """Merge per-id scores into non-overlapping spans that tile ``[0, text_length)``.

    Ids whose offsets overlap (one character split into several ids, or one id covering
    several characters) become one span with the summed score; characters no id covers
    get a 0 span, so nothing is lost and the spans sum to the ids' scores. Returns the
    spans and ``truncated_at``: with ``truncated``, the first character the model did not read.
    """
    groups: list[list[Any]] = []  # [start, end, score]
    for (start, end), score in sorted(zip(offsets, scores), key=lambda item: item[0]):
        if not text_length:
            break
        start = min(max(start, 0), text_length - 1)
        end = min(max(end, start + 1), text_length)  # an empty offset still owns a character
        if groups and start < groups[-1][1]:
            groups[-1][1] = max(groups[-1][1], end)
            groups[-1][2] += float(score)
        else:
            groups.append([start, end, float(score)])
    spans: list[Span] = []
    position = 0
    for start, end, score in groups:
        if start > position:
            spans.append(Span(position, start, 0.0))
        spans.append(Span(start, end, score))
        position = end
    if position < text_length:
        spans.append(Span(position, text_length, 0.0))
    return spans, (position if truncated and position < text_length else None)


# --- attribution methods --------------------------------------------------------------------


def integrated_gradients(model: torch.nn.Module, ids: np.ndarray, lengths: np.ndarray, targets: np.ndarray,
                         steps: int = IG_STEPS, device: torch.device | str = "cpu", temperature: float = 1.0,
                         probs_fn: Callable[[torch.Tensor], torch.Tensor] | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Integrated gradients of each row's target probability w.r.t. its embeddings, summed
    over the embedding axis: ``(N, T)`` scores and the ``(N,)`` baseline probabilities.

    The path runs from the padding embedding at every position to the text's embeddings with
    the lengths fixed at the real ones; all ``steps`` midpoints and the baseline of all rows
    go through the model as one batch of ``N * (steps + 1)`` rows (eval mode, float32).
    """
    n, width = ids.shape
    rows = steps + 1
    device = torch.device(device)
    alphas = torch.cat([(torch.arange(steps, dtype=torch.float32) + 0.5) / steps, torch.zeros(1)])
    alpha = alphas.repeat(n).to(device)[:, None, None]
    x = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=device)
    n_len = torch.as_tensor(np.asarray(lengths, dtype=np.int64), device=device)
    embedding = model.embedding
    base = embedding.weight[model.config.pad_id].detach().float()
    points: list[torch.Tensor] = []

    def on_path(module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        point = (base + alpha * (output.detach().float() - base)).requires_grad_(True)
        points.append(point)
        return point

    was_training = model.training
    model.eval()
    handle = embedding.register_forward_hook(on_path)
    try:
        with torch.enable_grad():
            logits = model(x.repeat_interleave(rows, 0), n_len.repeat_interleave(rows, 0)).float()
            wanted = torch.as_tensor(np.asarray(targets, dtype=np.int64), device=device).repeat_interleave(rows)
            probs = probs_fn(logits) if probs_fn is not None else torch.softmax(logits / temperature, -1)
            chosen = probs.gather(1, wanted[:, None]).view(n, rows)
            (grad,) = torch.autograd.grad(chosen[:, :steps].sum(), points[0])
    finally:
        handle.remove()
        model.train(was_training)
    with torch.no_grad():
        mean_grad = grad.view(n, rows, width, -1)[:, :steps].mean(1)
        scores = ((embedding(x).float() - base) * mean_grad).sum(-1)
    return scores.cpu().numpy().astype(np.float64), chosen[:, steps].detach().cpu().numpy().astype(np.float64)


def occlusion(logits_fn: LogitsFn, ids: np.ndarray, lengths: np.ndarray, pad_id: int = 0,
              max_windows: int = MAX_WINDOWS, batch_size: int = 256, temperature: float = 1.0,
              probs_fn: Callable[[np.ndarray], np.ndarray] | None = None
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window occlusion for every class at once: probabilities ``(N, C)`` of the texts, of
    their all-padding baselines ``(N, C)``, and per-id scores ``(N, T, C)``: the probability
    drop when the id's window (``ceil(length / max_windows)`` ids) becomes padding, shared
    evenly by the window's ids. Runs ``2 + windows`` rows per text through ``logits_fn``."""
    from .evaluate import softmax

    n, width = ids.shape
    batch_rows, batch_lengths, owners = [], [], []
    windows: list[list[tuple[int, int]]] = []
    for i in range(n):
        length = int(lengths[i])
        size = max(1, math.ceil(length / max_windows))
        spans = [(a, min(a + size, length)) for a in range(0, length, size)]
        windows.append(spans)
        blank = ids[i].copy()
        blank[:length] = pad_id
        batch_rows += [ids[i], blank]
        for a, b in spans:
            row = ids[i].copy()
            row[a:b] = pad_id
            batch_rows.append(row)
        batch_lengths += [length] * (2 + len(spans))
        owners.append(len(spans))
    all_ids = np.stack(batch_rows) if batch_rows else np.zeros((0, width), dtype=ids.dtype)
    all_lengths = np.asarray(batch_lengths, dtype=np.int64)
    logits = [logits_fn(all_ids[k:k + batch_size], all_lengths[k:k + batch_size])
              for k in range(0, len(all_ids), batch_size)]
    probs = ((probs_fn or (lambda z: softmax(z, temperature)))(np.concatenate(logits)) if logits
             else np.zeros((0, 0)))
    classes = probs.shape[1] if len(probs) else 0
    scores = np.zeros((n, width, classes))
    text_probs, base_probs = np.zeros((n, classes)), np.zeros((n, classes))
    row = 0
    for i, spans in enumerate(windows):
        text_probs[i], base_probs[i] = probs[row], probs[row + 1]
        for k, (a, b) in enumerate(spans):
            scores[i, a:b] = (probs[row] - probs[row + 2 + k]) / (b - a)
        row += 2 + owners[i]
    return text_probs, base_probs, scores


# --- classifiers ----------------------------------------------------------------------------


def _target_index(labels: Sequence[str], target: str | None) -> int | None:
    if target is None:
        return None
    if target not in labels:
        raise ConfigError(f"unknown target label {target!r}; the model's labels are {', '.join(labels)}")
    return list(labels).index(target)


def _resolve_method(classifier: Any, method: str) -> str:
    has_model = getattr(classifier, "model", None) is not None
    if method == "auto":
        return "integrated_gradients" if has_model else "occlusion"
    if method not in METHODS:
        raise ConfigError(f"unknown attribution method {method!r}; choose auto, {' or '.join(METHODS)}")
    if method == "integrated_gradients" and not has_model:
        raise ConfigError("integrated gradients need the PyTorch model of a run folder; an export bundle "
                          "has no gradients (use method occlusion, or the run folder)")
    return method


def _logits_fn(classifier: Any) -> LogitsFn:
    if getattr(classifier, "model", None) is not None:
        from .evaluate import predict_logits

        model, device = classifier.model, classifier.device
        return lambda ids, lengths: predict_logits(model, ids, lengths, len(lengths) or 1, device, trim=False)
    run = getattr(classifier, "_run", None)
    if run is None:
        raise ConfigError(f"{type(classifier).__name__} cannot be explained: it exposes no logits")
    return run


def explain_texts(classifier: Any, texts: Sequence[str], target: str | None = None, method: str = "auto",
                  steps: int = IG_STEPS, long_text: str | None = None) -> list[Explanation]:
    """Explain each text's prediction (or ``target``'s probability) with ``method``:
    ``auto`` is integrated gradients for a run's ``Classifier``, occlusion for a bundle.
    ``long_text`` (default: the classifier's) reads texts longer than ``max_length`` whole."""
    method = _resolve_method(classifier, method)
    mode = check_mode(long_text or getattr(classifier, "long_text", "truncate"))
    temperature = float(getattr(classifier, "temperature", 1.0))
    if not isinstance(steps, int) or not 1 <= steps <= 48:
        raise ConfigError(f"steps must be an integer from 1 to 48 (at most ~50 passes a text), got {steps!r}")
    texts = _as_texts(texts)
    labels, encoder, max_length = classifier.labels, classifier.encoder, classifier.max_length
    wanted = _target_index(labels, target)
    model = getattr(classifier, "model", None)
    mask_padding = model.config.mask_padding if model is not None else getattr(classifier, "mask_padding", True)
    pad_id = model.config.pad_id if model is not None else encoder.pad_id
    rows_per_text = steps + 1 if method == "integrated_gradients" else MAX_WINDOWS + 2
    per_batch = max(1, int(getattr(classifier, "batch_size", 256)) // rows_per_text)
    logits_fn = _logits_fn(classifier)
    out: list[Explanation] = []
    batch_size = int(getattr(classifier, "batch_size", 256))
    from .evaluate import softmax

    to_probs = getattr(classifier, "probabilities", None) or (lambda z: softmax(z, temperature))
    torch_probs = None
    if getattr(classifier, "multi_label", False):  # per-label sigmoid probabilities (vdcnn.multilabel)
        from .multilabel import torch_proba

        torch_probs = lambda z: torch_proba(z, classifier.platt)  # noqa: E731
    elif getattr(classifier, "top_label", None) is not None:  # the calibrated probability, as predict gives it
        from .calibration import torch_top_label

        torch_probs = lambda z: torch_top_label(torch.softmax(z.double() / temperature, -1),  # noqa: E731
                                                classifier.top_label).float()

    def trimmed(x: np.ndarray, n_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if mask_padding:  # masking makes the trimmed batch exact; unmasked models read max_length
            x = x[:, :max(int(n_ids.max(initial=1)), 1)]
        return x.astype(np.int64), n_ids

    def run_rows(x: np.ndarray, n_ids: np.ndarray) -> np.ndarray:
        return np.concatenate([logits_fn(*trimmed(x[k:k + batch_size], n_ids[k:k + batch_size]))
                               for k in range(0, len(n_ids), batch_size)] or [np.zeros((0, len(labels)))])

    for begin in range(0, len(texts), per_batch):
        chunk = texts[begin:begin + per_batch]
        n = len(chunk)
        ids, lengths, owners = encode_documents(encoder, chunk, max_length, mode)
        row_text = np.concatenate([np.arange(n), owners]).astype(np.int64)  # the text of each row
        # The texts' own rows as one slice (as with truncation), then the further windows.
        slices = [(0, n), *((k, min(k + per_batch, len(lengths))) for k in range(n, len(lengths), per_batch))]
        probs = to_probs(document_logits(run_rows, ids, lengths, owners))
        row_scores: list[np.ndarray] = []
        row_base: list[float] = []
        if method == "integrated_gradients":
            targets = probs.argmax(1) if wanted is None else np.full(n, wanted)
            for a, b in slices:
                part_scores, part_base = integrated_gradients(model, *trimmed(ids[a:b], lengths[a:b]),
                                                              targets[row_text[a:b]], steps, classifier.device,
                                                              temperature, torch_probs)
                row_scores += list(part_scores)
                row_base += list(part_base)
        else:
            parts = [occlusion(logits_fn, *trimmed(ids[a:b], lengths[a:b]), pad_id, batch_size=batch_size,
                               temperature=temperature, probs_fn=to_probs) for a, b in slices]
            single = np.bincount(owners, minlength=n) == 0
            probs[single] = parts[0][0][single]  # as with truncation: the text's row among its occlusions
            targets = probs.argmax(1) if wanted is None else np.full(n, wanted)
            for (a, b), (_, base_all, all_scores) in zip(slices, parts):
                wanted_rows = targets[row_text[a:b]]
                row_scores += list(all_scores[np.arange(b - a), :, wanted_rows])
                row_base += list(base_all[np.arange(b - a), wanted_rows])
        scores, base = row_scores, np.asarray(row_base)
        for i, text in enumerate(chunk):
            rows = [i, *(n + np.flatnonzero(owners == i))]
            if len(rows) == 1:
                offsets, truncated = token_offsets(encoder, text, max_length)
                id_scores, baseline = scores[i][:len(offsets)], float(base[i])
            else:
                offsets, truncated = token_offsets(encoder, text, id_bound(text, max_length))
                id_scores = np.zeros(len(offsets))
                for row, start in zip(rows, window_starts(len(offsets), max_length)):
                    piece = id_scores[start:start + max_length]
                    piece += scores[row][:len(piece)] / len(rows)
                baseline = float(np.mean(base[rows]))
            spans, truncated_at = spans_from_tokens(offsets, id_scores, len(text), truncated)
            top, t = int(probs[i].argmax()), int(targets[i])
            out.append(Explanation(text, labels[top], float(probs[i, top]), labels[t], float(probs[i, t]),
                                   baseline, spans, truncated_at, method))
    return out


# --- rendering ------------------------------------------------------------------------------


def _strength(explanation: Explanation) -> list[tuple[Span, float]]:
    """Each span with its score scaled to [-1, 1] by the text's largest |score| per character."""
    dense = [(s, s.score / max(s.end - s.start, 1)) for s in explanation.spans]
    peak = max((abs(v) for _, v in dense), default=0.0) or 1.0
    return [(s, v / peak) for s, v in dense]


def _rgb(value: float) -> tuple[int, int, int]:
    """White to green for positive scores (for the target), white to red for negative ones."""
    v = min(abs(value), 1.0)
    fade = int(round(255 * (1 - 0.75 * v)))
    return (fade, 255, fade) if value >= 0 else (255, fade, fade)


def _header(e: Explanation) -> str:
    head = f"{e.label} {e.probability:.4f}"
    if e.target != e.label:
        head += f"; explaining {e.target} {e.target_probability:.4f}"
    head += f" (baseline {e.baseline_probability:.4f}, {e.method.replace('_', ' ')})"
    if e.truncated_at is not None:
        head += f"; text after character {e.truncated_at} not read"
    return head


HTML_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;max-width:60em}
.vdcnn-explain{margin:0 0 1.2em 0}
.vdcnn-explain .head{font-size:.85em;color:#444;margin-bottom:.2em}
.vdcnn-explain .text{font-family:ui-monospace,monospace;white-space:pre-wrap;line-height:1.6}
.vdcnn-explain .unread{color:#999}"""


def _html_block(e: Explanation) -> str:
    pieces = []
    for span, v in _strength(e):
        piece = html.escape(e.text[span.start:span.end])
        if e.truncated_at is not None and span.start >= e.truncated_at:
            pieces.append(f'<span class="unread" title="not read">{piece}</span>')
        else:
            r, g, b = _rgb(v)
            pieces.append(f'<span style="background:rgb({r},{g},{b})" title="{span.score:+.4g}">{piece}</span>')
    return (f'<div class="vdcnn-explain"><div class="head">{html.escape(_header(e))}</div>'
            f'<div class="text">{"".join(pieces)}</div></div>')


def _html_head(title: str) -> str:
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{HTML_STYLE}</style></head>\n<body>\n")


HTML_TAIL = "</body></html>\n"


def render_html(explanations: Sequence[Explanation], full_page: bool = True, title: str = "vdcnn explain") -> str:
    """The explanations as HTML: text coloured by score (green for, red against the target;
    hover for the score). ``full_page`` gives a self-contained page, else a fragment."""
    body = "".join(_html_block(e) + "\n" for e in explanations)
    if not full_page:
        return f"<style>{HTML_STYLE}</style>\n{body}"
    return _html_head(title) + body + HTML_TAIL


def render_terminal(explanation: Explanation) -> Any:
    """A ``rich`` Text: header line, then the text on coloured backgrounds."""
    from rich.text import Text

    text = Text(_header(explanation) + "\n", style="dim")
    for span, v in _strength(explanation):
        piece = explanation.text[span.start:span.end]
        if explanation.truncated_at is not None and span.start >= explanation.truncated_at:
            text.append(piece, style="dim")
        elif abs(v) < 0.05:
            text.append(piece)
        else:
            r, g, b = _rgb(v)
            text.append(piece, style=f"black on rgb({r},{g},{b})")
    return text


FORMATS = ("terminal", "jsonl", "html")


def write_explanations(classifier: Any, chunks: Any, out: Any, fmt: str = "terminal", target: str | None = None,
                       method: str = "auto", steps: int = IG_STEPS, long_text: str | None = None) -> int:
    """Explain every text of ``chunks`` (lists of texts) and write them to the stream ``out``
    as ``fmt``; the HTML page is written piece by piece. Returns the number of texts."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    _resolve_method(classifier, method)
    _target_index(classifier.labels, target)
    console = None
    if fmt == "terminal":
        from rich.console import Console

        console = Console(file=out, highlight=False, soft_wrap=False)
    if fmt == "html":
        out.write(_html_head("vdcnn explain"))
    count = 0
    for chunk in chunks:
        for e in explain_texts(classifier, chunk, target, method, steps, long_text):
            if fmt == "jsonl":
                out.write(e.to_json() + "\n")
            elif fmt == "html":
                out.write(_html_block(e) + "\n")
            else:
                console.print(render_terminal(e))
            count += 1
        out.flush()
    if fmt == "html":
        out.write(HTML_TAIL)
    return count
