"""Filter expressions: a small, safe grammar over annotation columns (never ``eval``).

Grammar::

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | compare
    compare := atom (OP atom)* | atom ["not"] "in" list
                                        OP: == != < <= > >=  (chains like 2 <= x <= 60)
    atom    := NUMBER | STRING | NAME | true | false | null | "(" expr ")" | FUNC "(" expr ("," expr)* ")"
    list    := "[" [value ("," value)*] "]"      value: NUMBER | STRING | true | false | null
    FUNC    := min | max | abs
    NUMBER  := optional "-", digits, optional fraction and exponent (-45, 0.5, 1e3)

An ordering comparison with a null value is false, so a sample whose column is missing
fails the filter instead of crashing it; ``x == null`` tests for a missing value, and a function
of a missing value is missing (``min(width, height) >= 224`` fails without both). Parentheses
and ``not`` nest at most :data:`MAX_DEPTH` deep. :meth:`Expr.check_kinds` rejects a comparison
that can never be true because its sides are of different kinds (``caption_words >= '5'``), and a
function given a string (``abs(mode)``).

An expression is evaluated column-wise by Arrow over a table of samples (:meth:`Expr.failures`;
one sample is a one-row table). Values compare as in Python: booleans as 0 and 1, strings with
strings; a string and a number (or a list or bytes value and anything but null) are unequal and
order with nothing. NaN equals nothing (``!=`` is true), orders with nothing, is true as a test,
and a function of NaN is NaN. As a test, a missing value is false, a number is true unless 0, a
string or list unless empty. ``x in [a, b]`` is ``x == a or x == b`` (so ``null in [null]`` holds).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["Comparison", "Expr", "ExprError", "FUNCTIONS", "KINDS", "MAX_DEPTH", "kind_of", "parse"]

MAX_DEPTH = 64
"""How deep parentheses and ``not`` may nest (deeper is an error, never a RecursionError)."""
KINDS = ("number", "boolean", "string", "other")
"""Kinds of column values for :meth:`Expr.check_kinds`; numbers and booleans compare with
each other, strings with strings, the rest (lists, bytes) only with null."""


class ExprError(ValueError):
    """An expression that does not parse, with the position of the problem."""


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<number>-?(?:\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?))
      | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
      | (?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,)
      | (?P<name>[A-Za-z_][A-Za-z0-9_.]*)
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"}
FUNCTIONS: dict[str, int] = {"min": 2, "max": 2, "abs": 1}
"""Functions an expression may call, with the fewest arguments each takes (``abs`` takes exactly one)."""
_CHAR_HINTS = {"=": "compare with ==", "&": "write and", "|": "write or", "!": "write not, or != to compare"}
_COMPARE: dict[str, Callable[..., Any]] = {
    "==": pc.equal,
    "!=": pc.not_equal,
    "<": pc.less,
    "<=": pc.less_equal,
    ">": pc.greater,
    ">=": pc.greater_equal,
}


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Column:
    name: str


@dataclass(frozen=True)
class Compare:
    operands: tuple["Node", ...]
    ops: tuple[str, ...]


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    parts: tuple["Node", ...]


@dataclass(frozen=True)
class Not:
    part: "Node"


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple["Node", ...]


@dataclass(frozen=True)
class ListOf:
    values: tuple[Literal, ...]


Node = Union[Literal, Column, Compare, BoolOp, Not, Call, ListOf]


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    tokens: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            at = len(text) - len(text[pos:].lstrip())
            hint = _CHAR_HINTS.get(text[at])
            raise ExprError(f"unexpected character {text[at]!r} at position {at} in {text!r}" + (f"; {hint}" if hint else ""))
        kind = m.lastgroup or ""
        value, start = m.group(kind), m.start(kind)
        if kind == "name" and value in _KEYWORDS:
            kind = value
        tokens.append((kind, value, start))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> tuple[str, str, int]:
        tok = self.peek()
        if tok is None:
            raise ExprError(f"unexpected end of expression {self.text!r}")
        self.i += 1
        return tok

    def parse(self) -> Node:
        if not self.tokens:
            raise ExprError("empty expression")
        node = self.or_()
        tok = self.peek()
        if tok is not None:
            raise ExprError(f"unexpected {tok[1]!r} at position {tok[2]} in {self.text!r}")
        return node

    def _chain(self, word: str, sub: Callable[[], Node]) -> Node:
        parts = [sub()]
        while (tok := self.peek()) is not None and tok[0] == word:
            self.take()
            parts.append(sub())
        return parts[0] if len(parts) == 1 else BoolOp(word, tuple(parts))

    def or_(self) -> Node:
        return self._chain("or", self.and_)

    def and_(self) -> Node:
        return self._chain("and", self.not_)

    def _nested(self, pos: int, sub: Callable[[], Node]) -> Node:
        """``sub()`` one level deeper (a parenthesis or ``not`` at ``pos``)."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ExprError(f"parentheses or 'not' nest more than {MAX_DEPTH} deep (at position {pos}); simplify the expression")
        node = sub()
        self.depth -= 1
        return node

    def not_(self) -> Node:
        tok = self.peek()
        if tok is not None and tok[0] == "not":
            self.take()
            return Not(self._nested(tok[2], self.not_))
        return self.compare()

    def compare(self) -> Node:
        operands = [self.atom()]
        ops: list[str] = []
        while (tok := self.peek()) is not None and tok[1] in _COMPARE:
            ops.append(self.take()[1])
            operands.append(self.atom())
        if not ops and (op := self._in_op()):
            return Compare((operands[0], self.list_(operands[0], op)), (op,))
        return operands[0] if not ops else Compare(tuple(operands), tuple(ops))

    def _in_op(self) -> str | None:
        """``in`` or ``not in`` next (taken), else None."""
        kinds = [t[0] for t in self.tokens[self.i : self.i + 2]]
        if kinds[:1] == ["in"] or kinds == ["not", "in"]:
            self.i += len(kinds) if kinds[0] == "not" else 1
            return "not in" if kinds[0] == "not" else "in"
        return None

    def list_(self, left: Node, op: str) -> ListOf:
        kind, value, pos = self.take()
        if value != "[":
            raise ExprError(f"expected a list such as [1, 2] after {op!r} at position {pos} in {self.text!r}")
        items: list[Node] = []
        while (tok := self.peek()) is not None and tok[1] != "]":
            items.append(self.atom())
            if (tok := self.peek()) is not None and tok[1] == ",":
                self.take()
            elif tok is not None and tok[1] != "]":
                raise ExprError(f"expected ',' or ']' at position {tok[2]} in {self.text!r}")
        self.take()  # "]" (or the end-of-expression error)
        if any(not isinstance(i, Literal) for i in items):
            fixed = ListOf(tuple(Literal(i.name) if isinstance(i, Column) else i for i in items))  # type: ignore[misc]
            raise ExprError(f"a list holds numbers, strings, true, false or null; quote strings: {_source(Compare((left, fixed), (op,)))}")
        return ListOf(tuple(items))  # type: ignore[arg-type]

    def call(self, name: str, pos: int) -> Call:
        if name not in FUNCTIONS:
            raise ExprError(f"unknown function {name!r} at position {pos} in {self.text!r}; functions: {', '.join(sorted(FUNCTIONS))}")
        self.take()  # "("
        args = [self._nested(pos, self.or_)]
        while (tok := self.peek()) is not None and tok[1] == ",":
            self.take()
            args.append(self._nested(pos, self.or_))
        if self.take()[1] != ")":
            raise ExprError(f"expected ')' after the arguments of {name}() in {self.text!r}")
        fewest = FUNCTIONS[name]
        if len(args) < fewest or (name == "abs" and len(args) > 1):
            wanted = "one argument" if name == "abs" else f"{fewest} or more arguments"
            raise ExprError(f"{name}() takes {wanted}, got {len(args)} in {self.text!r}")
        return Call(name, tuple(args))

    def atom(self) -> Node:
        kind, value, pos = self.take()
        if kind == "number":
            return Literal(float(value) if any(c in value for c in ".eE") else int(value))
        if kind == "string":
            return Literal(re.sub(r"\\(.)", r"\1", value[1:-1]))
        if kind in ("true", "false"):
            return Literal(kind == "true")
        if kind == "null":
            return Literal(None)
        if kind == "name":
            if (tok := self.peek()) is not None and tok[1] == "(":
                return self.call(value, pos)
            return Column(value)
        if value == "(":
            node = self._nested(pos, self.or_)
            if self.take()[1] != ")":
                raise ExprError(f"expected ')' in {self.text!r}")
            return node
        raise ExprError(f"unexpected {value!r} at position {pos} in {self.text!r}")


def _columns(node: Node) -> set[str]:
    if isinstance(node, Column):
        return {node.name}
    if isinstance(node, Compare):
        return set().union(*(_columns(n) for n in node.operands))
    if isinstance(node, BoolOp):
        return set().union(*(_columns(n) for n in node.parts))
    if isinstance(node, Not):
        return _columns(node.part)
    if isinstance(node, Call):
        return set().union(*(_columns(n) for n in node.args))
    return set()


def kind_of(dtype: pa.DataType) -> str:
    """The :data:`KINDS` entry of a column's Arrow type."""
    if pa.types.is_integer(dtype) or pa.types.is_floating(dtype):
        return "number"
    if pa.types.is_boolean(dtype):
        return "boolean"
    return "string" if pa.types.is_string(dtype) or pa.types.is_large_string(dtype) else "other"


def _literal(value: Any, n: int) -> pa.Array:
    if value is None:
        return pa.nulls(n)
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**63:
        value = float(value)
    return pa.repeat(pa.scalar(value), n)


def _value(node: Node, table: pa.Table) -> pa.Array:
    """``node``'s value for every row of ``table`` (null: missing)."""
    if isinstance(node, Literal):
        return _literal(node.value, table.num_rows)
    if isinstance(node, Column):
        if node.name not in table.column_names:
            return pa.nulls(table.num_rows)
        return table.column(node.name).combine_chunks()
    if isinstance(node, Call):
        return _call(node.name, [_value(a, table) for a in node.args])
    if isinstance(node, Compare):
        result = _literal(True, table.num_rows)
        for op, left, right in zip(node.ops, node.operands, node.operands[1:]):
            lhs = _value(left, table)
            if isinstance(right, ListOf):
                found = _literal(False, table.num_rows)
                for item in right.values:
                    found = pc.or_(found, _pair("==", lhs, _value(item, table)))
                test = found if op == "in" else pc.invert(found)
            else:
                test = _pair(op, lhs, _value(right, table))
            result = pc.and_(result, test)
        return result
    return _test(node, table)


def _test(node: Node, table: pa.Table) -> pa.Array:
    """``node`` as a test (true/false for every row, never null): a missing value is false."""
    if isinstance(node, Not):
        return pc.invert(_test(node.part, table))
    if isinstance(node, BoolOp):
        combine = pc.and_ if node.op == "and" else pc.or_
        result = _test(node.parts[0], table)
        for part in node.parts[1:]:
            result = combine(result, _test(part, table))
        return result
    value = _value(node, table)
    kind = kind_of(value.type)
    if pa.types.is_null(value.type):
        truthy = _literal(False, len(value))
    elif kind == "boolean":
        truthy = value
    elif kind == "number":
        truthy = pc.not_equal(value, 0)  # NaN is true, as in Python
    elif kind == "string" or pa.types.is_binary(value.type) or pa.types.is_large_binary(value.type):
        truthy = pc.greater(pc.binary_length(value), 0)
    elif pa.types.is_list(value.type) or pa.types.is_large_list(value.type) or pa.types.is_fixed_size_list(value.type):
        truthy = pc.greater(pc.list_value_length(value), 0)
    else:
        truthy = pc.is_valid(value)
    return pc.fill_null(truthy, False)


def _numeric(value: pa.Array) -> pa.Array:
    """Booleans as 0/1, so they compare with numbers as in Python."""
    return value.cast(pa.int64()) if pa.types.is_boolean(value.type) else value


def _call(name: str, args: list[pa.Array]) -> pa.Array:
    """``name(*args)``: null when an argument is missing or not a number; NaN when one is NaN."""
    n = len(args[0])
    if any(kind_of(a.type) not in ("number", "boolean") for a in args):
        return pa.nulls(n)
    args = [_numeric(a) for a in args]
    if name == "abs":
        return pc.abs(args[0])
    result = (pc.min_element_wise if name == "min" else pc.max_element_wise)(*args, skip_nulls=False)
    floats = [a for a in args if pa.types.is_floating(a.type)]
    if floats:
        nan = functools.reduce(pc.or_, [pc.is_nan(a) for a in floats])
        result = pc.if_else(nan, _literal(float("nan"), n), result.cast(pa.float64()))
    return result


def _pair(op: str, left: pa.Array, right: pa.Array) -> pa.Array:
    """``left OP right`` row by row: null equals only null and orders with nothing; values of
    kinds that do not compare (a string and a number, a list) are unequal; NaN equals nothing."""
    n = len(left)
    kinds = {kind_of(left.type), kind_of(right.type)}
    null = pc.or_(pc.is_null(left), pc.is_null(right))
    if pa.types.is_null(left.type) or pa.types.is_null(right.type):
        compared = _literal(op == "!=", n)
    elif kinds <= {"number", "boolean"} or kinds == {"string"}:
        if kinds != {"boolean"} or op not in ("==", "!="):
            left, right = _numeric(left), _numeric(right)
        compared = pc.fill_null(_COMPARE[op](left, right), False)
    else:
        compared = _literal(op == "!=", n)
    if op in ("==", "!="):
        both = pc.and_(pc.is_null(left), pc.is_null(right))
        return pc.if_else(null, both if op == "==" else pc.invert(both), compared)
    return pc.if_else(null, False, compared)


def _source(node: Node) -> str:
    if isinstance(node, Literal):
        v = node.value
        return "null" if v is None else ("true" if v is True else "false" if v is False else repr(v))
    if isinstance(node, Column):
        return node.name
    if isinstance(node, Call):
        return f"{node.name}({', '.join(_source(a) for a in node.args)})"
    if isinstance(node, ListOf):
        return f"[{', '.join(_source(v) for v in node.values)}]"
    if isinstance(node, Not):
        return f"not {_source(node.part)}"
    if isinstance(node, BoolOp):
        return f" {node.op} ".join(
            f"({_source(p)})" if isinstance(p, BoolOp) else _source(p) for p in node.parts
        )
    text = _operand(node.operands[0])
    for op, operand in zip(node.ops, node.operands[1:]):
        text += f" {op} {_operand(operand)}"
    return text


def _operand(node: Node) -> str:
    return _source(node) if isinstance(node, (Literal, Column, Call, ListOf)) else f"({_source(node)})"


def _kind(node: Node, kinds: Mapping[str, str]) -> str | None:
    """The kind of an operand's value (None: null, or a column whose kind is not known)."""
    if isinstance(node, Column):
        return kinds.get(node.name)
    if isinstance(node, Literal):
        if node.value is None:
            return None
        return "string" if isinstance(node.value, str) else "boolean" if isinstance(node.value, bool) else "number"
    if isinstance(node, Call):
        return "number"
    return "boolean"  # a parenthesised test


def _comparable(a: str, b: str) -> bool:
    numeric = ("number", "boolean")
    return (a in numeric and b in numeric) or (a == b == "string")


def _describe(node: Node, kind: str) -> str:
    if isinstance(node, Column):
        return f"{node.name} is a {'list or bytes' if kind == 'other' else kind} column"
    if isinstance(node, Literal):
        return f"{_source(node)} is a {kind}"
    if isinstance(node, Call):
        return f"{_source(node)} is a number"
    return f"({_source(node)}) is a boolean"


def _as_number(text: str) -> Literal | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return Literal(int(value) if value.is_integer() else value)


def _hint(pair: Compare, column: Node, kind: str, other: Node) -> str:
    """How to write ``pair`` (``column``, of ``kind``, against ``other``) so it can be true."""
    if not isinstance(column, Column):
        return "compare values of one kind"
    if kind == "other":
        return f"compare {column.name} only with null"
    if isinstance(other, Literal):
        fixed = _as_number(other.value) if isinstance(other.value, str) else Literal(_source(other))
        if fixed is not None:
            operands = tuple(fixed if o is other else o for o in pair.operands)
            return f"write {_source(Compare(operands, pair.ops))}"
    return f"compare {column.name} with a {kind}"


def _check_kinds(node: Node, kinds: Mapping[str, str]) -> None:
    if isinstance(node, BoolOp):
        for part in node.parts:
            _check_kinds(part, kinds)
    elif isinstance(node, Not):
        _check_kinds(node.part, kinds)
    elif isinstance(node, Call):
        for arg in node.args:
            _check_kinds(arg, kinds)
            kind = _kind(arg, kinds)
            if kind not in (None, "number", "boolean"):
                raise ExprError(f"{_source(node)}: {node.name}() takes numbers, but {_describe(arg, kind)}")
    elif isinstance(node, Compare):
        for operand in node.operands:
            _check_kinds(operand, kinds)
        for op, left, right in zip(node.ops, node.operands, node.operands[1:]):
            if isinstance(right, ListOf):
                _check_list(Compare((left, right), (op,)), kinds)
                continue
            a, b = _kind(left, kinds), _kind(right, kinds)
            if a is None or b is None or _comparable(a, b):
                continue
            column, kind, other = (right, b, left) if isinstance(right, Column) and not isinstance(left, Column) else (left, a, right)
            pair = Compare((left, right), (op,))
            verdict = "always true" if op == "!=" else "never true"
            raise ExprError(f"{_source(pair)} is {verdict}: {_describe(left, a)} and {_describe(right, b)}; {_hint(pair, column, kind, other)}")


def _check_list(pair: Compare, kinds: Mapping[str, str]) -> None:
    """``x in [...]``: every listed value must be of ``x``'s kind (or null)."""
    left, values = pair.operands[0], pair.operands[1]
    a = _kind(left, kinds)
    for value in values.values:  # type: ignore[union-attr]
        b = _kind(value, kinds)
        if a is not None and b is not None and not _comparable(a, b):
            verdict = "always true" if pair.ops[0] == "not in" else "never true"
            raise ExprError(f"{_source(pair)} is {verdict} for {_source(value)}: {_describe(left, a)} and {_describe(value, b)}; list {a}s only")


def _quote_hints(node: Node, missing: set[str], kinds: Mapping[str, str]) -> list[str]:
    """``mode == RGB`` with RGB no column but mode a string column: ``mode == 'RGB'``."""
    if isinstance(node, BoolOp):
        return [h for p in node.parts for h in _quote_hints(p, missing, kinds)]
    if isinstance(node, Not):
        return _quote_hints(node.part, missing, kinds)
    if not isinstance(node, Compare):
        return []
    hints = []
    for op, left, right in zip(node.ops, node.operands, node.operands[1:]):
        pair = (left, right)
        bare = [o for o in pair if isinstance(o, Column) and o.name in missing]
        if len(bare) == 1 and any(isinstance(o, Column) and kinds.get(o.name) == "string" for o in pair):
            fixed = tuple(Literal(o.name) if o is bare[0] else o for o in pair)
            hints.append(_source(Compare(fixed, (op,))))
    return hints


_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


@dataclass(frozen=True)
class Comparison:
    """One ``column OP number`` test inside an expression, column first (``64 <= w`` reads ``w >= 64``)."""

    column: str
    op: str
    value: float


def _number(node: Node) -> bool:
    return isinstance(node, Literal) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool)


def _comparisons(node: Node) -> list[Comparison]:
    if isinstance(node, BoolOp):
        return [c for p in node.parts for c in _comparisons(p)]
    if isinstance(node, Not):
        return _comparisons(node.part)
    found = []
    if isinstance(node, Compare):
        for op, left, right in zip(node.ops, node.operands, node.operands[1:]):
            if isinstance(left, Column) and _number(right):
                found.append(Comparison(left.name, op, right.value))
            elif _number(left) and isinstance(right, Column):
                found.append(Comparison(right.name, _FLIPPED[op], left.value))
    return found


def _with_threshold(node: Node, old: Comparison, value: float) -> Node:
    if isinstance(node, BoolOp):
        return BoolOp(node.op, tuple(_with_threshold(p, old, value) for p in node.parts))
    if isinstance(node, Not):
        return Not(_with_threshold(node.part, old, value))
    if not isinstance(node, Compare):
        return node
    operands = list(node.operands)
    for i, (op, left, right) in enumerate(zip(node.ops, node.operands, node.operands[1:])):
        if left == Column(old.column) and _number(right) and (op, right.value) == (old.op, old.value):
            operands[i + 1] = Literal(value)
        elif right == Column(old.column) and _number(left) and (_FLIPPED[op], left.value) == (old.op, old.value):
            operands[i] = Literal(value)
    return Compare(tuple(operands), node.ops)


@dataclass(frozen=True)
class Expr:
    """A parsed filter expression: ``Expr.parse("width >= 200 and caption_words > 2")``."""

    text: str
    root: Node

    @classmethod
    def parse(cls, text: str) -> "Expr":
        return cls(text, _Parser(text).parse())

    @property
    def columns(self) -> set[str]:
        """Column names the expression reads."""
        return _columns(self.root)

    def check_kinds(self, kinds: Mapping[str, str]) -> None:
        """Raise :class:`ExprError` for a comparison of values of different kinds (one of
        :data:`KINDS` per column in ``kinds``; null compares with any), which no sample can pass."""
        _check_kinds(self.root, kinds)

    def quote_hint(self, kinds: Mapping[str, str]) -> str:
        """For names that are no column (of ``kinds``): "quote strings: mode == 'RGB'" where one is
        compared with a string column; else ""."""
        hints = _quote_hints(self.root, self.columns - set(kinds), kinds)
        return f"quote strings: {', '.join(hints)}" if hints else ""

    def __call__(self, row: Mapping[str, Any]) -> bool:
        """Whether one sample with columns ``row`` passes (what :meth:`failures` decides for it)."""
        return self.failure(row) is None

    def failures(self, table: pa.Table) -> list[str | None]:
        """For each row of ``table`` (a column per name; one it lacks is missing, so null), evaluated
        column-wise by Arrow: None when the row passes, else the failing clause (the first failing
        conjunct of a top-level ``and``)."""
        parts = self.root.parts if isinstance(self.root, BoolOp) and self.root.op == "and" else (self.root,)
        reasons = np.full(table.num_rows, None, dtype=object)
        for part in reversed(parts):  # the first failing part is written last
            reasons[~_test(part, table).to_numpy(zero_copy_only=False)] = _source(part)
        return reasons.tolist()

    def comparisons(self) -> list[Comparison]:
        """Every ``column OP number`` test, in reading order: the thresholds a report draws."""
        return _comparisons(self.root)

    def with_threshold(self, comparison: Comparison, value: float) -> "Expr":
        """A copy where ``comparison`` (one of :meth:`comparisons`) tests ``value`` instead (what a slider moves)."""
        root = _with_threshold(self.root, comparison, value)
        return Expr(_source(root), root)

    def failure(self, row: Mapping[str, Any]) -> str | None:
        """:meth:`failures` of the one sample with columns ``row``."""
        table = pa.table({"": [None], **{c: pa.array([row.get(c)]) for c in self.columns}})  # "": one row, whatever the columns
        return self.failures(table)[0]


def parse(text: str) -> Expr:
    """Parse ``text`` into an :class:`Expr`, raising :class:`ExprError` when it is not valid."""
    return Expr.parse(text)
