"""Crash-safe file writes: every file goes to a temporary name in its folder and is renamed into place.

A crash, ``kill -9`` or a full disk therefore never leaves a torn file: readers see the old
file or the new one. Failures become one-line ``CheckpointError``s naming the file.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import CheckpointError

_umask: int | None = None


def describe_os_error(exc: OSError, path: Path) -> str:
    """A one-line reason for a failed write of ``path``."""
    if exc.errno == errno.ENOSPC:
        return f"no space left on the device while writing {path}"
    if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return f"cannot write {path}: the folder is read-only or not writable"
    return f"cannot write {path}: {exc.strerror or exc}"


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (its type name when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


def process_umask() -> int:
    """The process umask, for giving renamed temp files the mode a plain ``open()`` would.

    Read from ``/proc/self/status`` on Linux. Elsewhere the only way is to set it and set it
    back (``os.umask``), which is done once, at the first write, and cached: a process that
    changes its umask after vdcnn's first write keeps the old mode for vdcnn's files.
    """
    global _umask
    if _umask is None:
        _umask = _umask_from_proc()
        if _umask is None:
            _umask = os.umask(0o022)
            os.umask(_umask)
    return _umask


def _umask_from_proc() -> int | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None  # kernels before 4.7 have no Umask line


def _fault_sleep(path: Path) -> None:
    """Test hook: ``VDCNN_FAULT_SLEEP_IN_SAVE=[NAME:]SECONDS`` sleeps between writing the temp file and
    renaming it (for NAME only, if given), so a fault-injection test can ``kill -9`` mid-save."""
    spec = os.environ.get("VDCNN_FAULT_SLEEP_IN_SAVE")
    if spec:
        name, _, seconds = spec.rpartition(":")
        if not name or name == path.name:
            time.sleep(float(seconds))


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass  # not every platform or file system can sync a folder


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp_path)`` then rename the temp file onto ``path`` (same folder)."""
    path = Path(path)
    tmp = None
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        try:
            write(tmp)
        except OSError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. torch.save reports a full disk as RuntimeError
            raise CheckpointError(f"cannot write {path}: {first_line(exc)} (is the disk full?)") from exc
        os.chmod(tmp, 0o666 & ~process_umask())  # mkstemp (and some writers) make 0600; a plain open() would not
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        _fault_sleep(path)
        os.replace(tmp, path)
        tmp = None
        _fsync_folder(path.parent)
    except OSError as exc:
        raise CheckpointError(describe_os_error(exc, path)) from None
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_bytes(path: str | Path, data: bytes) -> None:
    atomic_write(path, lambda p: p.write_bytes(data))


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_line(path: str | Path, line: str) -> None:
    """Append one line by rewriting the file atomically (metrics files are small)."""
    path = Path(path)
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    write_text(path, old + line.rstrip("\n") + "\n")


def make_folder(path: str | Path) -> Path:
    """Create ``path`` (and parents); a one-line error when it cannot be, or is a file."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(describe_os_error(exc, path)) from None
    if not path.is_dir():
        raise CheckpointError(f"cannot write into {path}: it is not a folder")
    return path


def read_versioned_json(path: Path, what: str, version_name: str, newest: int, required: Sequence[str]
                        ) -> dict[str, Any]:
    """A vdcnn JSON description (``format_version`` at most ``newest``, ``required`` keys present)."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"{path} is corrupt: not valid JSON") from None
    if not isinstance(meta, dict) or "format_version" not in meta:
        raise CheckpointError(f"{path} is not a vdcnn {what}")
    version = meta["format_version"]
    if not isinstance(version, int) or version > newest:
        raise CheckpointError(f"{path} has {version_name} {version!r}, newer than this vdcnn understands ({newest}); "
                              f"upgrade vdcnn")
    for key in required:
        if key not in meta:
            raise CheckpointError(f"{path} lacks the {key!r} entry")
    return meta
