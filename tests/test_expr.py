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


@pytest.mark.parametrize(
    "text,row,expected",
    [
        ("min(width, height) >= 224", {"width": 300, "height": 224}, True),
        ("min(width, height) >= 224", {"width": 300, "height": 223}, False),
        ("min(width, height) >= 224", {"width": 300}, False),  # a function of a missing value is missing
        ("max(width, height) <= 4096", {"width": 12000, "height": 10}, False),
        ("max(a, b, c) == 3", {"a": 1, "b": 3, "c": 2}, True),
        ("abs(loudness_lufs) < 30", {"loudness_lufs": -23.0}, True),
        ("mode in ['RGB', 'L']", {"mode": "L"}, True),
        ("mode in ['RGB', 'L']", {"mode": "CMYK"}, False),
        ("mode not in ['CMYK']", {"mode": "RGB"}, True),
        ("format in ['PNG', null]", {}, True),
        ("caption_words in [1, 2, 3] and min(width, height) > 10", {"caption_words": 2, "width": 11, "height": 20}, True),
    ],
)
def test_functions_and_lists_a_user_would_write(text, row, expected):
    expr = parse(text)
    assert expr(row) is expected
    assert parse(expr.text).text == expr.text  # the source round-trips (sliders rewrite it)


@pytest.mark.parametrize(
    "text,message",
    [
        ("len(caption) > 3", "unknown function 'len' at position 0 in 'len(caption) > 3'; functions: abs, max, min"),
        ("abs(a, b) > 1", "abs() takes one argument, got 2"),
        ("min(a) > 1", "min() takes 2 or more arguments, got 1"),
        ("format in [JPEG, PNG]", "quote strings: format in ['JPEG', 'PNG']"),
        ("x in [1 2]", "expected ',' or ']'"),
        ("x in 3", "expected a list such as [1, 2] after 'in'"),
        ("mode = 'RGB'", "unexpected character '=' at position 5 in \"mode = 'RGB'\"; compare with =="),
    ],
)
def test_mistakes_in_functions_and_lists_say_how_to_fix_them(text, message):
    with pytest.raises(ExprError) as err:
        parse(text)
    assert message in str(err.value)


KINDS_IMAGE = {"width": "number", "height": "number", "mode": "string"}


@pytest.mark.parametrize(
    "text,message",
    [
        ("abs(mode) > 1", "abs(mode): abs() takes numbers, but mode is a string column"),
        ("min(width, mode) > 1", "min() takes numbers, but mode is a string column"),
        ("mode in ['RGB', 1]", "mode in ['RGB', 1] is never true for 1: mode is a string column and 1 is a number; list strings only"),
        ("width not in ['5']", "is always true for '5': width is a number column"),
        ("min(width, height) == 'big'", "min(width, height) is a number and 'big' is a string"),
    ],
)
def test_strings_compare_only_with_string_columns_inside_functions_and_lists(text, message):
    with pytest.raises(ExprError) as err:
        parse(text).check_kinds(KINDS_IMAGE)
    assert message in str(err.value)


def test_a_bare_word_compared_with_a_string_column_is_a_quoting_hint():
    assert parse("mode == RGB").quote_hint(KINDS_IMAGE) == "quote strings: mode == 'RGB'"
    assert parse("width > 3 and L != mode").quote_hint(KINDS_IMAGE) == "quote strings: 'L' != mode"
    assert parse("width > heigth").quote_hint(KINDS_IMAGE) == ""


def test_a_table_of_samples_is_decided_at_once_with_nulls_nan_strings_and_lists():
    import pyarrow as pa

    nan = float("nan")
    table = pa.table(
        {
            "w": pa.array([300, None, 300, 300, 100, 300], pa.int64()),
            "r": pa.array([1.0, 1.0, nan, 2.0, 1.0, None], pa.float64()),
            "mode": pa.array(["RGB", "RGB", "L", None, "CMYK", ""], pa.string()),
            "ok": pa.array([True, True, None, True, False, True], pa.bool_()),
        }
    )
    expr = parse("w >= 200 and r <= 3 and mode in ['RGB', 'L', null] and ok")
    assert expr.failures(table) == [None, "w >= 200", "r <= 3", None, "w >= 200", "r <= 3"]
    cases = {
        "r != r": [False, False, True, False, False, False],  # NaN equals nothing; null == null
        "r == null": [False, False, False, False, False, True],
        "min(w, r) >= 1": [True, False, False, True, True, False],  # a function of NaN is NaN, of null is null
        "not (w < 200)": [True, True, True, True, False, True],  # a missing value orders with nothing
        "mode": [True, True, True, False, True, False],  # an empty string is false
        "mode not in ['RGB']": [False, False, True, True, True, True],
        "w == 'RGB' or mode > 'K'": [True, True, True, False, False, False],  # strings order with strings only
        "ok == 1 and r": [True, True, False, True, False, False],  # booleans as 0/1; NaN is true, null false
        "missing == null and not missing": [True] * 6,
    }
    for text, expected in cases.items():
        decided = [reason is None for reason in parse(text).failures(table)]
        assert decided == expected, text
        assert [parse(text)(row) for row in table.to_pylist()] == expected, text  # one sample decides alike
