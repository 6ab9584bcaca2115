from pathlib import Path

import pytest

from mmcurate import Recipe, RecipeError
from mmcurate.recipe import DedupStep, FilterStep


def test_builtin_recipes_load_by_name():
    default = Recipe.load("default")
    basic = Recipe.load("datacomp-basic")
    assert default.name == "default"
    assert [s.id for s in basic.steps if isinstance(s, FilterStep)] == ["caption", "english", "image_size"]
    assert isinstance(basic.steps[-1], DedupStep)


def test_datacomp_basic_encodes_the_published_rule():
    recipe = Recipe.load("datacomp-basic")
    caption, english, size = [s.expr for s in recipe.steps if isinstance(s, FilterStep)]
    assert english({"caption_lang": "en"}) and not english({"caption_lang": "de"})
    ok = {"caption_valid_utf8": True, "caption_words": 3, "caption_chars": 6}
    assert caption(ok)
    assert not caption({**ok, "caption_words": 2})
    assert not caption({**ok, "caption_chars": 5})
    img = {"width": 200, "height": 600, "aspect_ratio": 3.0}
    assert size(img)
    assert not size({**img, "width": 199})
    assert not size({**img, "aspect_ratio": 3.01})


def test_round_trip_through_plain_data():
    recipe = Recipe.load("default")
    assert Recipe.from_dict(recipe.to_dict()) == recipe


def test_set_overrides_filters_params_and_output():
    recipe = Recipe.load(
        "default",
        ["image_size.expr=width >= 300", "image_info.max_pixels=1000", "output.samples_per_shard=7"],
    )
    size = next(s for s in recipe.steps if s.id == "image_size")
    assert size.expr.text == "width >= 300"
    assert next(s for s in recipe.steps if s.id == "image_info").config.max_pixels == 1000
    assert recipe.output.samples_per_shard == 7


@pytest.mark.parametrize(
    "override,message",
    [
        ("image_info.bogus=1", "step 1 (image_info): unknown field(s) bogus"),
        ("nosuchstep.x=1", "no step 'nosuchstep'"),
        ("image_info.max_pixels=lots", "field 'max_pixels': expected int"),
        ("image_size.expr=width >", "step 3 (image_size): field 'filter'"),
        ("output.shard=3", "output: unknown field(s) shard"),
        ("justtext", "expected STEP.PARAM=VALUE"),
    ],
)
def test_bad_overrides_name_the_step_and_field(override, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Recipe.load("default", [override])


def test_errors_name_the_file_step_and_field(tmp_path: Path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: bad\nsteps:\n  - annotate: image_info\n  - filter: 'clip_score >= 0.3'\n")
    with pytest.raises(RecipeError) as err:
        Recipe.load(str(path))
    assert str(path) in str(err.value)
    assert "step 2 (filter_1)" in str(err.value)
    assert "clip_score" in str(err.value) and "not produced by an earlier annotate step" in str(err.value)


@pytest.mark.parametrize(
    "text,message",
    [
        ("name: x\nsteps: []\n", "'steps' must be a non-empty list"),
        ("steps:\n  - annotate: image_info\n", "'name'"),
        ("name: x\nsteps:\n  - annotate: nope\n", "unknown annotator 'nope'"),
        ("name: x\nsteps:\n  - annotate: image_info\n    filter: 'width > 1'\n", "exactly one of"),
        ("name: x\nsteps:\n  - annotate: image_info\n  - dedup: fuzzy\n", "unknown method 'fuzzy'"),
        ("name: x\nsteps:\n  - annotate: image_info\n  - annotate: image_info\n", "used twice"),
        ("name: x\nsteps: [\n", "not valid YAML"),
        ("name: x\nsteps:\n  - annotate: image_info\n    max_pixels: !!python/object/apply:os.system ['true']\n", "not valid YAML"),
    ],
)
def test_invalid_recipes_fail_before_any_work(tmp_path: Path, text, message):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=message):
        Recipe.load(str(path))


def test_unknown_recipe_name_lists_the_builtins():
    with pytest.raises(RecipeError, match="built-in recipes: .*datacomp-basic, .*default"):
        Recipe.load("nope")


@pytest.mark.parametrize(
    "steps,message",
    [
        (
            "  - annotate: phash\n  - dedup: phash\n    mirror: true\n",
            "step 2 (dedup_phash): field 'mirror': column 'phash_mirror' is not produced by an earlier annotate step; "
            "set mirror: true on the step that computes phash",
        ),
        (
            "  - annotate: caption_info\n  - id: words\n    filter: \"caption_words >= '5'\"\n",
            "step 2 (words): field 'filter': caption_words >= '5' is never true: caption_words is a number column "
            "and '5' is a string; write caption_words >= 5",
        ),
        (
            "  - annotate: image_info\n  - filter: '" + "(" * 1000 + "width > 1" + ")" * 1000 + "'\n",
            "step 2 (filter_1): field 'filter': parentheses or 'not' nest more than 64 deep",
        ),
    ],
    ids=["mirror without the mirror hash", "number against string", "1000 parentheses"],
)
def test_recipes_that_could_only_fail_late_are_refused_before_any_work(tmp_path: Path, steps, message):
    """Each of these used to pass validation, then crash after all the work (a mirror column
    the hash step never stores), drop every sample (a number compared with a string) or
    raise RecursionError."""
    from conftest import make_shard, simple_samples

    import mmcurate

    path = tmp_path / "late.yaml"
    path.write_text("name: late\nsteps:\n" + steps)
    with pytest.raises(RecipeError) as err:
        Recipe.load(str(path))
    assert str(err.value).startswith(f"{path}: {message}")
    shard = make_shard(tmp_path / "000000.tar", simple_samples("k", 2))
    with pytest.raises(RecipeError):
        mmcurate.curate(str(shard), str(path), tmp_path / "out", quiet=True)
    assert not (tmp_path / "out").exists()


def test_mirror_dedup_passes_when_the_hash_step_stores_the_mirror_column():
    recipe = Recipe.from_dict({"name": "m", "steps": [{"annotate": "phash", "mirror": True}, {"dedup": "phash", "mirror": True}]})
    assert recipe.steps[-1].columns == ["phash", "phash_mirror"]


@pytest.mark.parametrize(
    "steps,message",
    [
        (
            [{"annotate": "image_info"}, {"filtr": "width > 3"}],
            "step 2 (step_2): a step is a mapping with exactly one of 'annotate', 'filter', 'blocklist', 'dedup', 'keep_top', 'balance', 'prune', 'target'; did you mean 'filter'?",
        ),
        ([{"annotate": "image_info"}, {"filter": "width > 3", "idd": "big"}], "step 2 (filter_1): unknown field(s) idd (allowed: filter, id); did you mean 'id'?"),
        ([{"annotate": "image_info", "idd": "x"}], "step 1 (image_info): unknown field(s) idd (allowed: annotate, id, max_pixels); did you mean 'id'?"),
        ([{"annotate": "caption_info"}, {"keep_top": "caption_words", "fractoin": 0.5}], "(allowed: fraction, id, keep_top); did you mean 'fraction'?"),
        ([{"annotate": "image_info"}, {"filter": "mode == RGB"}], "column(s) RGB not produced by an earlier annotate step (available: aspect_ratio, format, height, image_bytes, mode, width); quote strings: mode == 'RGB'"),
        ([{"annotate": "image_info"}, {"filter": "widht >= 64"}], "column(s) widht not produced by an earlier annotate step (available: aspect_ratio, format, height, image_bytes, mode, width); did you mean 'width'?"),
        ([{"annotate": "image_info"}, {"filter": "mode in ['RGB', 3]"}], "field 'filter': mode in ['RGB', 3] is never true for 3"),
    ],
    ids=["misspelt kind", "misspelt id", "misspelt id on annotate", "misspelt fraction", "unquoted string", "misspelt column", "list of mixed kinds"],
)
def test_misspellings_suggest_the_name_and_list_what_is_allowed(steps, message):
    with pytest.raises(RecipeError) as err:
        Recipe.from_dict({"name": "x", "steps": steps})
    assert message in str(err.value)


def test_filters_with_functions_and_lists_validate():
    recipe = Recipe.from_dict({"name": "x", "steps": [{"annotate": "image_info"}, {"id": "big", "filter": "min(width, height) >= 224 and mode in ['RGB', 'L']"}]})
    step = recipe.step("big")
    assert step.expr({"width": 300, "height": 224, "mode": "RGB"}) and not step.expr({"width": 300, "height": 224, "mode": "CMYK"})
