"""Where a dataset folder keeps each split, and in which layout.

Split files are found as `datasets` finds them: its split keywords (``train``/``training``,
``validation``/``valid``/``dev``/``val``, ``test``/``testing``/``eval``/``evaluation``) as a word of a
folder name first (``20news-bydate-train/``, ``train/pos/``), else of a file name (``stsa.fine.train``,
``NAME.training.txt``, ``data/train-00000-of-00001.parquet``); with no keyword anywhere, every file is
training data. The words and separators are `datasets`' own; the matching is not its glob patterns
(``get_data_patterns``), which need a separator after the word and so put ``stsa.fine.train``,
``.dev`` and ``.test`` all into ``train``. Within a split the layout is one of:

* ``table``: one data file (or shards of one) with text and label columns;
* ``class_folders``: one folder per class, one document per file (20 Newsgroups, aclImdb,
  scikit-learn ``load_files``, Keras ``text_dataset_from_directory``);
* ``class_files``: one file per class, one text per line, the class named by the file name
  (``rt-polarity.pos`` / ``rt-polarity.neg``).

Archives (``.tar.gz``, ``.tgz``, ``.tar``, ``.zip``...) are unpacked once into the cache folder
(``$VDCNN_CACHE``, default ``~/.cache/vdcnn``), never into the dataset's folder.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from vdcnn.errors import DataError

from .files import LABEL_COLUMNS, decode_legacy, first_row_shape, open_binary, split_ext, split_files

# The split keywords of `datasets` (datasets.data_files.SPLIT_KEYWORDS, the same in its 2.x-5.x releases) by
# canonical split name, and its word separators (NON_WORDS_CHARS, "-._ 0-9", a regex class with the digit
# range): written out, since importing `datasets` costs 0.7 s that reading a local file need not pay
# (tests/test_layouts.py checks them against the installed release).
SPLIT_WORDS = {"train": ("train", "training"), "validation": ("validation", "valid", "dev", "val"),
               "test": ("test", "testing", "eval", "evaluation")}
SPLIT_SEPARATORS = r"[-._ 0-9]+"


def _split_words() -> tuple[dict[str, tuple[str, ...]], str]:
    return SPLIT_WORDS, SPLIT_SEPARATORS


ARCHIVES = (".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar", ".zip")
_IGNORED_NAMES = {"readme", "license", "licence", "classes", "citation", "changelog"}
# Anywhere in the name of a file that is no table: subjdata.README.1.0, rt-polaritydata.README.1.0.txt
_DOC_WORDS = {"readme", "license", "licence", "citation", "changelog"}
_IGNORED_EXTS = {".md", ".py", ".sh", ".pdf", ".html", ".htm", ".ipynb", ".pyc", ".lock", ".yaml", ".yml",
                 ".cfg", ".ini", ".toml"}
_UNLABELLED_DIRS = {"unsup", "unlabeled", "unlabelled"}  # aclImdb's train/unsup: no class
_NOT_A_TEST = _UNLABELLED_DIRS | {"sample", "submission", "predictions", "vocab", "meta", "metadata", "classes"}
_TABLE_EXTS = {".csv", ".tsv", ".json", ".jsonl", ".parquet"}


def canonical_split(split: str) -> str:
    """``train``, ``validation`` or ``test`` for any of their keywords; other names as given."""
    key = split.lower()
    for name, words in _split_words()[0].items():
        if key == name or key in words:
            return name
    return key


def _words(split: str) -> tuple[str, ...]:
    name = canonical_split(split)
    return _split_words()[0].get(name, (name,))


def _tokens(name: str) -> list[str]:
    return [t for t in re.split(_split_words()[1], name.lower()) if t]


def is_archive(path: Path) -> bool:
    """Whether ``path`` names an archive this module unpacks."""
    return path.is_file() and path.name.lower().endswith(ARCHIVES)


def cache_root() -> Path:
    # The same folder as vdcnn.batching.cache_dir (not imported: that module imports torch).
    return Path(os.environ.get("VDCNN_CACHE", Path.home() / ".cache" / "vdcnn")) / "archives"


def unpack(archive: Path) -> Path:
    """The folder ``archive`` unpacks to, in the cache (unpacked on first use, keyed by path, size
    and time)."""
    st = archive.stat()
    key = hashlib.sha256(f"{archive.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:20]
    dest = cache_root() / f"{archive.name}-{key}"
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest.parent))
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as z:
                z.extractall(tmp)  # zipfile drops absolute and '..' parts of member names
        else:
            with tarfile.open(archive) as t:
                if hasattr(tarfile, "data_filter"):
                    t.extractall(tmp, filter="data")  # no links out, no absolute or '..' paths
                else:  # pragma: no cover - Python < 3.10.12
                    t.extractall(tmp)
        os.replace(tmp, dest)
    except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if dest.is_dir():  # another process unpacked it first
            return dest
        raise DataError(f"{archive}: cannot unpack archive ({type(exc).__name__}: {exc})") from None
    return dest


def data_files(root: Path) -> list[Path]:
    """Every file under ``root`` that may hold data: no hidden or ``__`` parts, no README, licence,
    ``classes.txt``, code or metadata."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith((".", "__")))
        for name in sorted(filenames):
            p = Path(dirpath) / name
            stem, ext, _ = split_ext(p)
            if (name.startswith((".", "__")) or stem.split(".")[0] in _IGNORED_NAMES or ext in _IGNORED_EXTS
                    or (ext not in _TABLE_EXTS and _DOC_WORDS & set(_words_of(name)))):
                continue
            out.append(p)
    return out


@dataclass
class SplitFiles:
    """The files of one split and how they are laid out."""

    kind: str  # "table", "class_folders", "class_files" or "parallel" (texts, labels)
    files: list[Path]
    root: Path  # the split's folder (class folders sit in it), or the dataset folder
    labels: list[str] = field(default_factory=list)  # class of each file (class layouts)
    ignored: list[Path] = field(default_factory=list)  # files beside the class folders, not read
    note: str = ""  # how the split was found, where the data line should say it

    @property
    def source(self) -> str:
        """What the data line calls this split."""
        if self.kind == "table" and len(self.files) == 1:
            return str(self.files[0])
        if self.kind == "class_files":
            return f"{self.root} ({', '.join(p.name for p in self.files)})"
        return str(self.root)

    def describe(self) -> str:
        """The layout in one line."""
        if self.kind == "class_folders":
            n = len(set(self.labels))
            text = (f"layout: one folder per class, one document per file ({len(self.files):,} files in {n} class "
                    f"folders under {self.root.name}/)")
            if self.ignored:
                text += f"; not read: {', '.join(sorted({_rel(p, self.root) for p in self.ignored})[:5])}"
            return text
        if self.kind == "parallel":
            others = f" (also labels: {', '.join(self.labels)}; choose with --label-column FILE)" if self.labels else ""
            return (f"layout: a text a line in {self.files[0].name}, its label on the same line of "
                    f"{self.files[1].name}{others}")
        if self.kind == "class_files":
            pairs = ", ".join(f"{p.name} -> {lab!r}" for p, lab in zip(self.files, self.labels))
            return f"layout: one file per class, one text per line ({pairs})"
        if self.note:
            return self.note
        if len(self.files) > 1:
            return f"layout: {len(self.files)} shards of one table ({', '.join(p.name for p in self.files[:3])}...)"
        return ""


def _rel(p: Path, root: Path) -> str:
    r = p.relative_to(root)
    return r.parts[0] + ("/" if len(r.parts) > 1 else "")


def _assign(root: Path, files: list[Path]) -> dict[str, list[tuple[Path, Path]]]:
    """Split name -> [(file, split folder)]: by folder-name keyword first, else file-name keyword,
    else everything is ``train``."""
    by_dir: dict[str, list[tuple[Path, Path]]] = {}
    for p in files:
        parts = p.relative_to(root).parts
        for i, comp in enumerate(parts[:-1]):
            hit = _split_of(comp)
            if hit:
                by_dir.setdefault(hit, []).append((p, root.joinpath(*parts[: i + 1])))
                break
    if by_dir:
        return by_dir
    by_name: dict[str, list[tuple[Path, Path]]] = {}
    for p in files:
        hit = _split_of(split_ext(p)[0] if split_ext(p)[1] in _TABLE_EXTS | {".txt"} else p.name)
        if hit:
            by_name.setdefault(hit, []).append((p, root))
    if list(by_name) == ["train"]:
        # TREC's train_5500.label beside TREC_10.label: the one other file, laid out as the training
        # file, is its test split (a sample_submission.csv or a vocabulary is laid out otherwise).
        rest = [p for p in files if p not in {q for q, _ in by_name["train"]}]
        train = [p for p, _ in by_name["train"]]
        if (len(rest) == 1 and len(train) == 1 and split_ext(rest[0])[1] == split_ext(train[0])[1]
                and not _NOT_A_TEST & set(_tokens(split_ext(rest[0])[0]))
                and first_row_shape(rest[0]) == first_row_shape(train[0]) is not None):
            by_name["test"] = [(rest[0], root)]
    if by_name:
        return by_name
    return {"train": [(p, root) for p in files]}


def _split_of(name: str) -> str | None:
    toks = _tokens(name)
    for split, words in _split_words()[0].items():
        if any(w in toks for w in words):
            return split
    return None


def _dir_cache(root: Path) -> dict[str, list[tuple[Path, Path]]]:
    return _assign(root, data_files(root))


def available_splits(root: Path) -> list[str]:
    """The splits a folder holds (canonical names)."""
    return sorted(_dir_cache(root))


def has_split_files(root: Path, split: str) -> bool:
    """Whether folder ``root`` holds files for ``split``."""
    if canonical_split(split) in _dir_cache(root):
        return True
    return bool(split_files(root, split))


def _class_name(names: list[str]) -> list[str]:
    """The class part of each per-class file name: the dot-separated parts not shared by all names,
    without split keywords (``rt-polarity.pos`` -> ``pos``)."""
    split_words = {w for ws in _split_words()[0].values() for w in ws}
    parts = [n.split(".") for n in names]
    pre = 0
    while all(len(p) > pre for p in parts) and len({p[pre] for p in parts}) == 1:
        pre += 1
    suf = 0
    while all(len(p) > pre + suf for p in parts) and len({p[-1 - suf] for p in parts}) == 1:
        suf += 1
    out = []
    for p in parts:
        mid = [x for x in p[pre: len(p) - suf] if x.lower() not in split_words]
        out.append(".".join(mid) or ".".join(p))
    return out


def _label_lines(lines: list[str]) -> bool:
    """Short values, each repeated: a label per line rather than a text."""
    sample = [t for t in lines[:5000] if t]
    return (len(sample) >= 4 and len(set(sample)) <= 0.5 * len(sample)
            and sum(map(len, sample)) / len(sample) <= 40 and max(map(len, sample)) <= 100)


def _parallel_files(files: list[Path]) -> list[Path] | None:
    """[texts, labels, other label files] when one file holds a text a line and the others, with as
    many lines, a label a line (Web of Science's X.txt + Y.txt, YL1.txt, YL2.txt); else None."""
    if not 2 <= len(files) <= 8:
        return None
    heads = {p: _head_lines(p) for p in files}
    label_files = [p for p in files if _label_lines(heads[p])]
    texts = [p for p in files if p not in label_files]
    if len(texts) != 1 or not label_files or len({_line_count(p) for p in files}) != 1:
        return None
    # A file named for a label (UIT-VSFC's sentiments.txt beside topics.txt) is the task, else the finest
    # labelling (Web of Science's Y.txt, whose classes refine YL1.txt's domains); the rest are said.
    def named_for_label(p: Path) -> bool:
        return any(w in LABEL_COLUMNS or w.rstrip("s") in LABEL_COLUMNS for w in _words_of(split_ext(p)[0]))

    label_files.sort(key=lambda p: (not named_for_label(p), -len(set(heads[p])), p.name))
    return [texts[0], *label_files]


def _words_of(name: str) -> list[str]:
    return [w for w in re.split(r"[-._ ]+", name.lower()) if w]


def _head_lines(path: Path, n: int = 5000) -> list[str]:
    lines = []
    with open_binary(path) as f:
        for raw in f:
            lines.append(decode_legacy(raw.rstrip(b"\r\n"))[0].strip())
            if len(lines) >= n:
                break
    return lines


def _line_count(path: Path) -> int:
    """How many lines ``read_lines_decoded(path, keep_blank=True)`` gives, counted without keeping them."""
    count, tail = 0, b""
    with open_binary(path) as f:
        while chunk := f.read(1 << 20):
            count += chunk.count(b"\n")
            tail = chunk[chunk.rfind(b"\n") + 1:] if b"\n" in chunk else tail + chunk
    return count + (1 if tail.strip() else 0)


def find_split(root: Path, split: str) -> SplitFiles:
    """The files of ``split`` in folder ``root`` and their layout; a DataError when there are none."""
    assigned = _dir_cache(root).get(canonical_split(split))
    if not assigned:
        legacy = split_files(root, split)  # names starting with the split's name (trainset.csv...)
        if legacy:
            assigned = [(p, root) for p in legacy]
    if not assigned:
        words = _words(split)
        have = ", ".join(sorted({_rel(p, root) for p in data_files(root)})[:12]) or "(no data files)"
        raise DataError(f"{root}: no file for split {split!r} (no folder or file name holds the word "
                        f"{' / '.join(words)}, as in {words[0]}.csv, NAME.{words[0]}, {words[0]}/CLASS/FILE); "
                        f"found: {have}")
    files = [p for p, _ in assigned]
    split_root = assigned[0][1]
    # One folder per class: the split's files sit in two or more subfolders of its folder, or of the
    # one folder that holds (nearly) all of them (livedoor's text/CLASS/FILE beside a CHANGES.txt).
    nested = [(p, p.relative_to(d).parts) for p, d in assigned if d == split_root]
    class_root = split_root
    while True:
        in_dirs = [(p, parts) for p, parts in nested if len(parts) > 1]
        classes = {parts[0] for _, parts in in_dirs if parts[0].lower() not in _UNLABELLED_DIRS}
        if len({parts[0] for _, parts in in_dirs}) != 1 or len(in_dirs) < 0.9 * len(nested):
            break
        class_root = class_root / in_dirs[0][1][0]
        nested = [(p, parts[1:]) for p, parts in in_dirs]
    if len(classes) >= 2:
        kept = [(p, parts[0]) for p, parts in in_dirs if parts[0] in classes]
        ignored = [p for p in files if p not in {q for q, _ in kept}]
        return SplitFiles("class_folders", [p for p, _ in kept], class_root, [c for _, c in kept], ignored)
    if len(files) == 1:
        unnamed = canonical_split(split) == "test" and _split_of(_rel(files[0], root)) is None and (
            _split_of(split_ext(files[0])[0]) is None)
        note = (f"split: {files[0].name} has no split word in its name; read as the test split (the one other "
                "file, laid out as the training file)" if unnamed else "")
        return SplitFiles("table", files, root, note=note)
    exts = {split_ext(p)[1] for p in files}
    shards = {re.sub(r"\d+", "", p.name.lower()) for p in files}
    if len(shards) == 1:
        return SplitFiles("table", files, root)
    if not exts & _TABLE_EXTS:
        parallel = _parallel_files(files)
        if parallel is not None:
            return SplitFiles("parallel", parallel[:2], split_root, labels=[p.name for p in parallel[2:]])
        labels = _class_name([p.name for p in files])
        if len(set(labels)) == len(labels):
            return SplitFiles("class_files", files, split_root, labels)
    exact = [p for p in files if split_ext(p)[0] in _words(split)]
    if len(exact) == 1:
        return SplitFiles("table", exact, root)
    names = ", ".join(str(p.relative_to(root)) for p in files[:8])
    raise DataError(f"{root}: several files match split {split!r} ({names}); pass one file path")
