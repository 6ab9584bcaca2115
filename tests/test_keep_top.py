"""``keep_top``: the top fraction of the whole dataset by a column, through the real engine.

Values are planted per sample (read from its JSON member), so the expected survivors are
known exactly, including ties.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import mmcurate
from conftest import image_bytes, make_shard
from mmcurate import annotators
from mmcurate.annotators import Annotator
from mmcurate.steps.keep_top import top_fraction


class Score(Annotator):
    """Reads ``score`` from ``KEY.json``."""

    name = "planted_score"
    columns = {"score": pa.float64()}

    def annotate_one(self, sample):
        return {"score": json.loads(sample.sample.get("json"))["score"]}


@pytest.fixture(autouse=True)
def _register():
    import cloudpickle
    import test_keep_top

    cloudpickle.register_pickle_by_value(test_keep_top)
    annotators.register(Score)


def _recipe(fraction=0.3):
    steps = [{"annotate": "planted_score"}, {"keep_top": "score", "fraction": fraction}]
    return mmcurate.Recipe.from_dict({"name": "top", "steps": steps})


def _shards(tmp_path, values_per_shard):
    paths = []
    for s, values in enumerate(values_per_shard):
        samples = [(f"s{s}_{i}", {"jpg": image_bytes(8, 8, seed=10 * s + i), "json": json.dumps({"score": v}).encode()}) for i, v in enumerate(values)]
        paths.append(str(make_shard(tmp_path / f"{s:06d}.tar", samples)))
    return paths


def _decisions(result):
    return {r["key"]: r for r in pq.read_table(result.decisions_path).to_pylist()}


def test_keeps_the_global_top_fraction_with_ties_to_the_earlier_sample(tmp_path, client):
    # Shard 0 holds most of the high values: a per-shard top 30% would keep other samples.
    values = [[0.9, 0.8, 0.7, 0.5, 0.5, 0.6, 0.95], [0.1, 0.5, 0.2, 0.3, 0.05, 0.15, 0.25], [0.5, 0.4, 0.35, 0.45, 0.02, 0.01]]
    shards = _shards(tmp_path, values)
    result = mmcurate.curate(shards, _recipe(0.3), tmp_path / "run", client=client, quiet=True)
    d = _decisions(result)
    # 20 samples, round(0.3 * 20) = 6 stay: 0.95 0.9 0.8 0.7 0.6, then one of the four 0.5s,
    # the earliest in input order.
    kept = {k for k, r in d.items() if r["kept"]}
    assert kept == {"s0_6", "s0_0", "s0_1", "s0_2", "s0_5", "s0_3"}
    assert d["s0_4"]["reason"] == "below_top_fraction: score == 0.5, a tie kept for earlier samples"
    assert d["s1_1"]["reason"].startswith("below_top_fraction: score == 0.5")
    assert d["s1_0"]["reason"] == "below_top_fraction: score < 0.5"
    assert {r["step"] for r in d.values() if not r["kept"]} == {"keep_top_score"}
    (report,) = result.top
    assert (report.samples_in, report.kept, report.threshold) == (20, 6, 0.5)
    assert "kept the top 0.3 by score: 6 of 20" in result.summary()

    looser = mmcurate.curate(shards, _recipe(0.3), tmp_path / "run", client=client, quiet=True, overwrite=True, overrides=["keep_top_score.fraction=0.5"])
    assert looser.kept == 10 and looser.computed["planted_score"] == 0  # decided again, nothing recomputed


def test_top_fraction_counts_rounding_and_missing_values():
    values = np.array([0.2, np.nan, 0.9, 0.2, 0.5])
    assert top_fraction(values, 0.5).tolist() == [True, False, True, False, True]  # round(2.5) -> 3
    assert top_fraction(values, 1.0).sum() == 5
    assert not top_fraction(values, 0.05).any()
    assert top_fraction(np.array([]), 0.3).tolist() == []


def test_bad_keep_top_steps_are_refused():
    with pytest.raises(mmcurate.RecipeError, match="field 'fraction'"):
        _recipe(0)
    with pytest.raises(mmcurate.RecipeError, match="field 'fraction'"):
        _recipe(1.5)
    with pytest.raises(mmcurate.RecipeError, match="column 'clip_score' is not produced"):
        mmcurate.Recipe.from_dict({"name": "t", "steps": [{"annotate": "image_info"}, {"keep_top": "clip_score", "fraction": 0.3}]})
    with pytest.raises(mmcurate.RecipeError, match="step 2 .*column 'format' is not numeric"):
        mmcurate.Recipe.from_dict({"name": "t", "steps": [{"annotate": "image_info"}, {"keep_top": "format", "fraction": 0.3}]})
