"""Peak memory of `vdcnn predict` streaming over a large text file.

    VDCNN_DATA_DIR=../shared/data python benchmarks/predict_memory.py --run runs/quick [--size-gb 1]

Writes a text file of ``--size-gb`` GB built from real AG News test texts (joined
into lines of about ``--line-chars`` characters, so the run takes minutes rather
than hours; every line is still one prediction), runs ``vdcnn predict RUN FILE``
in a fresh process, and prints one table: the process's peak RSS, and beside it
the reference, the file's own size (what any approach that reads the whole file
first needs at the very least), as a ratio. The target is a peak under 1.5 GB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# `python benchmarks/X.py` puts this folder first on sys.path, where datasets.py would hide the
# `datasets` package: the repository root takes its place.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
sys.path.insert(0, str(ROOT))
from benchmarks.speed import machine  # noqa: E402
from vdcnn.data import load_split  # noqa: E402

PEAK_RSS = ("import atexit, resource, sys\n"
            "atexit.register(lambda: sys.stderr.write("
            "f'PEAK_RSS_KB {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}\\n'))\n"
            "from vdcnn.cli.main import main\n"
            "sys.argv = ['vdcnn', *sys.argv[1:]]\n"
            "main()\n")


def peak_rss_of_predict(run: Path, text_file: Path, *options: str) -> tuple[int, int, float]:
    """``vdcnn predict RUN FILE [OPTIONS]`` in a fresh process: (peak RSS in bytes, output lines, seconds)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", PEAK_RSS, "predict", str(run), str(text_file), *options],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "vdcnn predict failed")
    peak = [line for line in proc.stderr.splitlines() if line.startswith("PEAK_RSS_KB")]
    return int(peak[-1].split()[1]) * 1024, proc.stdout.count("\n"), elapsed


def write_big_file(path: Path, size_bytes: int, line_chars: int) -> int:
    """Real AG News texts joined into lines of about ``line_chars`` characters; returns the line count."""
    texts = load_split("ag_news", "test").texts
    lines, written, i = 0, 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < size_bytes:
            parts, n = [], 0
            while n < line_chars:
                parts.append(texts[i % len(texts)])
                n += len(parts[-1]) + 1
                i += 1
            line = " ".join(parts) + "\n"
            f.write(line)
            written += len(line.encode("utf-8"))
            lines += 1
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/quick"), help="a trained run folder")
    parser.add_argument("--size-gb", type=float, default=1.0)
    parser.add_argument("--line-chars", type=int, default=8192)
    args = parser.parse_args()
    if not os.environ.get("VDCNN_DATA_DIR"):
        sys.exit("set VDCNN_DATA_DIR to the folder holding ag_news/ (e.g. ../shared/data)")
    if not (args.run / "config.json").is_file():
        sys.exit(f"{args.run} is not a run folder: train one first (see the README's quick start)")
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.txt"
        n_lines = write_big_file(big, int(args.size_gb * 1e9), args.line_chars)
        size = big.stat().st_size
        try:
            peak, out_lines, elapsed = peak_rss_of_predict(args.run, big)
        except RuntimeError as exc:
            sys.exit(str(exc))
    print(f"vdcnn predict {args.run} over {size / 1e9:.2f} GB ({n_lines:,} lines in, {out_lines:,} lines out, "
          f"{elapsed:.0f} s, {n_lines / elapsed:.0f} lines/s)")
    print(f"{'figure':<28}  {'vdcnn':>9}  {'reference':>9}  {'ratio':>6}  machine")
    print(f"{'peak RSS vs file size, GB':<28}  {peak / 1e9:>9.2f}  {size / 1e9:>9.2f}  {peak / size:>5.2f}x  {machine()}")
    print(f"target: peak RSS under 1.5 GB: {'met' if peak < 1.5e9 else 'MISSED'}")


if __name__ == "__main__":
    main()
