"""What refusing a hostile drop costs: bytes on disk → peak RSS of `litelora train --data` → its verdict.

    python benchmarks/hostile_drops.py [--out benchmarks/reports/hostile-drops.md] [--json]

Each drop is built in a temporary folder and handed to `litelora train --data DIR --out SET` in a child
process of its own, as a user would; the child's peak RSS comes from the kernel (wait4), so it includes the
interpreter and its imports (a refusal that costs nothing beyond them still shows ~0.4 GB). Prints a markdown
table, writes it with the commit it ran on; nothing is asserted.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from pipeline.bench.stamp import commit_stamp


def struct_column_text(folder: Path) -> None:
    """4,400 rows of 1 MB text behind a struct column before `label`: 4.4 GB decoded from a ~0.2 MB file."""
    rows, body = 4_400, "x" * (1024**2 - 20)
    table = pa.table(
        {
            "meta": pa.array([{"x": 1, "y": 2}] * rows),
            "label": [f"c{i % 2}" for i in range(rows)],
            "text": [f"{i:08d}{body}" for i in range(rows)],
        }
    )
    pq.write_table(
        table, folder / "train.parquet", compression="zstd", compression_level=19, use_dictionary=False
    )


def many_classes(folder: Path) -> None:
    """200,000 rows, each its own class."""
    rows = 200_000
    table = pa.table({"text": [f"t{i}" for i in range(rows)], "label": [f"class {i}" for i in range(rows)]})
    pq.write_table(table, folder / "train.parquet")


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (width, height)).save(out, "PNG", optimize=True)
    return out.getvalue()


def maximal_pixel_pngs(folder: Path) -> None:
    """100 real PNGs of 5,000 × 5,000 grey pixels (each at the 25-megapixel limit): 2.5 gigapixels."""
    image = png(5_000, 5_000)
    pq.write_table(pa.table({"image": [image] * 100, "label": ["a", "b"] * 50}), folder / "train.parquet")


def one_oversized_png(folder: Path) -> None:
    """Real pixel data of 12,000 × 12,000 one-bit pixels, a few KB compressed: over the per-image limit."""
    out = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(out, "PNG")
    pq.write_table(pa.table({"image": [out.getvalue()] * 2, "label": ["a", "b"]}), folder / "train.parquet")


DROPS = {
    "text behind a struct column": struct_column_text,
    "200,000 classes": many_classes,
    "100 PNGs of 25 MP each": maximal_pixel_pngs,
    "one 144 MP PNG": one_oversized_png,
}


def run_train(folder: Path, out: Path) -> tuple[int, float, float, str]:
    """(exit code, peak RSS in MB, seconds, last stderr line) of `litelora train` on `folder`."""
    started = time.perf_counter()
    child = subprocess.Popen(
        ["litelora", "train", "--data", str(folder), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
    )
    stderr = child.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    lines = [line for line in stderr.splitlines() if line.strip()]
    return os.waitstatus_to_exitcode(status), usage.ru_maxrss / 1024, seconds, lines[-1] if lines else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "reports" / "hostile-drops.md")
    parser.add_argument("--json", action="store_true", help="Print the rows as JSON on stdout.")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, build in DROPS.items():
            folder = Path(tmp) / f"drop-{len(rows)}"
            folder.mkdir()
            # Built in a process of its own: a child forked from a parent that held gigabytes reports them as
            # its own peak (Linux keeps the high-water mark across exec).
            builder = multiprocessing.get_context("spawn").Process(target=build, args=(folder,))
            builder.start()
            builder.join()
            size = sum(f.stat().st_size for f in folder.iterdir())
            code, peak_mb, seconds, verdict = run_train(folder, Path(tmp) / f"set-{len(rows)}")
            rows.append(
                {
                    "drop": name,
                    "bytes": size,
                    "exit": code,
                    "peak_rss_mb": round(peak_mb),
                    "seconds": round(seconds, 1),
                    "verdict": verdict,
                }
            )
            print(f"{name}: exit {code}, {peak_mb:.0f} MB, {seconds:.1f} s: {verdict}", file=sys.stderr)
    table = "\n".join(
        ["| drop | bytes on disk | peak RSS (MB) | seconds | exit | verdict |", "|---|---|---|---|---|---|"]
        + [
            f"| {r['drop']} | {r['bytes']:,} | {r['peak_rss_mb']:,} | {r['seconds']} | {r['exit']} | {r['verdict']} |"
            for r in rows
        ]
    )
    report = (
        "# Refusing hostile drops\n\n"
        f"`python benchmarks/hostile_drops.py` at commit {commit_stamp()}, {os.cpu_count()} cores. Each drop is given to\n"
        "`litelora train --data DIR --out SET` in a process of its own; peak RSS includes the interpreter and its\n"
        "imports (torch, transformers, pyarrow).\n\n" + table + "\n"
    )
    args.out.write_text(report)
    print(json.dumps(rows, indent=2) if args.json else table)


if __name__ == "__main__":
    main()
