"""Benchmark: how the cost of report.html grows with the size of a run.

For each size it writes shards of small image-text samples (96x72 JPEG, 1,000 per shard),
curates them with the default recipe on a local cluster, then times ``write_report`` on the
run (median of ``--repeats``) and prints it beside the curate time of the same run. The
report reads annotation columns and decisions with Arrow and only a bounded number of samples
from a bounded number of shards, so its time should grow far slower than the run's.

    python scripts/bench_report.py                      # 2,000 and 20,000 samples
    python scripts/bench_report.py --sizes 2000 100000  # bigger (slow to generate)

Outputs go to ``bench-out/report/`` (ignored by git).
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
from PIL import Image

import mmcurate
from mmcurate.views.report import write_report
from mmcurate.io.tarwrite import write_tar

PER_SHARD = 1000


def _jpeg(rng: np.random.Generator) -> bytes:
    grid = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(grid).resize((96, 72), Image.BICUBIC).save(buf, format="JPEG", quality=80)
    return buf.getvalue()


def make_shards(folder: Path, samples: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard in range(-(-samples // PER_SHARD)):
        path = folder / f"{shard:06d}.tar"
        paths.append(str(path))
        if path.exists():
            continue
        rng = np.random.default_rng([7, shard])
        members = []
        for i in range(min(PER_SHARD, samples - shard * PER_SHARD)):
            key = f"{shard:06d}{i:05d}"
            members += [(f"{key}.jpg", _jpeg(rng)), (f"{key}.txt", f"sample {i} " .encode() * int(rng.integers(0, 4)))]
        write_tar(path, members)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000], help="samples per run (default: 2000 20000)")
    parser.add_argument("--workers", type=int, default=2, help="local cluster workers (default: 2)")
    parser.add_argument("--repeats", type=int, default=3, help="report timings per run; the median is shown (default: 3)")
    parser.add_argument("--out", type=Path, default=Path("bench-out/report"), help="where shards and runs go")
    args = parser.parse_args()
    rows = []
    for size in args.sizes:
        shards = make_shards(args.out / f"shards-{size}", size)
        run = args.out / f"run-{size}"
        shutil.rmtree(run, ignore_errors=True)
        start = time.perf_counter()
        result = mmcurate.curate(shards, "default", run, workers=args.workers, quiet=True)
        curate_s = time.perf_counter() - start
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            path = write_report(run)
            times.append(time.perf_counter() - start)
        rows.append((size, result.kept, curate_s, statistics.median(times), path.stat().st_size))
    print(f"{'samples':>8} {'kept':>8} {'curate s':>9} {'report s':>9} {'report/curate':>14} {'report KiB':>11}")
    for size, kept, curate_s, report_s, nbytes in rows:
        print(f"{size:>8} {kept:>8} {curate_s:>9.2f} {report_s:>9.2f} {report_s / curate_s:>14.3f} {nbytes // 1024:>11}")
    if len(rows) > 1:
        (n0, *_, r0, _), (n1, *_, r1, _) = rows[0], rows[-1]
        print(f"{n1 / n0:.0f}x the samples -> {r1 / r0:.2f}x the report time")


if __name__ == "__main__":
    main()
