"""mmcurate.views.browse: galleries read from the input shards, and what-if decisions from stored annotations."""

from __future__ import annotations

import mmcurate
from mmcurate.views.browse import NOT_ANNOTATED, Gallery, preview


def _by_key(table):
    return {r["key"]: r for r in table.to_pylist()}


def test_preview_of_the_runs_own_recipe_matches_its_per_sample_decisions(demo_default):
    run = mmcurate.open_run(demo_default.out)
    decided = _by_key(run.decisions)
    previewed = _by_key(preview(run, run.recipe))
    assert previewed.keys() == decided.keys()
    for key, d in decided.items():
        if d["step"] == "dedup_exact":  # global steps are not re-run: the duplicate passes per-sample steps
            assert previewed[key]["kept"]
        else:
            assert (previewed[key]["kept"], previewed[key]["step"], previewed[key]["reason"]) == (d["kept"], d["step"], d["reason"])


def test_preview_of_a_new_threshold_uses_stored_rows_and_says_what_it_cannot_know(demo_default):
    run = mmcurate.open_run(demo_default.out)
    annotations = _by_key(run.annotations())
    stricter = _by_key(preview(run, ["image_size.expr=width >= 300"]))
    dropped = {k for k, r in stricter.items() if r["step"] == "image_size"}
    assert dropped == {k for k, a in annotations.items() if a.get("width") is not None and a["width"] < 300 and not a.get("error")}
    looser = _by_key(preview(run, run.recipe.replace_step("caption", {"filter": "caption_valid_utf8"})))
    empty = {k for k, r in _by_key(run.decisions).items() if r["reason"] == "fails caption_words >= 1"}
    # their sha256 was never computed (the run dropped them first): preview says so instead of guessing
    assert {k for k, r in looser.items() if r["reason"] == NOT_ANNOTATED} == empty and len(empty) == 5


def test_gallery_shows_media_caption_reason_and_values(demo_default):
    run = mmcurate.open_run(demo_default.out)
    rows = run.dropped_by("image_size").to_pylist()[:2] + run.dropped_by("image_info").to_pylist()
    html = Gallery(run, size=64).grid(rows, columns=["width", "aspect_ratio"])
    assert html.count("<figure") == len(rows) == 7
    assert html.count("data:image/jpeg;base64,") == 2  # the image_info drops cannot be decoded: their reason shows instead
    assert "fails width &gt;= 64" in html and "width 42" in html and "missing_image" in html
