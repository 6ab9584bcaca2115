"""Scale benchmark: does a run's cost stay per-sample flat as the dataset grows?

For each size (default 200k, 1M and 5M samples; ``--sizes`` to choose) it curates tiny
image-text shards with the default recipe plus one global near-duplicate step (``annotate:
phash`` after ``image_info``, ``dedup: phash`` with ``max_distance: 4`` at the end) on a local
cluster of ``--workers`` processes, and reports per size: wall time, samples/s,
CPU-milliseconds per sample (driver and workers, beside the share of the machine other
processes used: wall-clock rates mean little on a shared machine), seconds per stage, the
driver's peak RSS, the largest worker peak RSS, the files the run wrote and what it kept. Then the
ratios issue 11 sets goals for: driver peak growth from 1M to 5M (<= 1.2x; with other sizes,
between the two largest), and samples/s at the largest size against the smallest (>= 0.8x).

Data: shards of 10,000 samples ``KEY.jpg`` + ``KEY.txt``; each image is a 64x64 grayscale JPEG
of 8x8 random blocks (about 440 bytes: one tar block; 64 px a side so the default recipe's
size filter keeps it) and each caption names its key, so every sample has unique bytes and
its own pHash. A sample costs 2 KiB of tar (5M samples: about 10 GB in, as much again out).
Shards are written straight with ``mmcurate.io.tarwrite`` by ``--gen-procs`` processes and
cached in ``--workdir/shards`` (shard ``i`` is drawn from seed ``i``: every size shares them;
a shard file exists only once complete). Each size runs in a fresh Python process, so its
peaks are its own; the run folder is deleted after it is measured (``--keep-runs`` keeps it).

Peaks are ``VmHWM`` from ``/proc/self/status``: the driver's (it hosts the local cluster's
scheduler, as the CLI's does) and each worker's through ``client.run``.

    python scripts/bench_scale.py --sizes 20000 100000       # quick
    python scripts/bench_scale.py                            # 200k, 1M, 5M: hours, ~25 GB disk

Figures go to ``WORKDIR/bench_scale.json`` (default ``bench-out/scale/``, ignored by git).
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

# Benchmark the checkout this script lives in (Dask's workers inherit sys.path).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mmcurate  # noqa: E402
from bench_cpu import CpuWatch  # noqa: E402  (this folder is on sys.path when run as a script)
from mmcurate.engine.cluster import connect  # noqa: E402
from mmcurate.io.tarwrite import write_tar  # noqa: E402

PER_SHARD = 10_000
SAMPLE_TAR_BYTES = 4 * 512  # header + one data block, for each of .jpg and .txt
GOAL_DRIVER_MIB = 1024
GOAL_DRIVER_GROWTH = 1.2
GOAL_RATE_RATIO = 0.8


# --------------------------------------------------------------------------- data


def _jpeg(rng: np.random.Generator) -> bytes:
    blocks = rng.integers(0, 256, size=(8, 8), dtype=np.uint8).repeat(8, axis=0).repeat(8, axis=1)
    buf = io.BytesIO()
    Image.fromarray(blocks, "L").save(buf, format="JPEG", quality=50)
    return buf.getvalue()


def _members(index: int) -> Iterator[tuple[str, bytes]]:
    rng = np.random.default_rng(index)
    for i in range(PER_SHARD):
        key = f"{index:06d}{i:05d}"
        yield f"{key}.jpg", _jpeg(rng)
        yield f"{key}.txt", f"a tiny picture, sample {key}".encode()


def _make_shard(path: str) -> str:
    write_tar(path, _members(int(Path(path).stem)))  # atomic: the file exists only once whole
    return path


def shard_paths(folder: Path, n_shards: int, procs: int) -> list[Path]:
    """The first ``n_shards`` shards, generating those not cached yet."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:06d}.tar" for i in range(n_shards)]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        t0 = time.perf_counter()
        print(f"generating {len(missing)} shard(s) of {PER_SHARD:,} samples in {folder} with {procs} process(es) ...", flush=True)
        with multiprocessing.get_context("fork").Pool(procs) as pool:
            for done, _ in enumerate(pool.imap_unordered(_make_shard, missing), start=1):
                if done % 10 == 0 or done == len(missing):
                    print(f"  {done}/{len(missing)} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return paths


# --------------------------------------------------------------------------- one size


def scale_recipe() -> mmcurate.Recipe:
    """The default recipe plus pHash near-duplicate removal (distance 4) over the whole dataset."""
    recipe = mmcurate.Recipe.load("default").with_step({"annotate": "phash"}, after="image_info")
    return recipe.with_step({"dedup": "phash", "max_distance": 4})


def _vmhwm_mib() -> float:
    """This process's peak RSS (``VmHWM``), MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def run_one(n: int, workdir: Path, workers: int, keep_run: bool) -> dict[str, Any]:
    """Curate the first ``n`` samples in this process; its figures."""
    n_shards = n // PER_SHARD
    inputs = f"{workdir / 'shards'}/{{000000..{n_shards - 1:06d}}}.tar"
    out = workdir / "runs" / f"n{n}"
    shutil.rmtree(out, ignore_errors=True)  # our own run folder from an earlier benchmark
    with connect(workers=workers, quiet=True) as client:
        with CpuWatch(client) as cpu:
            result = mmcurate.curate(inputs, scale_recipe(), out, client=client, quiet=True)
        wall = cpu.wall
        worker_peaks = sorted(client.run(_vmhwm_mib).values())
    own_cpu = cpu.driver + sum(cpu.workers.values())
    files = [Path(d, f) for d, _, names in os.walk(out) for f in names]
    figures = {
        "samples": n,
        "shards": n_shards,
        "samples_in": result.samples_in,
        "kept": result.kept,
        "wall_s": round(wall, 2),
        "samples_per_s": round(result.samples_in / wall, 1),
        "cpu_ms_per_sample": round(1e3 * own_cpu / max(1, result.samples_in), 3),
        "cpu": cpu.as_dict(),
        "stage_seconds": json.loads((out / "run.json").read_text())["seconds"],
        "driver_peak_mib": round(_vmhwm_mib(), 1),
        "worker_peaks_mib": [round(p, 1) for p in worker_peaks],
        "files_written": len(files),
        "bytes_written": sum(f.stat().st_size for f in files),
        "complete": result.complete,
    }
    if not keep_run:
        shutil.rmtree(out)
    return figures


# --------------------------------------------------------------------------- report


def _share(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def report(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'samples':>10} {'shards':>6} {'wall s':>9} {'samples/s':>10} {'CPU ms/smp':>10} {'others':>7} "
        f"{'driver MiB':>11} {'worker MiB':>11} {'files':>7} {'kept':>10}",
    ]
    for r in rows:
        lines.append(
            f"{r['samples']:>10,} {r['shards']:>6} {r['wall_s']:>9.1f} {r['samples_per_s']:>10,.0f} {r['cpu_ms_per_sample']:>10.3f} "
            f"{_share(r['cpu']['foreign_share']):>7} {r['driver_peak_mib']:>11.0f} "
            f"{max(r['worker_peaks_mib']):>11.0f} {r['files_written']:>7,} {r['kept']:>10,}"
        )
    by_size = {r["samples"]: r for r in rows}
    if len(rows) >= 2:
        small, large = rows[0], rows[-1]
        a, b = (by_size[1_000_000], by_size[5_000_000]) if {1_000_000, 5_000_000} <= by_size.keys() else (rows[-2], rows[-1])
        lines += [
            "",
            f"driver peak growth {a['samples']:,} -> {b['samples']:,}: {_ratio(b['driver_peak_mib'], a['driver_peak_mib'])} "
            f"(goal <= {GOAL_DRIVER_GROWTH}x; 1M -> 5M)",
            f"driver peak at {large['samples']:,}: {large['driver_peak_mib']:.0f} MiB (goal <= {GOAL_DRIVER_MIB} MiB at every size)",
            f"worker peak {small['samples']:,} -> {large['samples']:,}: "
            f"{_ratio(max(large['worker_peaks_mib']), max(small['worker_peaks_mib']))} (goal: flat)",
            f"samples/s at {large['samples']:,} vs {small['samples']:,}: "
            f"{_ratio(large['samples_per_s'], small['samples_per_s'])} (goal >= {GOAL_RATE_RATIO}x)",
            f"CPU per sample at {small['samples']:,} / at {large['samples']:,}: "
            f"{_ratio(small['cpu_ms_per_sample'], large['cpu_ms_per_sample'])} (the same ratio from CPU time: robust to other jobs)",
        ]
        if any((r["cpu"]["foreign_share"] or 0) > 0.05 for r in rows):
            lines.append("WARNING: other processes used over 5% of the machine during a run ('others'): wall-clock rates are skewed")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000, 1_000_000, 5_000_000], help="samples per run (multiples of 10,000)")
    parser.add_argument("--workdir", type=Path, default=Path("bench-out/scale"), help="shard cache, runs and bench_scale.json")
    parser.add_argument("--workers", type=int, default=2, help="local cluster worker processes (default 2)")
    parser.add_argument("--gen-procs", type=int, default=os.cpu_count() or 1, help="processes generating shards")
    parser.add_argument("--keep-runs", action="store_true", help="keep each run folder (WORKDIR/runs/nSIZE)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one size in this process
    args = parser.parse_args()
    workdir = args.workdir.resolve()

    if args.one is not None:
        warnings.filterwarnings("ignore", message="Port 8787 is already in use")  # the dashboard moves: fine
        print(json.dumps(run_one(args.one, workdir, args.workers, args.keep_runs)))
        return

    sizes = sorted(set(args.sizes))
    if bad := [n for n in sizes if n <= 0 or n % PER_SHARD]:
        parser.error(f"sizes must be positive multiples of {PER_SHARD:,}: {bad}")
    need = max(sizes) * SAMPLE_TAR_BYTES * 2  # inputs, and one run's output shards
    workdir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(workdir).free
    if free < need:
        print(f"warning: {workdir} has {free / 1e9:.1f} GB free; {max(sizes):,} samples need about {need / 1e9:.1f} GB", flush=True)
    shard_paths(workdir / "shards", max(sizes) // PER_SHARD, args.gen_procs)

    rows = []
    for n in sizes:
        print(f"curating {n:,} samples on {args.workers} workers ...", flush=True)
        command = [sys.executable, __file__, "--one", str(n), "--workdir", str(workdir), "--workers", str(args.workers)]
        done = subprocess.run(command + (["--keep-runs"] if args.keep_runs else []), check=True, stdout=subprocess.PIPE, text=True)
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"  {r['wall_s']:.1f} s, {r['samples_per_s']:,.0f} samples/s, driver {r['driver_peak_mib']:.0f} MiB, "
              f"workers {r['worker_peaks_mib']} MiB, {r['files_written']:,} files", flush=True)  # fmt: skip
        if r["samples_in"] != n or not r["complete"]:
            print(f"  warning: {r['samples_in']:,} samples in, complete={r['complete']}", flush=True)

    print()
    print(report(rows))
    (workdir / "bench_scale.json").write_text(json.dumps({"workers": args.workers, "rows": rows}, indent=1) + "\n")
    print(f"\nfigures: {workdir / 'bench_scale.json'}")


if __name__ == "__main__":
    main()
