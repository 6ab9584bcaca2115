"""Benchmark: exact near-duplicate search over 64-bit hashes at scale (mmcurate.steps.dedup.neardup).

For each (N, D) configuration, in a fresh subprocess (so peak memory is that run's own):

1. ``np.random.default_rng(0)`` draws N uniformly random uint64 hashes; then 1% of the rows
   are overwritten with planted near-duplicates of other rows, each at a random distance
   1..D (D' distinct random bits flipped). Sources are distinct rows that are not targets, so
   every planted pair keeps exactly its distance.
2. ``near_duplicate_pairs(hashes, D)`` then ``cluster_labels(N, pairs)``, each timed by wall
   clock.
3. Recall of the planted pairs: the share found among the returned pairs (must be 1.0), and
   the share whose two rows share a cluster label. Every returned pair is re-checked to be
   within distance D.
4. Peak memory of the child: ``VmHWM`` from ``/proc/self/status`` (and ``ru_maxrss``), which
   includes the input hashes and the planting.

Prints a table (and writes JSON with ``--json``), and the goal check: 10M hashes at D=4 in
<= 60 s wall (search + clustering) and <= 2 GB peak memory. A configuration that exceeds
``--timeout`` is reported as timed out, with an estimate scaled from the largest smaller N
at the same D by the cost model (labelled "est.").

With ``--cluster``, exact dedup and pHash near-dup run instead through the cluster as a
dedup step does (``mmcurate.engine.global_steps.dedup_rows``: a Dask LocalCluster of
``--workers`` single-threaded worker processes, bag shuffles, per-shard outcomes): synthetic
shards of ``--shard-size`` rows are generated on the workers (exact: ``v<random int below N>``
strings, about a third repeats; phash: random hashes, 1% planted near-duplicates of the
previous shard's rows). Prints wall time, CPU time (workers and driver: the machine may be
shared), rows removed, the driver's peak RSS and each
worker's peak RSS (``ru_maxrss``). ``--methods`` picks exact and/or phash; ``--rows-per-partition``
sets the partition size (rows that fit one partition are deduplicated in one task; more go
through the partitioned search and, for phash, the distributed union-find).

Run from the repository root::

    python scripts/bench_dedup_scale.py                     # N in {1M, 10M}, D in {4, 6, 8}
    python scripts/bench_dedup_scale.py --n 1e6 --d 4 6     # a subset
    python scripts/bench_dedup_scale.py --cluster --n 1e6 5e6 --d 4
    python scripts/bench_dedup_scale.py --cluster --methods phash --n 2e6 --d 4 --shard-size 100000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
GOAL_N, GOAL_D, GOAL_SECONDS, GOAL_BYTES = 10_000_000, 4, 60.0, 2_000_000_000


def make_hashes(n: int, d: int, share: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random hashes with ``share`` of the rows replaced by near-duplicates of other rows at
    distances 1..d. Returns (hashes, planted source rows, planted target rows)."""
    rng = np.random.default_rng(seed)
    h = rng.integers(0, 2**64, n, dtype=np.uint64)
    m = int(n * share)
    if m == 0 or d == 0:
        return h, np.empty(0, np.int64), np.empty(0, np.int64)
    rows = rng.choice(n, size=2 * m, replace=False)
    src, dst = rows[:m], rows[m:]
    dist = rng.integers(1, d + 1, size=m)
    flips = np.zeros(m, dtype=np.uint64)
    bits = np.argsort(rng.random((m, 64)), axis=1)[:, :d].astype(np.uint64)  # d distinct bits per row
    for j in range(d):
        flips |= np.where(dist > j, np.uint64(1) << bits[:, j], np.uint64(0))
    h[dst] = h[src] ^ flips
    return h, src.astype(np.int64), dst.astype(np.int64)


def peak_memory() -> dict[str, int]:
    out = {"ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                out["vmhwm_bytes"] = int(line.split()[1]) * 1024
    except OSError:
        pass
    return out


def child(args: argparse.Namespace) -> None:
    """One configuration, in this (fresh) process; prints one JSON line."""
    import scipy.sparse.csgraph  # noqa: F401  (imported up front: not part of the timings)

    from mmcurate.steps.dedup.neardup import cluster_labels, near_duplicate_pairs

    n, d = args.child
    t0 = time.perf_counter()
    h, src, dst = make_hashes(n, d, args.share, args.seed)
    gen_s = time.perf_counter() - t0
    before = peak_memory()
    stats: dict[str, Any] = {}
    t0 = time.perf_counter()
    pairs = near_duplicate_pairs(h, d, k=args.k, threads=args.threads, stats=stats)
    search_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    labels = cluster_labels(n, pairs)
    cluster_s = time.perf_counter() - t0
    mem = peak_memory()
    # checks (not timed)
    within = bool((np.bitwise_count(h[pairs[:, 0]] ^ h[pairs[:, 1]]) <= d).all()) if len(pairs) else True
    lo, hi = np.minimum(src, dst), np.maximum(src, dst)
    found_keys = (pairs[:, 0].astype(np.uint64) << np.uint64(32)) | pairs[:, 1].astype(np.uint64)
    planted_keys = (lo.astype(np.uint64) << np.uint64(32)) | hi.astype(np.uint64)
    pair_recall = float(np.isin(planted_keys, found_keys).mean()) if len(src) else 1.0
    cluster_recall = float((labels[src] == labels[dst]).mean()) if len(src) else 1.0
    result = {
        "n": n, "d": d, "k": stats.get("k"), "tables": stats.get("tables"), "distinct": stats.get("distinct"),
        "candidates": stats.get("candidates"), "threads": args.threads or os.cpu_count(),
        "search_s": search_s, "cluster_s": cluster_s, "wall_s": search_s + cluster_s, "generate_s": gen_s,
        "pairs": int(len(pairs)), "planted": int(len(src)), "pair_recall": pair_recall,
        "cluster_recall": cluster_recall, "clusters": int(len(np.unique(labels))), "pairs_within_d": within,
        "peak_bytes": mem.get("vmhwm_bytes", mem["ru_maxrss_bytes"]), "ru_maxrss_bytes": mem["ru_maxrss_bytes"],
        "rss_before_search_bytes": before.get("vmhwm_bytes", before["ru_maxrss_bytes"]),
    }
    print("RESULT " + json.dumps(result), flush=True)


def run_one(n: int, d: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(n), str(d),
           "--share", str(args.share), "--seed", str(args.seed)]
    if args.k is not None:
        cmd += ["--k", str(args.k)]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
        return {"n": n, "d": d, "timed_out": True, "limit_s": args.timeout}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
            result["process_s"] = time.perf_counter() - t0
            return result
    raise RuntimeError(f"child failed for n={n} d={d} (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


def estimate(result: dict[str, Any], done: list[dict[str, Any]]) -> None:
    """Fill a timed-out result's estimate from the largest finished smaller N at the same D."""
    from mmcurate.steps.dedup.neardup import _plan_cost, choose_k

    smaller = [r for r in done if r["d"] == result["d"] and not r.get("timed_out") and r["n"] < result["n"]]
    if not smaller:
        return
    base = max(smaller, key=lambda r: r["n"])
    k = choose_k(result["n"], result["d"])
    ratio = _plan_cost(result["n"], result["d"], k, 64) / _plan_cost(base["n"], result["d"], base["k"], 64)
    result.update(k=k, est_wall_s=base["search_s"] * ratio + base["cluster_s"] * result["n"] / base["n"],
                  est_from_n=base["n"])


def fmt_n(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n:,}"


def print_table(results: list[dict[str, Any]]) -> None:
    head = f"{'N':>10} {'D':>2} {'k':>2} {'tables':>6} {'search s':>9} {'cluster s':>9} {'wall s':>8} " \
           f"{'peak MB':>8} {'pairs':>9} {'planted':>8} {'recall':>7} {'clust.rec':>9}"
    print(head)
    print("-" * len(head))
    for r in results:
        if r.get("timed_out"):
            est = ""
            if "est_wall_s" in r:
                est = f"est. {r['est_wall_s']:.0f} s (k={r['k']}, scaled from {fmt_n(r['est_from_n'])})"
            print(f"{fmt_n(r['n']):>10} {r['d']:>2}  timed out after {r['limit_s']:.0f} s  {est}")
            continue
        print(f"{fmt_n(r['n']):>10} {r['d']:>2} {r['k']:>2} {r['tables']:>6} {r['search_s']:>9.2f} "
              f"{r['cluster_s']:>9.2f} {r['wall_s']:>8.2f} {r['peak_bytes'] / 1e6:>8.0f} "
              f"{r['pairs']:>9,} {r['planted']:>8,} "
              f"{r['pair_recall']:>7.4f} {r['cluster_recall']:>9.4f}")


def goal_check(results: list[dict[str, Any]]) -> bool | None:
    goal = [r for r in results if r["n"] == GOAL_N and r["d"] == GOAL_D]
    if not goal:
        print(f"\ngoal check: not run (needs N={fmt_n(GOAL_N)}, D={GOAL_D})")
        return None
    r = goal[0]
    if r.get("timed_out"):
        print(f"\ngoal check {fmt_n(GOAL_N)} @ D={GOAL_D}: FAIL (timed out)")
        return False
    ok_t, ok_m, ok_r = r["wall_s"] <= GOAL_SECONDS, r["peak_bytes"] <= GOAL_BYTES, r["pair_recall"] == 1.0
    ok = ok_t and ok_m and ok_r and r["pairs_within_d"]
    print(f"\ngoal check {fmt_n(GOAL_N)} @ D={GOAL_D}: wall {r['wall_s']:.2f} s <= {GOAL_SECONDS:.0f} s: {ok_t}; "
          f"peak {r['peak_bytes'] / 1e9:.2f} GB <= {GOAL_BYTES / 1e9:.0f} GB: {ok_m}; recall 1.0: {ok_r} "
          f"-> {'PASS' if ok else 'FAIL'}")
    return ok


def synthetic_rows(index: int, size: int, n: int, method: str, d: int, seed: int) -> Any:
    """Shard ``index`` of the synthetic dataset, made on a worker (see the module docstring)."""
    import pyarrow as pa

    from mmcurate.engine.gather import ShardRows
    from mmcurate.io.inputs import ShardRef

    def hashes(s: int) -> np.ndarray:
        return np.random.default_rng([seed, s]).integers(0, 2**64, size, dtype=np.uint64)

    rows = np.arange(index * size, (index + 1) * size, dtype=np.int64)
    keys = pa.array([f"{index:06d}/{i}" for i in range(size)])
    ref = ShardRef(f"shard-{index:06d}", "")
    if method == "exact":
        values = [f"v{x}" for x in np.random.default_rng([seed, index]).integers(0, n, size)]
        return ShardRows(index, ref, rows, np.arange(size), keys, {"sha": pa.array(values)})
    h = hashes(index)
    if index:  # 1% of the rows: a copy of a row of the previous shard, 1..d bits flipped
        rng = np.random.default_rng([seed, index, 1])
        at = np.arange(0, size, 100)
        flips = np.zeros(len(at), dtype=np.uint64)
        for j in range(d):
            bit = rng.integers(0, 64, len(at)).astype(np.uint64)
            flips ^= np.where(rng.random(len(at)) < 0.7, np.uint64(1) << bit, np.uint64(0))
        h[at] = hashes(index - 1)[(at + 50) % size] ^ flips  # rows of the previous shard not overwritten there
    return ShardRows(index, ref, rows, np.arange(size), keys, {"phash": pa.array(h)})


def cpu_seconds() -> float:
    """CPU time of this process so far (user + system)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_cluster(n: int, method: str, args: argparse.Namespace) -> dict[str, Any]:
    """One dedup of ``n`` synthetic rows through a fresh LocalCluster."""
    import tempfile

    import dask.bag as db
    from dask.distributed import Client, LocalCluster

    from mmcurate.engine.global_steps import dedup_rows
    from mmcurate.recipe import DedupStep
    from mmcurate.steps.dedup.config import ExactConfig, NearConfig

    size = args.shard_size
    shards = max(1, n // size)
    d = args.d[0]
    step = DedupStep("dedup", method, ExactConfig(column="sha") if method == "exact" else NearConfig(max_distance=d))
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      memory_limit=None) as cluster, Client(cluster) as client, tempfile.TemporaryDirectory() as out:
        rows = client.persist(db.from_sequence(range(shards), npartitions=shards).map_partitions(
            lambda part: [synthetic_rows(i, size, n, method, d, args.seed) for i in part]))
        client.run(lambda: __import__("gc").collect())
        base = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        cpu = client.run(cpu_seconds)
        cpu0 = cpu_seconds()
        t0 = time.perf_counter()
        outcomes, stats = dedup_rows(client, step, rows, {i: i * size for i in range(shards)}, shards * size, out)
        wall = time.perf_counter() - t0
        peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        cpu = sum(client.run(cpu_seconds).values()) - sum(cpu.values()) + cpu_seconds() - cpu0
    return {
        "n": shards * size, "method": method, "d": d if method == "phash" else None, "shards": shards, "wall_s": wall, "cpu_s": cpu,
        "removed": int(sum(o.removed for o in outcomes)), "stats": stats,
        "driver_peak_bytes": peak_memory()["ru_maxrss_bytes"],
        "worker_peak_bytes": sorted(peaks.values()), "worker_rows_loaded_bytes": sorted(base.values()),
    }


def main_cluster(args: argparse.Namespace) -> int:
    results = []
    if args.rows_per_partition:
        from mmcurate.engine import global_steps

        global_steps.ROWS_PER_PARTITION = args.rows_per_partition
    for n in sorted(int(x) for x in args.n):
        for method in args.methods:
            print(f"running {method} N={fmt_n(n)} on {args.workers} workers ...", flush=True)
            r = run_cluster(n, method, args)
            results.append(r)
            workers = ", ".join(f"{b / 1e6:.0f}" for b in r["worker_peak_bytes"])
            loaded = ", ".join(f"{b / 1e6:.0f}" for b in r["worker_rows_loaded_bytes"])
            print(f"  {r['wall_s']:.1f} s wall, {r['cpu_s']:.1f} s CPU (workers + driver), removed {r['removed']:,}, {r['stats']}; driver peak {r['driver_peak_bytes'] / 1e6:.0f} MB; "
                  f"worker peaks {workers} MB (after generating the rows: {loaded} MB)", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"results": results}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Each configuration runs in a fresh subprocess; see the module docstring.")
    p.add_argument("--n", type=float, nargs="+", default=[1e6, 1e7], help="numbers of hashes (default: 1e6 1e7)")
    p.add_argument("--d", type=int, nargs="+", default=[4, 6, 8], help="max Hamming distances (default: 4 6 8)")
    p.add_argument("--k", type=int, default=None, help="identical blocks per table (default: chosen by cost model)")
    p.add_argument("--threads", type=int, default=None, help="worker threads (default: os.cpu_count())")
    p.add_argument("--share", type=float, default=0.01, help="share of rows overwritten with planted near-duplicates")
    p.add_argument("--seed", type=int, default=0, help="seed of np.random.default_rng (default 0)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per configuration before it is abandoned")
    p.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    p.add_argument("--cluster", action="store_true", help="exact and phash dedup through a Dask LocalCluster instead")
    p.add_argument("--workers", type=int, default=2, help="--cluster: worker processes (default 2)")
    p.add_argument("--shard-size", type=int, default=10_000, help="--cluster: rows per synthetic shard (default 10k)")
    p.add_argument("--methods", nargs="+", choices=["exact", "phash"], default=["exact", "phash"], help="--cluster: dedup methods (default both)")
    p.add_argument("--rows-per-partition", type=int, default=None,
                   help="--cluster: rows per partition (default global_steps.ROWS_PER_PARTITION; fewer than N: the partitioned path)")
    p.add_argument("--child", type=int, nargs=2, metavar=("N", "D"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        child(args)
        return 0
    if args.cluster:
        sys.path.insert(0, str(REPO_ROOT))
        return main_cluster(args)

    print(f"python {platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}")
    results: list[dict[str, Any]] = []
    for n in sorted(int(x) for x in args.n):
        for d in args.d:
            print(f"running N={fmt_n(n)} D={d} ...", flush=True)
            r = run_one(n, d, args)
            if r.get("timed_out"):
                estimate(r, results)
            results.append(r)
    print()
    print_table(results)
    ok = goal_check(results)
    bad = [r for r in results if not r.get("timed_out") and (r["pair_recall"] != 1.0 or not r["pairs_within_d"])]
    if bad:
        print("RECALL FAILURE in: " + ", ".join(f"N={fmt_n(r['n'])} D={r['d']}" for r in bad))
    if args.json:
        args.json.write_text(json.dumps({"results": results, "goal_pass": ok}, indent=2))
    return 1 if bad or ok is False else 0


if __name__ == "__main__":
    sys.exit(main())
