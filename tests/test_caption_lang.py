"""``caption_lang``: the caption's language from py3langid's bundled model, and datacomp-basic's English rule."""

from __future__ import annotations

import pyarrow.parquet as pq

import mmcurate
from conftest import image_bytes, make_shard

CAPTIONS = {
    "en": "a photo of a brown dog running on the beach at sunset",
    "de": "ein brauner Hund läuft bei Sonnenuntergang am Strand",
    "fr": "un chien brun qui court sur la plage au coucher du soleil",
    "es": "un perro marrón corriendo en la playa al atardecer",
    "none": "1234 -- 5678 !!",
}


def test_languages_and_english_filter_through_the_engine(tmp_path, client):
    samples = [(key, {"jpg": image_bytes(8, 8, seed=i), "txt": text.encode()}) for i, (key, text) in enumerate(CAPTIONS.items())]
    shard = make_shard(tmp_path / "000000.tar", samples)
    recipe = mmcurate.Recipe.from_dict({"name": "lang", "steps": [{"annotate": "caption_lang"}, {"id": "english", "filter": "caption_lang == 'en'"}]})
    result = mmcurate.curate(str(shard), recipe, tmp_path / "run", client=client, quiet=True)
    rows = {r["key"]: r for r in mmcurate.open_run(result.out).annotations().to_pylist()}
    assert {k: rows[k]["caption_lang"] for k in CAPTIONS} == {"en": "en", "de": "de", "fr": "fr", "es": "es", "none": "und"}
    assert rows["en"]["caption_lang_confidence"] > 0.9 and rows["none"]["caption_lang_confidence"] == 0
    assert all(0 <= r["caption_lang_confidence"] <= 1 for r in rows.values())
    kept = [r["key"] for r in pq.read_table(result.decisions_path).to_pylist() if r["kept"]]
    assert kept == ["en"]


def test_datacomp_basic_keeps_only_english_captions():
    recipe = mmcurate.Recipe.load("datacomp-basic")
    assert recipe.step("english").expr.text == "caption_lang == 'en'"
    ids = [s.id for s in recipe.steps]
    assert ids.index("caption_lang") < ids.index("english") < ids.index("image_info")
