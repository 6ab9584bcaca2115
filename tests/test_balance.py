"""``balance: concepts``: MetaCLIP balancing over the entries captions match.

Captions are drawn from a skewed concept distribution (a head entry in most captions, a tail
of rare ones), so the expected survivors are known: the head near ``max_per_entry``, the tail
whole.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest

import mmcurate
from conftest import image_bytes, make_shard
from mmcurate.cli import main
from mmcurate.steps.balance import BalanceConfig, balance_reasons, entry_counts, keep_probability, uniform


def _skewed(n_head: int, n_mid: int, tails: int) -> list[list[str]]:
    """Matched entries per sample: ``dog`` n_head times, ``cat`` n_mid, one sample per tail entry,
    a few with two entries, a few with none."""
    return [["dog"]] * n_head + [["cat"]] * n_mid + [[f"rare{i}"] for i in range(tails)] + [["dog", "rare0"]] * 3 + [[]] * 5


def test_head_entries_are_capped_near_t_and_the_tail_kept_whole():
    values = _skewed(20_000, 3_000, 50)
    keys = [f"k{i}" for i in range(len(values))]
    counts = entry_counts(values)
    assert (counts["dog"], counts["cat"], counts["rare0"]) == (20_003, 3_000, 4)
    reasons = balance_reasons(values, keys, counts, BalanceConfig(max_per_entry=1_000, seed=1))
    kept = Counter(v[0] if v else None for v, r in zip(values, reasons) if r is None)
    assert 900 <= kept["dog"] <= 1_100 and 900 <= kept["cat"] <= 1_100  # t = 1000, binomial spread ~30
    assert all(r is None for v, r in zip(values, reasons) if v and v[0].startswith("rare"))  # tail and dog+rare0: p = 1
    assert reasons[-5:] == ["no_concept"] * 5
    assert {r for r in reasons if r and r.startswith("balanced_out")} == {"balanced_out:dog", "balanced_out:cat"}
    assert balance_reasons(values, keys, counts, BalanceConfig(max_per_entry=1_000, seed=1)) == reasons  # rerun: identical
    other = balance_reasons(values, keys, counts, BalanceConfig(max_per_entry=1_000, seed=2))
    assert other != reasons and other.count(None) == pytest.approx(reasons.count(None), rel=0.1)
    kept_too = balance_reasons(values, keys, counts, BalanceConfig(max_per_entry=1_000, unmatched="keep"))
    assert kept_too[-5:] == [None] * 5


def test_keep_probability_and_draws():
    p = {"a": 0.5, "b": 0.2, "c": 1.0}
    assert keep_probability(["a", "b"], p) == pytest.approx(1 - 0.5 * 0.8)
    assert keep_probability(["a", "c"], p) == 1.0
    draws = uniform(0, [f"k{i}" for i in range(20_000)])
    assert ((0 <= draws) & (draws < 1)).all() and abs(draws.mean() - 0.5) < 0.01
    assert uniform(0, ["x"])[0] == uniform(0, ["x"])[0] != uniform(1, ["x"])[0]


def _shards(tmp_path, captions: list[str], per_shard: int = 60) -> list[str]:
    paths = []
    for s, start in enumerate(range(0, len(captions), per_shard)):
        samples = [(f"c{i:04d}", {"jpg": image_bytes(8, 8, seed=i), "txt": captions[i].encode()}) for i in range(start, min(len(captions), start + per_shard))]
        paths.append(str(make_shard(tmp_path / f"{s:06d}.tar", samples)))
    return paths


def test_balance_through_the_engine(tmp_path, client, capsys):
    entries = tmp_path / "entries.txt"
    entries.write_text("dog\ncat\nelephant\nzebra\nhot dog\n")
    captions = ["A dog on grass."] * 100 + ["my cat, asleep"] * 40 + ["An elephant!"] * 6 + ["zebra crossing"] * 3 + ["a hot dog"] * 2 + ["nothing here"] * 4
    shards = _shards(tmp_path, captions)
    recipe = mmcurate.Recipe.from_dict({"name": "balanced", "steps": [
        {"annotate": "concepts", "entries": str(entries)},
        {"balance": "concepts", "max_per_entry": 10, "seed": 5},
    ]})
    result = mmcurate.curate(shards, recipe, tmp_path / "run", client=client, quiet=True)
    rows = pq.read_table(result.decisions_path).to_pylist()
    by_caption: dict[str, Counter] = {}
    for r in rows:
        by_caption.setdefault(captions[int(r["key"][1:])], Counter())[r["reason"] if not r["kept"] else "kept"] += 1
    assert by_caption["An elephant!"] == {"kept": 6} and by_caption["zebra crossing"] == {"kept": 3}  # tail: whole
    assert by_caption["nothing here"] == {"no_concept": 4}
    assert 4 <= by_caption["A dog on grass."]["kept"] <= 20  # head: near t = 10 (p = 10/102)
    assert set(by_caption["A dog on grass."]) == {"kept", "balanced_out:dog"}
    assert by_caption["a hot dog"]["kept"] == 2  # "hot dog" has 2 matches: p = 1 for its samples
    # the cluster computed what the pure function computes from the same counts and keys
    values = [[e for e in ("dog", "cat", "elephant", "zebra", "hot dog") if f" {e} " in f" {c.lower().replace('.', ' . ').replace(',', ' , ').replace('!', ' ! ')} "] for c in captions]
    expected = balance_reasons(values, [f"c{i:04d}" for i in range(len(captions))], entry_counts(values), BalanceConfig(10, "drop", 5))
    assert [r["reason"] for r in sorted(rows, key=lambda r: r["key"])] == expected
    (report,) = result.reports
    assert (report.samples_in, report.entries, report.capped, report.head[0]) == (len(captions), 5, 2, ("dog", 102))
    assert "balanced concepts at 10 per entry" in result.summary()
    capsys.readouterr()
    assert main(["inspect", str(result.out)]) == 0 and "balanced concepts at 10 per entry" in capsys.readouterr().out

    again = mmcurate.curate(shards, recipe, tmp_path / "run", client=client, quiet=True, overwrite=True)
    assert pq.read_table(again.decisions_path).to_pylist() == rows  # identical on rerun
    looser = mmcurate.curate(shards, recipe, tmp_path / "run", client=client, quiet=True, overwrite=True,
                             overrides=["balance_concepts.max_per_entry=1000"])
    assert looser.kept == len(captions) - 4 and looser.computed["concepts"] == 0  # re-decided, nothing recomputed


def test_bad_balance_steps_are_refused():
    def load(step):
        return mmcurate.Recipe.from_dict({"name": "t", "steps": [{"annotate": "concepts"}, step]})

    with pytest.raises(mmcurate.RecipeError, match="field 'unmatched': expected one of drop, keep"):
        load({"balance": "concepts", "unmatched": "maybe"})
    with pytest.raises(mmcurate.RecipeError, match="field 'max_per_entry'"):
        load({"balance": "concepts", "max_per_entry": 0})
    with pytest.raises(mmcurate.RecipeError, match="'concept_count' .* is not a list of strings"):
        load({"balance": "concept_count"})
    assert load({"balance": "concepts"}).steps[1].id == "balance_concepts"
    assert np.isclose(load({"balance": "concepts"}).steps[1].config.max_per_entry, 20_000)


def test_shipped_balanced_recipe_loads():
    recipe = mmcurate.Recipe.load("metaclip-balanced")
    assert recipe.step("balance_concepts").config == BalanceConfig(max_per_entry=20_000, unmatched="drop", seed=0)
