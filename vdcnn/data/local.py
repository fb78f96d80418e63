"""One split of a local dataset, whatever its form: a file, an archive, a folder of split files or
class folders, or a Hugging Face dataset on disk (``save_to_disk`` or a hub-style repository).

The Hugging Face forms are read by `datasets` itself (``load_from_disk``, ``load_dataset(folder)``),
so ClassLabel names and a README's ``configs`` are kept exactly as that library reads them.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Sequence

from vdcnn.errors import DataError

from .files import Table, _quiet_datasets, class_label_names, columns_of, decode_legacy, one_line, read_lines_decoded
from .files import read_table
from .layout import SplitFiles, canonical_split, data_files, find_split, has_split_files, is_archive, unpack


def resolve(path: Path) -> tuple[Path, list[str]]:
    """The folder or file to read for ``path``: an archive (or a folder holding only one archive) is
    unpacked into the cache; and what was done, for the data line."""
    if path.is_dir() and not hf_kind(path):
        files = data_files(path)
        archives = [p for p in files if is_archive(p)]
        if len(archives) == 1 and len(files) == 1:
            path = archives[0]
    if is_archive(path):
        folder = unpack(path)
        _UNPACKED[str(folder)] = path
        return folder, [f"archive: {path} read from its unpacked copy {folder} (the dataset folder is untouched)"]
    return path, []


_UNPACKED: dict[str, Path] = {}  # unpacked folder -> its archive


def archive_of(folder: Path) -> Path:
    """The archive a cache folder was unpacked from (the folder itself if none)."""
    return _UNPACKED.get(str(folder), folder)


def hf_kind(folder: Path) -> str:
    """``disk`` (written by save_to_disk), ``repo`` (a README with ``configs``) or ``""``."""
    if (folder / "dataset_dict.json").is_file() or (
            (folder / "state.json").is_file() and (folder / "dataset_info.json").is_file()):
        return "disk"
    readme = folder / "README.md"
    if readme.is_file():
        head = readme.read_text(encoding="utf-8", errors="replace")[:20000]
        if head.startswith("---") and "\nconfigs:" in head.split("\n---", 2)[0] + "\n":
            return "repo"
    return ""


@functools.lru_cache(maxsize=8)
def _hf_splits(folder: str, kind: str) -> dict[str, Any]:
    """Split name -> `datasets.Dataset` of a Hugging Face folder, read by `datasets`."""
    import datasets

    try:
        with _quiet_datasets():
            if kind == "disk":
                obj = datasets.load_from_disk(folder)
            else:
                obj = datasets.load_dataset(folder)
    except Exception as exc:  # datasets / pyarrow errors -> one line
        how = "load_from_disk" if kind == "disk" else "load_dataset"
        raise DataError(f"{folder}: cannot read this Hugging Face dataset folder with datasets.{how} "
                        f"({one_line(exc)})") from None
    if isinstance(obj, datasets.Dataset):
        return {"train": obj}
    return dict(obj)


def _hf_split_name(splits: dict[str, Any], split: str) -> str | None:
    if split in splits:
        return split
    want = canonical_split(split)
    for name in splits:
        if canonical_split(name) == want:
            return name
    return None


def has_local_split(path: Path, split: str) -> bool:
    """Whether the local dataset at ``path`` holds ``split`` (a single file holds only training rows)."""
    path, _ = resolve(path)
    if not path.is_dir():
        return False
    kind = hf_kind(path)
    if kind:
        return _hf_split_name(_hf_splits(str(path), kind), split) is not None
    return has_split_files(path, split)


def own_validation(path: Path) -> str | None:
    """The name of the local dataset's own validation split, if it has one."""
    path, _ = resolve(path)
    if not path.is_dir():
        return None
    kind = hf_kind(path)
    if kind:
        return _hf_split_name(_hf_splits(str(path), kind), "validation")
    return "validation" if has_split_files(path, "validation") else None


def read_local_split(path: Path, split: str, wanted: Sequence[str]) -> tuple[Table, str, Path | None]:
    """The table of ``split`` of the local dataset at ``path``, the source the data line names, and
    the file or folder a ``classes.txt`` would sit beside (None: a Hugging Face folder)."""
    path, notes = resolve(path)
    if not path.is_dir():
        table = read_table(path, wanted)
        table.notes[:0] = notes
        return table, str(path), path
    kind = hf_kind(path)
    if kind:
        splits = _hf_splits(str(path), kind)
        name = _hf_split_name(splits, split)
        if name is None:
            raise DataError(f"{path}: no split {split!r} in this Hugging Face dataset (it has {', '.join(splits)})")
        ds = splits[name]
        how = "datasets.load_from_disk" if kind == "disk" else "datasets.load_dataset (README configs)"
        table = Table(columns=columns_of(ds), class_label_names=class_label_names(ds),
                      notes=[*notes, f"format: Hugging Face dataset folder read with {how}, split {name!r}"])
        return table, f"{path} [{name}]", None
    found = find_split(path, split)
    source = found.source
    if notes and source.startswith(str(path)):  # unpacked from an archive: name the archive, not the cache
        source = f"{archive_of(path)}:{source[len(str(path)):].lstrip('/') or '.'}"
    if found.kind == "table":
        tables = [read_table(f, wanted) for f in found.files]
        table = _concat(tables, found) if len(tables) > 1 else tables[0]
    elif found.kind == "parallel":
        table = _read_parallel(found, wanted)
    else:
        table = _read_class_layout(found)
    table.notes[:0] = notes + ([found.describe()] if found.describe() else [])
    return table, source, found.files[0] if found.kind == "table" else path


def _concat(tables: list[Table], found: SplitFiles) -> Table:
    names = list(tables[0].columns)
    for t, f in zip(tables[1:], found.files[1:]):
        if list(t.columns) != names:
            raise DataError(f"{f}: columns {list(t.columns)} differ from {found.files[0].name}'s {names}")
    cols = {n: [v for t in tables for v in t.columns[n]] for n in names}
    notes = [n for t in tables for n in t.notes]
    return Table(columns=cols, headerless=tables[0].headerless, charcnn_escapes=tables[0].charcnn_escapes,
                 class_label_names=tables[0].class_label_names, notes=notes)


def _read_parallel(found: SplitFiles, wanted: Sequence[str]) -> Table:
    """Texts and labels of a text file and a label file read line by line; ``--label-column`` may
    name another label file. Lines with no text are dropped, with a count."""
    text_file, label_file = found.files
    by_name = {p.name: p for p in [label_file, *(text_file.parent / n for n in found.labels)]}
    asked = [w for w in wanted if w in by_name]
    label_file = by_name[asked[0]] if asked else label_file
    texts, labels = (read_lines_decoded(p, keep_blank=True)[0] for p in (text_file, label_file))
    kept = [(t, y) for t, y in zip(texts, labels) if t]
    notes = ([f"{len(texts) - len(kept):,} of {len(texts):,} lines of {text_file.name} are empty: dropped with their "
              "labels"] if len(kept) < len(texts) else [])
    return Table(columns={"text": [t for t, _ in kept], label_file.name: [y for _, y in kept]}, notes=notes)


def _read_class_layout(found: SplitFiles) -> Table:
    """Texts and labels of a class-folder or class-file split, with legacy bytes decoded and counted."""
    texts: list[str] = []
    labels: list[str] = []
    counts: dict[str, int] = {}
    if found.kind == "class_folders":
        unit = "files"
        for f, label in zip(found.files, found.labels):
            try:
                raw = f.read_bytes()
            except OSError as exc:
                raise DataError(f"{f}: cannot read ({one_line(exc)})") from None
            text, enc = decode_legacy(raw)
            counts[enc] = counts.get(enc, 0) + 1
            texts.append(text.strip())
            labels.append(label)
    else:
        unit = "lines"
        for f, label in zip(found.files, found.labels):
            lines, c = read_lines_decoded(f)
            for enc, n in c.items():
                counts[enc] = counts.get(enc, 0) + n
            texts.extend(lines)
            labels.extend([label] * len(lines))
    notes = []
    legacy = {enc: n for enc, n in counts.items() if enc != "utf-8"}
    if legacy:
        total = sum(counts.values())
        how = ", ".join(f"{n:,} as {enc}" for enc, n in legacy.items())
        notes.append(f"encoding: {sum(legacy.values()):,} of {total:,} {unit} are not UTF-8, decoded {how} "
                     "(the rest as UTF-8); none dropped")
    return Table(columns={"label": labels, "text": texts}, notes=notes, layout_columns=True)


__all__ = ["has_local_split", "own_validation", "read_local_split", "resolve", "hf_kind"]
