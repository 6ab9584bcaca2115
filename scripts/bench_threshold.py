"""How cheap is trying another threshold? A cold run vs. threshold changes, sharing a cache.

For each recipe (default, near-dup) on ``--samples`` synthetic image-text samples (photo-like
JPEGs of random size, 48-320 x 48-240 px, so a width threshold matters; generated once into
``--data``, reused while the parameters match), one LocalCluster (``--workers``) serves every
call, and each call is timed by wall clock:

1. cold: ``curate(..., out=A, cache=C)``: every annotation computed, shards written;
2. new --out: ``curate(..., out=B, cache=C, overrides=[stricter threshold])``: rows from the cache;
3. dry run: the same in ``out=D`` with ``write=False`` (decisions, funnel and report, no shards);
4. same --out: ``curate(..., out=A, overwrite=True, overrides=[stricter threshold])``.

Each change is printed as a fraction of the cold run (the goal: <= 0.05) with the run's own
per-stage seconds, and everything goes to ``OUT/bench_threshold.json``.

    python scripts/bench_threshold.py                      # 20k samples, 2 workers
    python scripts/bench_threshold.py --samples 2000       # quick
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout, also for the workers
sys.path.insert(0, str(Path(__file__).resolve().parent))
from synthetic import jpeg_bytes, photo_like, random_caption, write_tar  # noqa: E402

PER_SHARD = 1000
STRICTER = "image_size.expr=width >= 128 and height >= 64 and aspect_ratio <= 4"


def _make_shard(job: tuple[str, int, int]) -> None:
    folder, index, count = job
    rng = np.random.default_rng([7, index])
    samples = []
    for i in range(count):
        key = f"{index * PER_SHARD + i:09d}"
        caption = random_caption(rng, 3, 10)
        image = photo_like(rng, int(rng.integers(48, 320)), int(rng.integers(48, 240)))
        samples.append((key, {"jpg": jpeg_bytes(image), "txt": caption.encode()}))
    write_tar(Path(folder) / f"thr-{index:06d}-n{count}.tar", samples)


def ensure_shards(folder: Path, n: int, procs: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(str(folder), i, min(PER_SHARD, n - i * PER_SHARD)) for i in range(-(-n // PER_SHARD))]
    missing = [j for j in jobs if not (folder / f"thr-{j[1]:06d}-n{j[2]}.tar").exists()]
    if missing:
        with multiprocessing.Pool(procs) as pool:
            pool.map(_make_shard, missing)
    return [str(folder / f"thr-{i:06d}-n{c}.tar") for _, i, c in jobs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--recipes", nargs="+", default=["default", "near-dup"])
    parser.add_argument("--data", type=Path, default=Path("/tmp/mmcurate-bench-threshold"))
    args = parser.parse_args()

    import mmcurate
    from dask.distributed import Client, LocalCluster

    shards = ensure_shards(args.data / "shards", args.samples, args.workers)
    results: dict[str, dict] = {}
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, Client(cluster) as client:
        for recipe in args.recipes:
            work = args.data / "runs" / recipe
            shutil.rmtree(work, ignore_errors=True)
            cache = work / "cache"

            def timed(out: str, **kw) -> dict:
                started = time.perf_counter()
                r = mmcurate.curate(shards, recipe, work / out, client=client, quiet=True, cache=cache, **kw)
                return {"seconds": round(time.perf_counter() - started, 2), "kept": r.kept, "computed": r.computed, "stages": r.seconds}

            runs = {
                "cold": timed("a"),
                "new_out": timed("b", overrides=[STRICTER]),
                "dry_run": timed("d", overrides=[STRICTER], write=False),
                "same_out": timed("a", overrides=[STRICTER], overwrite=True),
            }
            cold = runs["cold"]["seconds"]
            for name, r in runs.items():
                r["fraction"] = round(r["seconds"] / cold, 3)
                print(f"{recipe:<9} {name:<9} {r['seconds']:>7.2f} s  fraction {r['fraction']:.3f}  kept {r['kept']}  computed {r['computed']}")
                print(f"{'':<19} stages: " + ", ".join(f"{k} {v:.2f}" for k, v in r["stages"].items()))
            results[recipe] = runs
    target = args.data / "bench_threshold.json"
    target.write_text(json.dumps({"samples": args.samples, "workers": args.workers, "results": results}, indent=2))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
