import pytest

from mmcurate.steps.expr import ExprError, parse


@pytest.mark.parametrize(
    "text,row,expected",
    [
        ("width >= 200", {"width": 200}, True),
        ("width >= 200", {"width": 199}, False),
        ("width >= 200 and height >= 200", {"width": 300, "height": 100}, False),
        ("width < 10 or height < 10", {"width": 300, "height": 5}, True),
        ("not caption_valid_utf8", {"caption_valid_utf8": False}, True),
        ("2 <= duration <= 60", {"duration": 61}, False),
        ("2 <= duration <= 60", {"duration": 2.0}, True),
        ("format == 'PNG'", {"format": "PNG"}, True),
        ('format != "PNG"', {"format": "JPEG"}, True),
        ("(a > 1 or b > 1) and c", {"a": 2, "b": 0, "c": True}, True),
        ("x >= 1.5e2", {"x": 150}, True),
        ("x == null", {}, True),
        ("x != null", {"x": 0}, True),
        ("loudness_lufs >= -45", {"loudness_lufs": -23.5}, True),
        ("loudness_lufs >= -45", {"loudness_lufs": -50.0}, False),
        ("-0.5 < x < -.25", {"x": -0.3}, True),
    ],
)
def test_expressions_evaluate_like_their_text_reads(text, row, expected):
    assert parse(text)(row) is expected


def test_missing_or_mistyped_values_fail_instead_of_raising():
    assert parse("width >= 200")({}) is False
    assert parse("width >= 200")({"width": None}) is False
    assert parse("width >= 200")({"width": "wide"}) is False


def test_failure_names_the_first_failing_clause():
    expr = parse("width >= 64 and caption_words > 2 and aspect_ratio <= 3")
    assert expr.failure({"width": 100, "caption_words": 1, "aspect_ratio": 1}) == "caption_words > 2"
    assert expr.failure({"width": 100, "caption_words": 3, "aspect_ratio": 1}) is None
    assert expr.columns == {"width", "caption_words", "aspect_ratio"}


@pytest.mark.parametrize(
    "text",
    ["", "width >", "width >= 200 and", "__import__('os').system('x')", "a + b", "a - 1 > 0", "--1 < a", "(a > 1", "a b", "lambda: 1", "x[0] > 1"],
)
def test_anything_outside_the_grammar_is_refused(text):
    with pytest.raises(ExprError):
        parse(text)


def test_comparisons_list_each_threshold_column_first_and_sliders_move_one():
    from mmcurate.steps.expr import Comparison

    expr = parse("width >= 64 and 64 <= height and (2 <= x < 5.5 or not ok) and kind == 'jpg'")
    found = expr.comparisons()
    assert found == [Comparison("width", ">=", 64), Comparison("height", ">=", 64), Comparison("x", ">=", 2), Comparison("x", "<", 5.5)]
    moved = expr.with_threshold(found[3], 9).with_threshold(found[1], 10)
    assert moved.text == "width >= 64 and 10 <= height and (2 <= x < 9 or not ok) and kind == 'jpg'"
    assert moved({"width": 64, "height": 10, "x": 8, "ok": False, "kind": "jpg"}) and not expr({"width": 64, "height": 10, "x": 8, "ok": False, "kind": "jpg"})


@pytest.mark.parametrize(
    "text", ["(" * 1000 + "x" + ")" * 1000, "not " * 1000 + "x", "(" * 65 + "x" + ")" * 65], ids=["1000 parens", "1000 nots", "65 parens"]
)
def test_deep_nesting_is_a_clear_error_not_a_recursion_error(text):
    with pytest.raises(ExprError, match="nest more than 64 deep"):
        parse(text)


def test_nesting_up_to_the_limit_parses():
    assert parse("(" * 64 + "x > 1" + ")" * 64)({"x": 2})
    assert parse("not " * 64 + "x")({"x": True})  # an even number of nots


KINDS = {"caption_words": "number", "sha256": "string", "has_audio": "boolean", "video_phash": "other"}


@pytest.mark.parametrize(
    "text,message",
    [
        ("caption_words >= '5'", "caption_words >= '5' is never true: caption_words is a number column and '5' is a string; write caption_words >= 5"),
        ("'x' < caption_words", "'x' is a string and caption_words is a number column; compare caption_words with a number"),
        ("sha256 == 5", "sha256 is a string column and 5 is a number; write sha256 == '5'"),
        ("sha256 != true", "sha256 != true is always true"),
        ("has_audio == 'yes'", "has_audio is a boolean column"),
        ("2 <= caption_words <= '9'", "write caption_words <= 9"),
        ("caption_words > sha256", "caption_words is a number column and sha256 is a string column"),
        ("video_phash == 3", "compare video_phash only with null"),
        ("width > 1 and (sha256 == 'a' or not (caption_words < '3'))", "caption_words < '3' is never true"),
    ],
)
def test_comparing_values_of_different_kinds_is_refused_with_a_hint(text, message):
    with pytest.raises(ExprError) as err:
        parse(text).check_kinds(KINDS)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "text", ["caption_words >= 5", "has_audio == 1", "has_audio and sha256 == 'ab'", "video_phash == null", "sha256 != null", "unknown > 'x'"]
)
def test_comparisons_of_one_kind_or_with_null_pass(text):
    parse(text).check_kinds(KINDS)
