"""Density-based pruning time: ``prune: density`` over synthetic embeddings, in one process.

Draws ``--n`` ``--dim``-d embeddings from a Gaussian mixture (``--modes`` centres, each with its
own spread: dense and sparse modes), then times each stage of the pure computation the engine
distributes (:mod:`mmcurate.steps.prune`): normalising, the k-means fit (faiss, on at most
``fit_sample`` rows), assigning every row to its centroid, the quotas, and the per-cluster cuts.
The default is the issue's 1M 512-d; it needs about 6 GB of memory.

Run from the repository root::

    python scripts/bench_prune.py                  # 1M x 512, clusters by the rule of thumb (500)
    python scripts/bench_prune.py --n 200000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mmcurate.steps.dedup.compute import unit_rows  # noqa: E402
from mmcurate.steps.prune import (  # noqa: E402
    DensityConfig, assign, cluster_cuts, cluster_sums, density_clusters, fit, keep_count, keep_farthest, plan_quotas,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--modes", type=int, default=1000)
    parser.add_argument("--clusters", type=int, default=0)
    parser.add_argument("--keep-fraction", type=float, default=0.5)
    args = parser.parse_args()
    config = DensityConfig(column="emb", keep_fraction=args.keep_fraction, clusters=args.clusters)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(args.modes, args.dim)).astype(np.float32)
    spread = rng.uniform(0.05, 1.0, args.modes).astype(np.float32)
    mode = rng.integers(0, args.modes, args.n)
    values = centres[mode] + spread[mode, None] * rng.normal(size=(args.n, args.dim)).astype(np.float32)
    times: dict[str, float] = {}

    def timed(name: str, f, *a):
        start = time.perf_counter()
        out = f(*a)
        times[name] = time.perf_counter() - start
        return out

    n = args.n
    emb = timed("normalise", unit_rows, values)
    del values
    k = density_clusters(n, config.clusters)
    every = max(1, -(-n // config.fit_sample))
    centroids = timed(f"k-means fit (k={k})", fit, emb[::every], k, config.seed)
    labels, dist = timed("assign", assign, emb, centroids)

    def quotas_():
        sizes, sums = cluster_sums(labels, dist, len(centroids))
        return plan_quotas(sizes, sums, centroids, keep_count(n, config.keep_fraction))[0]

    x = timed("quotas", quotas_)

    def cuts():
        rows = np.arange(n)
        cut = cluster_cuts(labels, dist, rows, x)
        return keep_farthest(dist, rows, cut[labels, 0], cut[labels, 1])

    keep = timed("per-cluster cuts", cuts)
    total = sum(times.values())
    for name, took in times.items():
        print(f"{name:<22} {took:7.2f} s")
    print(f"{'total':<22} {total:7.2f} s for {n:,} x {args.dim} embeddings ({n / total:,.0f} rows/s); kept {int(keep.sum()):,}")


if __name__ == "__main__":
    main()
