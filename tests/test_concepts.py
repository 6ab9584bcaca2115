"""``concepts``: MetaCLIP's substring matching of captions against entry lists."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

import mmcurate
from conftest import image_bytes, make_shard
from mmcurate.steps.annotators import AnnotatorUnavailable
from mmcurate.steps.concepts import ConceptMatcher, builtin_entries, spacing

ENTRIES = ["dog", "hot dog", "new york", "york", "c++", "st. louis", "Golden Retriever", "cat", "dog"]


def _matched(caption: str, entries=ENTRIES) -> list[str]:
    matcher = ConceptMatcher([e.strip().lower() for e in dict.fromkeys(e.lower() for e in entries)])
    return [matcher.entries[i] for i in matcher.match(caption)]


def test_spacing_is_metaclips():
    assert spacing("A Dog,a cat!\tNew\nYork`s") == " a dog , a cat !  new york ` s "  # spaces are never collapsed


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("A DOG.", ["dog"]),  # case and trailing punctuation
        ("dogs and doghouses", []),  # whole entries only, no plural or prefix matching
        ("hot dog stand", ["dog", "hot dog"]),  # nested entries both match
        ("Welcome to New York!", ["new york", "york"]),  # overlapping multi-word entries
        ("new\tyork", ["new york", "york"]),  # tabs and newlines are spaces
        ("new  york", ["york"]),  # two spaces: the entry's single space does not match
        ("my golden retriever:the best", ["golden retriever"]),  # entries are lower-cased too
        ("dog cat", ["dog", "cat"]),  # adjacent entries share the space between them
        ("I love c++", ["c++"]),  # entries are matched literally, not as patterns
        ("St. Louis at night", []),  # MetaCLIP pads entries but never spaces their punctuation
        ("", []),
    ],
)
def test_captions_match_as_metaclip_says(caption, expected):
    assert _matched(caption) == sorted(expected, key=lambda e: [x.lower() for x in ENTRIES].index(e))


def test_the_same_as_metaclips_loop_over_entries_on_skewed_captions():
    """Aho-Corasick finds exactly what MetaCLIP's reference loop (``" e " in spaced``) finds."""
    import random

    rng = random.Random(0)
    words = ["dog", "hot", "new", "york", "cat", "the", "a", ",", ".", "!", "golden", "retriever", "c++", "st.", "louis"]
    weights = [30, 5, 5, 5, 3, 20, 20, 4, 4, 2, 2, 2, 1, 1, 1]
    entries = sorted({e.lower() for e in ENTRIES})
    matcher = ConceptMatcher(entries)
    for _ in range(2000):
        caption = "".join(rng.choice([" ", "  ", "", "\t"]) + w for w in rng.choices(words, weights, k=rng.randint(0, 12)))
        reference = [i for i, e in enumerate(entries) if f" {e} " in spacing(caption)]
        assert matcher.match(caption) == reference, caption


def test_half_a_million_entries_build_and_match():
    entries = [f"concept{i:06d}" for i in range(500_000)] + ["dog"]
    matcher = ConceptMatcher(entries)
    found = matcher.match("A concept499999, a dog and concept000000 but not concept1234567.")
    assert [entries[i] for i in found] == ["concept000000", "concept499999", "dog"]


def test_builtin_imagenet_holds_open_clips_class_names():
    names = builtin_entries("imagenet")
    assert len(names) == 1000 and names[0] == "tench" and "Golden Retriever" in names


def _recipe(entries: str) -> mmcurate.Recipe:
    return mmcurate.Recipe.from_dict({"name": "c", "steps": [{"annotate": "concepts", "entries": entries}, {"filter": "concept_count >= 1"}]})


def test_through_the_engine_with_a_file_and_a_builtin_list(tmp_path, client):
    captions = ["a golden retriever on the beach", "Tench, caught today!", "nothing to see", "a red fox; a tench"]
    shard = make_shard(tmp_path / "000000.tar", [(f"k{i}", {"jpg": image_bytes(8, 8, seed=i), "txt": c.encode()}) for i, c in enumerate(captions)])
    entries = tmp_path / "entries.txt"
    entries.write_text("Tench\n\nred fox\n")
    out = tmp_path / "run"
    result = mmcurate.curate(str(shard), _recipe(str(entries)), out, client=client, quiet=True)
    rows = {r["key"]: r for r in mmcurate.open_run(out).annotations().to_pylist()}
    assert rows["k1"]["concepts"] == ["tench"] and rows["k3"]["concepts"] == ["tench", "red fox"]
    assert rows["k0"]["concept_count"] == 0 and result.kept == 2
    assert result.computed["concepts"] == 4

    # Same list: nothing recomputed. Edited list (content is in the fingerprint): all recomputed.
    again = mmcurate.curate(str(shard), _recipe(str(entries)), out, client=client, quiet=True)
    assert again.computed["concepts"] == 0
    entries.write_text("golden retriever\n")
    edited = mmcurate.curate(str(shard), _recipe(str(entries)), out, client=client, quiet=True, overwrite=True)
    assert edited.computed["concepts"] == 4 and edited.kept == 1

    imagenet = mmcurate.curate(str(shard), _recipe("builtin:imagenet"), tmp_path / "run2", client=client, quiet=True)
    decisions = {r["key"]: r["kept"] for r in pq.read_table(imagenet.decisions_path).to_pylist()}
    assert decisions == {"k0": True, "k1": True, "k2": False, "k3": True}
    assert json.loads((tmp_path / "run2" / "run.json").read_text())["resolved"]["concepts"]["entries"] == 1000 - 2  # two names repeat


def test_a_missing_list_is_reported_before_any_work(tmp_path, client):
    make_shard(tmp_path / "x.tar", [("k", {"txt": b"a dog"})])
    with pytest.raises(AnnotatorUnavailable, match="step concepts .concepts.: concepts.entries: cannot read .*nope.txt"):
        mmcurate.curate(str(tmp_path / "x.tar"), _recipe(str(tmp_path / "nope.txt")), tmp_path / "run", client=client, quiet=True)
    with pytest.raises(AnnotatorUnavailable, match="no built-in entry list 'wordnet'"):
        mmcurate.curate(str(tmp_path / "x.tar"), _recipe("builtin:wordnet"), tmp_path / "run", client=client, quiet=True)


def test_the_annotators_command_lists_the_new_annotators(capsys):
    from mmcurate.cli import main

    assert main(["annotators"]) == 0
    printed = capsys.readouterr().out
    for line in ("columns: concepts, concept_count", "columns: caption_lang, caption_lang_confidence", "columns: pdq, pdq_quality", "columns: md5"):
        assert line in printed
