"""How cheap is trying another threshold? A cold run vs. threshold changes, sharing a cache.

For each recipe (default, near-dup) on ``--samples`` synthetic image-text samples (photo-like
JPEGs of random size up to ``--size`` WxH: 15-100 % of W by 20-100 % of H, by default 48-320 x
48-240 px, so a width threshold matters; ``--size 640x480`` for photo-sized images, which make
the cold run longer; generated once into ``--data``, reused while the parameters match), one
LocalCluster (``--workers``) serves every call, and each call is timed by wall clock:

1. cold: ``curate(..., out=A, cache=C)``: every annotation computed, shards written;
2. new --out: ``curate(..., out=B, cache=C, overrides=[stricter threshold])``: rows from the cache;
3. dry run: the same in ``out=D`` with ``write=False`` (decisions, funnel and report, no shards);
4. same --out: ``curate(..., out=A, overwrite=True, overrides=[stricter threshold])``;
5. rerun: that same call again (nothing changed: every output shard is kept, none rewritten).

Each change is printed as a fraction of the cold run (the goal: <= 0.05) with the run's own
per-stage seconds, and everything goes to ``OUT/bench_threshold.json``.

    python scripts/bench_threshold.py                      # 20k samples, 2 workers
    python scripts/bench_threshold.py --samples 2000       # quick
    python scripts/bench_threshold.py --size 640x480 --recipes default
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


def stricter(width: int, height: int) -> str:
    """The threshold change: at least 40 % of the widest width and 4/15 of the tallest height
    (128 x 64 for 320x240)."""
    return f"image_size.expr=width >= {width * 2 // 5} and height >= {height * 4 // 15} and aspect_ratio <= 4"


def _make_shard(job: tuple[str, int, int, int, int]) -> None:
    folder, index, count, width, height = job
    rng = np.random.default_rng([7, index])
    samples = []
    for i in range(count):
        key = f"{index * PER_SHARD + i:09d}"
        caption = random_caption(rng, 3, 10)
        image = photo_like(rng, int(rng.integers(width * 3 // 20, width)), int(rng.integers(height // 5, height)))
        samples.append((key, {"jpg": jpeg_bytes(image), "txt": caption.encode()}))
    write_tar(Path(folder) / f"thr-{index:06d}-n{count}.tar", samples)


def ensure_shards(folder: Path, n: int, procs: int, width: int, height: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(str(folder), i, min(PER_SHARD, n - i * PER_SHARD), width, height) for i in range(-(-n // PER_SHARD))]
    missing = [j for j in jobs if not (folder / f"thr-{j[1]:06d}-n{j[2]}.tar").exists()]
    if missing:
        with multiprocessing.Pool(procs) as pool:
            pool.map(_make_shard, missing)
    return [str(folder / f"thr-{i:06d}-n{c}.tar") for _, i, c, *_ in jobs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--recipes", nargs="+", default=["default", "near-dup"])
    parser.add_argument("--size", default="320x240", help="largest image, WxH (default 320x240)")
    parser.add_argument("--data", type=Path, default=Path("/tmp/mmcurate-bench-threshold"))
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    import mmcurate
    from dask.distributed import Client, LocalCluster

    shards = ensure_shards(args.data / f"shards-{args.size}", args.samples, args.workers, width, height)
    results: dict[str, dict] = {}
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, Client(cluster) as client:
        for recipe in args.recipes:
            work = args.data / "runs" / f"{recipe}-{args.size}"
            shutil.rmtree(work, ignore_errors=True)
            cache = work / "cache"

            def timed(out: str, **kw) -> dict:
                started = time.perf_counter()
                r = mmcurate.curate(shards, recipe, work / out, client=client, quiet=True, cache=cache, **kw)
                return {"seconds": round(time.perf_counter() - started, 2), "kept": r.kept, "computed": r.computed, "stages": r.seconds}

            runs = {
                "cold": timed("a"),
                "new_out": timed("b", overrides=[stricter(width, height)]),
                "dry_run": timed("d", overrides=[stricter(width, height)], write=False),
                "same_out": timed("a", overrides=[stricter(width, height)], overwrite=True),
                "rerun": timed("a", overrides=[stricter(width, height)], overwrite=True),
            }
            cold = runs["cold"]["seconds"]
            for name, r in runs.items():
                r["fraction"] = round(r["seconds"] / cold, 3)
                print(f"{recipe:<9} {name:<9} {r['seconds']:>7.2f} s  fraction {r['fraction']:.3f}  kept {r['kept']}  computed {r['computed']}")
                print(f"{'':<19} stages: " + ", ".join(f"{k} {v:.2f}" for k, v in r["stages"].items()))
            results[recipe] = runs
    target = args.data / f"bench_threshold-{args.size}.json"
    target.write_text(json.dumps({"samples": args.samples, "size": args.size, "workers": args.workers, "results": results}, indent=2))
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
