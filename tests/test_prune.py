"""``prune: density`` (DBP) and ``target`` (DataComp's image-based filter) over embeddings.

Embeddings are planted per sample (read from its JSON member by a small annotator registered
through the public plugin API), drawn from Gaussian mixtures whose dense and sparse clusters
are known, so the right answer is known.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mmcurate
from conftest import image_bytes, make_shard
from mmcurate import annotators
from mmcurate.annotators import Annotator
from mmcurate.steps.prune import DensityConfig, density_clusters, keep_count, prune_density, quotas
from mmcurate.steps.target import TargetConfig, target_keep

DIM = 8


class PlantedEmbedding(Annotator):
    """Reads ``emb`` (a list of DIM floats) from ``KEY.json``."""

    name = "planted_embedding"
    columns = {"emb": pa.list_(pa.float32(), DIM)}

    def annotate_one(self, sample):
        return {"emb": json.loads(sample.sample.get("json"))["emb"]}


@pytest.fixture(autouse=True)
def _register():
    import cloudpickle
    import test_prune

    cloudpickle.register_pickle_by_value(test_prune)
    annotators.register(PlantedEmbedding)


def _mixture(seed: int, clusters: list[tuple[int, float]], centers: np.ndarray) -> np.ndarray:
    """Rows from Gaussian clusters: (count, spread) around each of ``centers``."""
    rng = np.random.default_rng(seed)
    return np.concatenate([c + spread * rng.normal(size=(count, DIM)) for (count, spread), c in zip(clusters, centers)])


CENTERS = np.eye(DIM)[:4]
DENSE_SPARSE = [(120, 0.005), (120, 0.005), (40, 0.2), (40, 0.2)]
"""Two dense clusters (near-identical samples) and two sparse ones."""


def _shards(tmp_path, emb: np.ndarray, prefix: str, per_shard: int = 80) -> list[str]:
    paths = []
    for s, start in enumerate(range(0, len(emb), per_shard)):
        samples = [
            (f"{prefix}{i:04d}", {"jpg": image_bytes(8, 8, seed=i), "json": json.dumps({"emb": emb[i].tolist()}).encode()})
            for i in range(start, min(len(emb), start + per_shard))
        ]
        paths.append(str(make_shard(tmp_path / f"{prefix}-{s:06d}.tar", samples)))
    return paths


def _decisions(result) -> dict[str, dict]:
    return {r["key"]: r for r in pq.read_table(result.decisions_path).to_pylist()}


def test_quotas_are_the_exact_constrained_optimum():
    # By hand: targets P*N = 6, 3, 3; cluster 2 holds only 2, so the unit left goes where it
    # costs least (6.5 and 3.5 after water-filling, a tie, to the lower cluster).
    assert quotas(np.array([10, 10, 2]), np.array([0.5, 0.25, 0.25]), 12).tolist() == [7, 3, 2]
    # A cluster with P ~ 0 still keeps floor(min(0.5 N / k, n_j - 1)) = floor(min(2.5, 9)).
    assert quotas(np.array([10, 10]), np.array([1.0, 0.0]), 10).tolist() == [8, 2]
    # Against brute force over every whole allocation within the bounds.
    rng = np.random.default_rng(0)
    for _ in range(200):
        sizes = rng.integers(0, 7, rng.integers(1, 4))
        total = int(rng.integers(0, sizes.sum() + 1))
        p = rng.dirichlet(np.ones(len(sizes)))
        low = np.floor(np.minimum(0.5 * total / len(sizes), np.maximum(sizes - 1, 0))).astype(int)
        x = quotas(sizes, p, total)
        assert x.sum() == total and (low <= x).all() and (x <= sizes).all()
        best = min(
            sum((c - q * total) ** 2 for c, q in zip(choice, p))
            for choice in itertools.product(*(range(lo, s + 1) for lo, s in zip(low, sizes)))
            if sum(choice) == total
        )
        assert sum((c - q * total) ** 2 for c, q in zip(x, p)) == pytest.approx(best, abs=1e-9)


def test_dense_clusters_are_thinned_and_sparse_ones_kept():
    emb = _mixture(1, DENSE_SPARSE, CENTERS)
    keep, labels, x = prune_density(emb, DensityConfig(column="emb", keep_fraction=0.5, clusters=4))
    assert keep.sum() == x.sum() == keep_count(320, 0.5) == 160
    by_truth = [keep[a:b].mean() for a, b in [(0, 120), (120, 240), (240, 280), (280, 320)]]
    assert by_truth[2] == by_truth[3] == 1.0  # sparse: kept whole
    assert by_truth[0] == by_truth[1] == pytest.approx(40 / 120)  # dense: the other 80 each
    assert density_clusters(1_000_000, 0) == 500 and density_clusters(10_000, 0) == 50 and density_clusters(3, 0) == 1


def test_prune_through_the_engine_matches_the_single_process_result(tmp_path, client):
    emb = _mixture(2, DENSE_SPARSE, CENTERS)
    shards = _shards(tmp_path, emb, "p")
    recipe = mmcurate.Recipe.from_dict({"name": "prune", "steps": [
        {"annotate": "planted_embedding"},
        {"prune": "density", "column": "emb", "keep_fraction": 0.5, "clusters": 4, "seed": 3},
    ]})
    result = mmcurate.curate(shards, recipe, tmp_path / "run", client=client, quiet=True)
    d = _decisions(result)
    expected, labels, x = prune_density(emb, DensityConfig(column="emb", keep_fraction=0.5, clusters=4, seed=3))
    assert [d[f"p{i:04d}"]["kept"] for i in range(len(emb))] == expected.tolist()
    dropped = [r for r in d.values() if not r["kept"]]
    assert {r["reason"] for r in dropped} <= {f"pruned_dense_cluster:{j}" for j in range(4)}
    assert all(int(r["key"][1:]) < 240 for r in dropped)  # only the dense clusters lose samples
    (report,) = result.reports
    assert (report.samples_in, report.kept, report.clusters) == (320, 160, 4)
    assert sorted(report.sizes_before) == [40, 40, 120, 120] and report.sizes_after == x.tolist()
    assert "density pruning of emb in 4 clusters kept 160 of 320" in result.summary()
    assert "density pruning of emb in 4 clusters kept 160 of 320" in result.report.read_text()

    again = mmcurate.curate(shards, recipe, tmp_path / "run", client=client, quiet=True, overwrite=True,
                            overrides=["prune_density.keep_fraction=0.75"])
    assert again.kept == 240 and again.computed["planted_embedding"] == 0  # re-decided, nothing recomputed


def test_target_keeps_the_pool_clusters_nearest_to_the_reference(tmp_path, client):
    # The reference set lies near clusters 0 and 2 of the pool; clusters 1 and 3 are off target.
    pool = _mixture(3, [(40, 0.1)] * 4, CENTERS)
    reference = _mixture(4, [(6, 0.1), (6, 0.1)], CENTERS[[0, 2]])
    embed = {"name": "ref", "steps": [{"annotate": "planted_embedding"}]}
    ref_run = mmcurate.curate(_shards(tmp_path, reference, "r"), mmcurate.Recipe.from_dict(embed), tmp_path / "ref", client=client, quiet=True)
    recipe = mmcurate.Recipe.from_dict({"name": "target", "steps": [
        {"annotate": "planted_embedding"},
        {"target": "emb", "reference": str(ref_run.out), "clusters": 4},
    ]})
    result = mmcurate.curate(_shards(tmp_path, pool, "p"), recipe, tmp_path / "run", client=client, quiet=True)
    d = _decisions(result)
    on_target = [i < 40 or 80 <= i < 120 for i in range(160)]
    assert [d[f"p{i:04d}"]["kept"] for i in range(160)] == on_target
    assert {r["reason"] for r in d.values() if not r["kept"]} == {"off_target"}
    assert target_keep(pool, reference, TargetConfig(reference=("x",), clusters=4)).tolist() == on_target
    with pytest.raises(ValueError, match="reference embeddings have 3 dimensions and the pool's 8"):
        target_keep(pool, reference[:, :3], TargetConfig(reference=("x",), clusters=4))
    (report,) = result.reports
    assert (report.kept, report.clusters, report.target_clusters, report.reference_items) == (80, 4, 2, 12)

    # The reference as raw shards: embedded once into OUT/reference/, then read back.
    raw = mmcurate.Recipe.from_dict({**recipe.to_dict(), "steps": [
        {"annotate": "planted_embedding"},
        {"target": "emb", "reference": str(tmp_path / "r-*.tar"), "clusters": 4},
    ]})
    for n in (12, 0):
        again = mmcurate.curate(_shards(tmp_path, pool, "p"), raw, tmp_path / "raw", client=client, quiet=True, overwrite=True)
        assert [_decisions(again)[f"p{i:04d}"]["kept"] for i in range(160)] == on_target
        assert again.reference_computed.get("planted_embedding", 0) == n


def test_bad_prune_and_target_steps_are_refused(tmp_path):
    def load(step):
        return mmcurate.Recipe.from_dict({"name": "t", "steps": [{"annotate": "planted_embedding"}, {"annotate": "caption_info"}, step]})

    with pytest.raises(mmcurate.RecipeError, match="field 'keep_fraction'"):
        load({"prune": "density", "column": "emb", "keep_fraction": 0})
    with pytest.raises(mmcurate.RecipeError, match="column 'caption_words' .* is not a fixed-size vector"):
        load({"prune": "density", "column": "caption_words"})
    with pytest.raises(mmcurate.RecipeError, match="unknown method 'dbp'; known: density"):
        load({"prune": "dbp", "column": "emb"})
    with pytest.raises(mmcurate.RecipeError, match="field 'reference': expected an earlier run directory"):
        load({"target": "emb"})


def test_shipped_embedding_recipes_load(tmp_path):
    (tmp_path / "run.json").write_text("{}")
    recipe = mmcurate.Recipe.load("datacomp-image-based", [f"target_image_embedding.reference={tmp_path}"])
    assert recipe.step("target_image_embedding").config.reference == (str(tmp_path),)
    assert mmcurate.Recipe.load("clip-l14-embed").step("clip_score").config.embeddings
