"""Decontamination: ``--against`` / ``against:`` with raw reference shards and earlier runs.

Reference matches are planted: the same image bytes (exact), a resized copy (phash), a nearly
equal embedding (semantic). A matching sample is dropped as ``matches_reference:KEY``; the
reference shards are annotated once (a rerun computes 0 reference rows); the report lists them.
"""

from __future__ import annotations

import io
import json
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import mmcurate
from conftest import image_bytes, make_shard
from mmcurate import annotators
from mmcurate.annotators import Annotator
from mmcurate.engine.global_steps import GLOBAL_RUNNERS
from mmcurate.io.inputs import InputError
from mmcurate.recipe import DedupStep


class Embedded(Annotator):
    """Reads ``emb`` (4 floats) from ``KEY.json``."""

    name = "embedded"
    needs_pixels = False
    columns = {"emb": pa.list_(pa.float32(), 4)}

    def annotate_one(self, sample):
        return {"emb": json.loads(sample.sample.get("json"))["emb"]}


@pytest.fixture(autouse=True)
def _register():
    import cloudpickle
    import test_decontam

    cloudpickle.register_pickle_by_value(test_decontam)
    annotators.register(Embedded)


def _picture(seed: int, size: int) -> bytes:
    """A smooth picture (a gradient and a few blocks, so its pHash survives resizing) as JPEG."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:128, 0:128] / 128.0
    pixels = np.stack([x * 255, y * 255, (1 - x) * 255], axis=-1)
    for _ in range(4):
        r, c = rng.integers(0, 96, 2)
        pixels[r : r + 32, c : c + 32] = rng.integers(0, 256, 3)
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).resize((size, size)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _sample(key: str, jpg: bytes, emb=(1.0, 0.0, 0.0, 0.0)) -> tuple[str, dict[str, bytes]]:
    return key, {"jpg": jpg, "txt": b"a caption", "json": json.dumps({"emb": list(emb)}).encode()}


def _decisions(result) -> dict[str, dict]:
    return {d["key"]: d for d in pq.read_table(result.decisions_path).to_pylist()}


def _recipe(method: str, annotate: str, **dedup) -> mmcurate.Recipe:
    return mmcurate.Recipe.from_dict({"name": "decontam", "steps": [{"annotate": annotate}, {"dedup": method, **dedup}]})


def test_exact_matches_of_raw_reference_shards_are_dropped_and_the_reference_is_annotated_once(tmp_path, client):
    (tmp_path / "eval").mkdir()
    ref = make_shard(tmp_path / "eval" / "eval-000.tar", [_sample(f"eval{i}", image_bytes(seed=100 + i)) for i in range(4)])
    pool = make_shard(tmp_path / "pool.tar", [
        _sample("a", image_bytes(seed=1)),
        _sample("leak", image_bytes(seed=102)),  # = eval2
        _sample("b", image_bytes(seed=2)),
        _sample("b_copy", image_bytes(seed=2)),  # an ordinary duplicate inside the pool
    ])
    recipe = _recipe("exact", "sha256")
    first = mmcurate.curate(str(pool), recipe, tmp_path / "run", client=client, quiet=True, against=[str(tmp_path / "eval" / "*.tar")])
    d = _decisions(first)
    assert d["leak"]["reason"] == "matches_reference:eval2"
    assert d["b_copy"]["reason"] == "duplicate_of:b"
    assert [k for k, v in d.items() if v["kept"]] == ["a", "b"]
    assert first.reference_computed == {"sha256": 4} and first.computed == {"sha256": 4}
    assert set(d) == {"a", "leak", "b", "b_copy"}  # reference items are never decided nor written
    again = mmcurate.curate(str(pool), recipe, tmp_path / "run", client=client, quiet=True, against=[str(tmp_path / "eval" / "*.tar")])
    assert again.reference_computed == {"sha256": 0} and again.computed == {"sha256": 0}
    assert _decisions(again) == d
    html = (tmp_path / "run" / "report.html").read_text()
    section = html[html.index('id="references"') :]
    assert "1 sample(s) matched a reference item" in section
    assert "leak" in section and "eval2" in section and str(ref.parent) in section


def test_phash_matches_a_resized_copy_in_reference_shards_and_in_an_earlier_run(tmp_path, client):
    ref = make_shard(tmp_path / "eval.tar", [_sample(f"eval{i}", _picture(i, 128)) for i in range(3)])
    pool = str(make_shard(tmp_path / "pool.tar", [_sample("resized", _picture(1, 96)), _sample("other", _picture(7, 128))]))
    recipe = _recipe("phash", "phash", max_distance=8)
    by_shards = mmcurate.curate(pool, recipe, tmp_path / "shards", client=client, quiet=True, against=[str(ref)])
    earlier = mmcurate.curate(str(ref), recipe, tmp_path / "earlier", client=client, quiet=True)
    by_run = mmcurate.curate(pool, recipe, tmp_path / "by-run", client=client, quiet=True, against=[earlier.out])
    for result in (by_shards, by_run):
        d = _decisions(result)
        assert d["resized"]["reason"] == "matches_reference:eval1"
        assert d["other"]["kept"]
    assert by_run.reference_computed == {}  # an earlier run's stored hashes are read, never recomputed


def test_semantic_dedup_step_against_reference_shards_in_the_recipe(tmp_path, client):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 4))
    ref = make_shard(tmp_path / "eval.tar", [_sample(f"eval{i}", image_bytes(seed=50 + i), c) for i, c in enumerate(centers)])
    pool = make_shard(tmp_path / "pool.tar", [
        _sample("near3", image_bytes(seed=1), centers[3] + 1e-3),
        _sample("far", image_bytes(seed=2), rng.normal(size=4)),
    ])
    recipe = _recipe("semantic", "embedded", column="emb", eps=0.01, clusters=2, against=str(ref))
    assert recipe.step("dedup_semantic").against == (str(ref),)
    assert mmcurate.Recipe.from_dict(recipe.to_dict()) == recipe
    result = mmcurate.curate(str(pool), recipe, tmp_path / "run", client=client, quiet=True)
    d = _decisions(result)
    assert d["near3"]["reason"] == "matches_reference:eval3"
    assert d["far"]["kept"]
    assert result.reference_computed == {"embedded": 4}


def test_an_against_that_is_neither_a_run_nor_shards_is_named(tmp_path, client):
    pool = str(make_shard(tmp_path / "pool.tar", [_sample("a", image_bytes(seed=1))]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty: neither an mmcurate run directory"):
        mmcurate.curate(pool, _recipe("exact", "sha256"), tmp_path / "run", client=client, quiet=True, against=[tmp_path / "empty"])


def test_what_the_driver_holds_of_a_reference_does_not_grow_with_its_samples(tmp_path, client, monkeypatch):
    """Reference rows stay on the workers: what a dedup step gets from the driver for an earlier
    run and for raw reference shards (what each reference shard's worker task reads) is the same
    size at 40 times the reference's samples, and the leaks are still found."""
    held: dict[int, int] = {}
    real = GLOBAL_RUNNERS[DedupStep]

    def measured(client, store, plan, state, shards, priors):
        held[n] = len(pickle.dumps(priors))
        return real(client, store, plan, state, shards, priors)

    monkeypatch.setitem(GLOBAL_RUNNERS, DedupStep, measured)
    recipe = _recipe("exact", "sha256")
    for n in (5, 200):
        refs = [make_shard(tmp_path / f"ref{n}" / f"{s}.tar", [_sample(f"r{s}-{i}", image_bytes(8, 8, seed=1000 * s + i)) for i in range(n)]) for s in range(3)]
        earlier = mmcurate.curate([str(r) for r in refs[:2]], recipe, tmp_path / f"earlier{n}", client=client, quiet=True)
        pool = make_shard(tmp_path / f"pool{n}.tar", [
            _sample("leak_run", image_bytes(8, 8, seed=1000 + n - 1)),  # = r1-(n-1), kept by the earlier run
            _sample("leak_raw", image_bytes(8, 8, seed=2000 + n - 1)),  # = r2-(n-1), a raw reference shard's
            _sample("new", image_bytes(8, 8, seed=99_999)),
        ])
        result = mmcurate.curate(str(pool), recipe, tmp_path / f"run{n}", client=client, quiet=True, against=[earlier.out, str(refs[2])])
        d = _decisions(result)
        assert [d[k]["reason"] for k in ("leak_run", "leak_raw", "new")] == [f"matches_reference:r1-{n - 1}", f"matches_reference:r2-{n - 1}", None]
    assert held[200] <= held[5] * 1.1 + 64, held
