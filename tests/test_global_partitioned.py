"""Global steps partitioned on the cluster give the single-task results, at any partition count.

Random values with planted duplicates go through the real engine (shards, LocalCluster) with
partitions of a few rows up to one partition; decisions, cluster files and reports are
compared with :func:`find_parents` / :func:`top_fraction` over the whole dataset in one piece.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mmcurate
from conftest import image_bytes, make_shard
from mmcurate import annotators
from mmcurate.annotators import Annotator
from mmcurate.engine import global_steps
from mmcurate.steps.dedup.compute import DedupArrays, dedup_arrays, find_parents
from mmcurate.steps.dedup.config import VideoNearConfig
from mmcurate.steps.dedup.results import REASONS
from mmcurate.steps.keep_top import top_fraction


class Values(Annotator):
    """Reads planted ``sha``, ``ph``, ``ph_mirror``, ``quality`` and ``emb`` from ``KEY.json``."""

    name = "planted_values"
    columns = {"sha": pa.string(), "ph": pa.uint64(), "ph_mirror": pa.uint64(), "quality": pa.float64(), "emb": pa.list_(pa.float32(), 4)}

    def annotate_one(self, sample):
        meta = json.loads(sample.sample.get("json"))
        return {c: meta.get(c) for c in self.columns}


@pytest.fixture(autouse=True)
def _register():
    import cloudpickle
    import test_global_partitioned

    cloudpickle.register_pickle_by_value(test_global_partitioned)
    annotators.register(Values)


def _values(n: int, seed: int) -> dict[str, list]:
    """Random values with planted duplicates: exact copies, hashes a few bits apart (and
    mirrored), near-identical embeddings, and repeated qualities (ties)."""
    rng = np.random.default_rng(seed)
    sha = [f"v{x}" for x in rng.integers(0, n // 2, n)]  # about half repeat
    ph = rng.integers(0, 2**63, n, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, n, dtype=np.uint64)
    mirror = rng.integers(0, 2**63, n, dtype=np.uint64)
    for _ in range(n // 5):
        a, b = rng.integers(0, n, 2)
        bits = rng.choice(64, rng.integers(0, 6), replace=False)
        flips = np.uint64(sum(1 << int(x) for x in bits))
        if rng.random() < 0.3:
            ph[b] = mirror[a] ^ flips  # a mirrored copy
        else:
            ph[b] = ph[a] ^ flips
    emb = rng.normal(size=(n, 4))
    for _ in range(n // 5):
        a, b = rng.integers(0, n, 2)
        emb[b] = emb[a] + rng.normal(scale=rng.choice([1e-4, 0.05, 0.3]), size=4)
    quality = rng.integers(0, 8, n).astype(float)
    return {"sha": sha, "ph": ph.tolist(), "ph_mirror": mirror.tolist(), "quality": quality.tolist(), "emb": emb.astype(np.float32).tolist()}


def _shards(tmp_path, values: dict[str, list], sizes: list[int], prefix: str) -> tuple[list[str], list[str]]:
    paths, keys, row = [], [], 0
    for s, size in enumerate(sizes):
        samples = []
        for _ in range(size):
            key = f"{prefix}{row:05d}"
            meta = {c: v[row] for c, v in values.items()}
            samples.append((key, {"jpg": image_bytes(8, 8, seed=row), "json": json.dumps(meta).encode()}))
            keys.append(key)
            row += 1
        paths.append(str(make_shard(tmp_path / f"{prefix}{s:06d}.tar", samples)))
    return paths, keys


def _run(tmp_path, name, shards, step, client, against=()):
    recipe = mmcurate.Recipe.from_dict({"name": "partitioned", "steps": [{"annotate": "planted_values"}, step]})
    result = mmcurate.curate(shards, recipe, tmp_path / name, client=client, quiet=True, against=list(against))
    return recipe.steps[-1], result


def _reference(step, values: dict[str, list], prior: np.ndarray) -> np.ndarray:
    return find_parents(step.method, step.config, dedup_arrays(step, values, prior)).parent


STEPS = {
    "exact, highest quality": {"dedup": "exact", "column": "sha", "keep": "highest quality"},
    "phash D=4 with mirror": {"dedup": "phash", "column": "ph", "max_distance": 4, "mirror": True},
    "phash D=2, lowest quality": {"dedup": "phash", "column": "ph", "max_distance": 2, "keep": "lowest quality"},
    "semantic": {"dedup": "semantic", "column": "emb", "eps": 0.01, "clusters": 5},
}


@pytest.mark.parametrize("name", list(STEPS))
def test_dedup_partitioned_equals_the_single_task(tmp_path, client, monkeypatch, name):
    values = _values(300, seed=len(name))
    shards, keys = _shards(tmp_path, values, [40, 1, 90, 69, 100], "s")
    for per_partition in (7, 64, 10**6):  # many partitions, a few, one
        monkeypatch.setattr(global_steps, "ROWS_PER_PARTITION", per_partition)
        step, result = _run(tmp_path, f"run{per_partition}", shards, STEPS[name], client)
        parent = _reference(step, values, np.zeros(len(keys), dtype=bool))
        decisions = {d["key"]: d for d in pq.read_table(result.decisions_path).to_pylist()}
        expected = {k: None if parent[i] == i else f"{REASONS[step.method]}:{keys[parent[i]]}" for i, k in enumerate(keys)}
        assert {k: d["reason"] for k, d in decisions.items()} == expected, per_partition
        assert sum(r is not None for r in expected.values()) > 10  # the planted duplicates were found

        sizes = Counter(parent.tolist())
        clusters = mmcurate.open_run(result.out).clusters()[step.id].to_pylist()
        assert [(c["key"], c["dup_cluster"], c["dup_cluster_size"]) for c in clusters] == [
            (k, parent[i], sizes[parent[i]]) for i, k in enumerate(keys)
        ]
        (report,) = result.dedup
        members: dict[int, list[str]] = {}
        for row, p in enumerate(parent.tolist()):
            if row != p:
                members.setdefault(p, []).append(keys[row])
        largest = sorted(members.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:5]
        assert report.clusters == len(members)
        assert [tuple(x) for x in report.largest] == [(len(m) + 1, keys[p], m[:4]) for p, m in largest]


def _against(tmp_path, client, step: dict, old: tuple[dict[str, list], list[int]], new: tuple[dict[str, list], list[int]]):
    """An earlier run deduplicated by ``step`` over shards of ``old`` (values, shard sizes), and
    the shards of ``new``: (the earlier run, the new shards, and over the earlier run's kept
    rows then the new rows: keys, values, whether each row is a reference row)."""
    old_shards, old_keys = _shards(tmp_path, old[0], old[1], "o")
    _, first = _run(tmp_path, "first", old_shards, step, client)
    kept = {d["key"] for d in pq.read_table(first.decisions_path).to_pylist() if d["kept"]}
    prior_rows = [i for i, k in enumerate(old_keys) if k in kept]
    new_shards, new_keys = _shards(tmp_path, new[0], new[1], "n")
    both = {c: [old[0][c][i] for i in prior_rows] + new[0][c] for c in old[0]}
    keys = [old_keys[i] for i in prior_rows] + new_keys
    return first, new_shards, keys, both, np.arange(len(keys)) < len(prior_rows)


def _reasons_against(method: str, parent: np.ndarray, keys: list[str], prior: np.ndarray) -> dict[str, str | None]:
    """The reason of each new row's decision given the single-task parents."""
    return {k: None if parent[i] == i else f"{'matches_reference' if prior[parent[i]] else REASONS[method]}:{keys[parent[i]]}"
            for i, k in enumerate(keys) if not prior[i]}


def test_exact_dedup_against_an_earlier_run_keeps_its_rows_at_every_partition_count(tmp_path, client, monkeypatch):
    step = {"dedup": "exact", "column": "sha", "keep": "highest quality"}
    first, new_shards, keys, both, prior = _against(tmp_path, client, step, (_values(120, seed=1), [60, 60]), (_values(200, seed=2), [50, 150]))
    for per_partition in (5, 10**6):
        monkeypatch.setattr(global_steps, "ROWS_PER_PARTITION", per_partition)
        dedup, result = _run(tmp_path, f"second{per_partition}", new_shards, step, client, against=[first.out])
        parent = _reference(dedup, both, prior)
        decisions = {d["key"]: d["reason"] for d in pq.read_table(result.decisions_path).to_pylist()}
        assert decisions == _reasons_against("exact", parent, keys, prior)
        assert any(parent[i] < prior.sum() for i in range(prior.sum(), len(keys)) if parent[i] != i)


@pytest.mark.parametrize("name", ["exact, highest quality", "phash D=4 with mirror", "semantic"])
def test_dedup_against_an_earlier_run_and_raw_reference_shards_equals_the_single_task(tmp_path, client, monkeypatch, name):
    """Reference rows are read on the workers, one partition per reference shard (the earlier
    run's input shards, an empty one too, then the step's own raw reference shards), and give
    the single-task results, reference rows first, at any partition count."""
    old, new, raw = _values(90, seed=7), _values(150, seed=8), _values(30, seed=9)
    for c in ("sha", "ph", "emb"):  # new rows copying rows of the earlier run and of the raw shards
        new[c][:10], new[c][10:20] = old[c][30:40], raw[c][:10]
    raw_shards, raw_keys = _shards(tmp_path, raw, [10, 20], "r")
    step = {**STEPS[name], "against": [str(tmp_path / "r0*.tar")]}
    first, new_shards, keys, both, prior = _against(tmp_path, client, STEPS[name], (old, [40, 0, 50]), (new, [60, 90]))
    n_old = int(prior.sum())
    keys = keys[:n_old] + raw_keys + keys[n_old:]
    both = {c: v[:n_old] + raw[c] + v[n_old:] for c, v in both.items()}
    prior = np.arange(len(keys)) < n_old + len(raw_keys)
    for per_partition in (7, 10**6):
        monkeypatch.setattr(global_steps, "ROWS_PER_PARTITION", per_partition)
        dedup, result = _run(tmp_path, f"second{per_partition}", new_shards, step, client, against=[first.out])
        parent = _reference(dedup, both, prior)
        decisions = {d["key"]: d["reason"] for d in pq.read_table(result.decisions_path).to_pylist()}
        assert decisions == _reasons_against(dedup.method, parent, keys, prior), per_partition
        matched = {parent[i] for i in range(len(keys)) if not prior[i] and prior[parent[i]]}
        assert min(matched) < n_old <= max(matched)  # rows of both references were matched
        sizes = Counter(parent.tolist())
        clusters = mmcurate.open_run(result.out).clusters()[dedup.id].to_pylist()
        assert [(c["key"], c["dup_cluster"], c["dup_cluster_size"]) for c in clusters] == [
            (k, parent[i], sizes[parent[i]]) for i, k in enumerate(keys) if not prior[i]
        ]
        assert result.dedup[0].removed == sum(parent[i] != i for i in range(len(keys)))


def _chained(n: int, seed: int, chain: int, copies: int) -> dict[str, list]:
    """Random hashes with a chain of ``chain`` hashes (each one bit from the next, so only
    neighbours are within distance 1) ending one bit from a hub hash, and ``copies`` copies and
    one-bit variants of the hub, all at random rows (across shards) after the first 20."""
    values = _values(n, seed)
    rng = np.random.default_rng(seed)
    ph = values["ph"]
    rows = (20 + rng.permutation(n - 20)).tolist()
    hub = ph[rows[0]]
    for i, row in enumerate(rows[1 : chain + 1]):  # link i differs from the hub in bits 63, 62, ..., 63 - (chain - 1 - i)
        ph[row] = hub ^ sum(1 << (63 - j) for j in range(chain - i))
    for row in rows[chain + 1 : chain + 1 + copies]:
        ph[row] = hub if rng.random() < 0.5 else hub ^ (1 << int(rng.integers(0, 64)))
    values["quality"] = rng.integers(0, 3, n).astype(float).tolist()  # many ties: input order decides
    return values


def test_phash_clusters_with_long_chains_and_an_earlier_run_equal_the_single_task(tmp_path, client, monkeypatch):
    """Clusters spanning every shard and far more rows than a partition are found by the
    distributed union-find (several rounds over partitions of a few rows) as by one task."""
    step = {"dedup": "phash", "column": "ph", "max_distance": 1, "keep": "highest quality"}
    old_values, new_values = _chained(90, 5, chain=30, copies=20), _chained(260, 6, chain=60, copies=50)
    new_values["ph"][:20] = old_values["ph"][20:40]  # new rows joining clusters of the earlier run
    first, new_shards, keys, both, prior = _against(tmp_path, client, step, (old_values, [45, 45]), (new_values, [50, 3, 97, 110]))
    for per_partition in (6, 10**6):
        monkeypatch.setattr(global_steps, "ROWS_PER_PARTITION", per_partition)
        dedup, result = _run(tmp_path, f"second{per_partition}", new_shards, step, client, against=[first.out])
        parent = _reference(dedup, both, prior)
        assert Counter(parent[~prior].tolist()).most_common(1)[0][1] > 100  # one cluster of most of the chain and the copies
        decisions = {d["key"]: d["reason"] for d in pq.read_table(result.decisions_path).to_pylist()}
        assert decisions == _reasons_against("phash", parent, keys, prior), per_partition
        sizes = Counter(parent.tolist())
        clusters = mmcurate.open_run(result.out).clusters()[dedup.id].to_pylist()
        assert [(c["key"], c["dup_cluster"], c["dup_cluster_size"]) for c in clusters] == [
            (k, parent[i], sizes[parent[i]]) for i, k in enumerate(keys) if not prior[i]
        ]


def test_keep_top_distributed_selection_keeps_exactly_the_single_task_top_with_ties(tmp_path, client):
    values = _values(400, seed=3)
    values["quality"][5] = None  # NaN ranks lowest
    shards, keys = _shards(tmp_path, values, [100, 3, 150, 147], "k")
    for fraction in (0.001, 0.13, 0.5, 0.9, 1.0):  # 0.001 keeps none; 8 qualities: the threshold is a tie
        _, result = _run(tmp_path, f"top{fraction}", shards, {"keep_top": "quality", "fraction": fraction}, client)
        keep = top_fraction(np.array([np.nan if v is None else v for v in values["quality"]]), fraction)
        decisions = {d["key"]: d["kept"] for d in pq.read_table(result.decisions_path).to_pylist()}
        assert decisions == {k: bool(keep[i]) for i, k in enumerate(keys)}, fraction
        (report,) = result.top
        assert report.kept == int(keep.sum())


def test_video_hashes_shared_by_many_videos_are_ignored_and_reported():
    rng = np.random.default_rng(0)
    intro = np.uint64(0x0123456789ABCDEF)
    videos = [np.concatenate([[intro], rng.integers(0, 2**63, 4, dtype=np.uint64)]) for _ in range(3000)]
    videos[2999] = videos[7].copy()  # one real duplicate
    config = VideoNearConfig(max_hash_videos=50)
    arrays = DedupArrays(videos, {}, np.zeros(len(videos)), np.zeros(len(videos), dtype=bool))
    outcome = find_parents("video_phash", config, arrays)
    dropped = np.flatnonzero(outcome.parent != np.arange(len(videos)))
    assert dropped.tolist() == [2999] and outcome.parent[2999] == 7  # sharing only the intro is no match
    assert outcome.stats["max_hash_videos"] == 50 and outcome.stats["hashes_ignored"] == 1
    assert outcome.stats["frame_pairs_within_distance"] < 100  # not the 4.5M pairs of the intro
    capped = mmcurate.Recipe.from_dict(
        {"name": "v", "steps": [{"annotate": "video_phash"}, {"dedup": "video_phash", "max_hash_videos": 20}]}
    )
    assert capped.steps[-1].config.max_hash_videos == 20


def test_a_runner_may_leave_drops_in_pieces_across_partitions_for_record_pieces(tmp_path, client, monkeypatch):
    """The runner contract (engine/global_steps.py): pieces of a shard's drops from different
    partitions are recorded on the workers, each with its own reason; the driver gets summaries."""
    import dask.bag as db

    from mmcurate.engine.gather import read_rows, shard_specs
    from mmcurate.recipe import KeepTopStep
    from mmcurate.steps.keep_top import KeepTopReport

    def every_third(client, store, plan, state, shards, priors):
        specs = shard_specs(store, plan, state, shards, 0)

        def piece(spec, half):
            pos = read_rows(spec).pos
            drop = pos[pos % 3 == 0][half::2]  # two interleaved pieces per shard
            return global_steps.ShardDrops(spec.ref, drop, pa.array([f"third:{p}" for p in drop.tolist()]))

        items = [(s, half) for half in (1, 0) for s in specs]
        pieces = db.from_sequence(items, npartitions=len(items)).map(lambda item: piece(*item))
        summaries = global_steps.record_pieces(client, global_steps.Recorder(str(store.root), plan.id), pieces)
        assert set(summaries) == {s.url for s in specs} and all(isinstance(v, global_steps.ShardSummary) for v in summaries.values())
        return summaries, KeepTopReport(plan.id, "quality", 1.0, 0, 0, None)

    monkeypatch.setitem(global_steps.GLOBAL_RUNNERS, KeepTopStep, every_third)
    shards, keys = _shards(tmp_path, _values(40, seed=4), [13, 27], "p")
    _, result = _run(tmp_path, "pieces", shards, {"id": "third", "keep_top": "quality", "fraction": 0.5}, client)
    decisions = pq.read_table(result.decisions_path).to_pylist()
    assert [(d["key"], d["step"], d["reason"]) for d in decisions] == [
        (k, "third", f"third:{d['pos']}") if d["pos"] % 3 == 0 else (k, None, None) for k, d in zip(keys, decisions)
    ]
    assert result.kept == 40 - 5 - 9 and result.funnel[-1].reasons == {"third": 14}
