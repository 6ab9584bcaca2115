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
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Union

__all__ = ["Comparison", "Expr", "ExprError", "FUNCTIONS", "KINDS", "MAX_DEPTH", "parse"]

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
FUNCTIONS: dict[str, tuple[Callable[..., Any], int]] = {"min": (min, 2), "max": (max, 2), "abs": (abs, 1)}
"""Functions an expression may call, with the fewest arguments each takes (``abs`` takes exactly one)."""
_CHAR_HINTS = {"=": "compare with ==", "&": "write and", "|": "write or", "!": "write not, or != to compare"}
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
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
        fewest = FUNCTIONS[name][1]
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


def _evaluate(node: Node, row: Mapping[str, Any]) -> Any:
    if isinstance(node, Literal):
        return node.value
    if isinstance(node, Column):
        return row.get(node.name)
    if isinstance(node, Not):
        return not _truthy(_evaluate(node.part, row))
    if isinstance(node, BoolOp):
        if node.op == "and":
            return all(_truthy(_evaluate(p, row)) for p in node.parts)
        return any(_truthy(_evaluate(p, row)) for p in node.parts)
    if isinstance(node, Call):
        args = [_evaluate(a, row) for a in node.args]
        try:
            return None if None in args else FUNCTIONS[node.name][0](*args)
        except TypeError:  # a value of the wrong type: missing, like a missing column
            return None
    if isinstance(node, ListOf):
        return [v.value for v in node.values]
    values = [_evaluate(n, row) for n in node.operands]
    for op, left, right in zip(node.ops, values, values[1:]):
        if op in ("in", "not in"):
            ok = (left in right) == (op == "in")
        elif left is None or right is None:
            ok = (left is right) if op == "==" else (left is not right) if op == "!=" else False
        else:
            try:
                ok = _COMPARE[op](left, right)
            except TypeError:
                ok = False
        if not ok:
            return False
    return True


def _truthy(value: Any) -> bool:
    return bool(value) if value is not None else False


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
        return _truthy(_evaluate(self.root, row))

    def comparisons(self) -> list[Comparison]:
        """Every ``column OP number`` test, in reading order: the thresholds a report draws."""
        return _comparisons(self.root)

    def with_threshold(self, comparison: Comparison, value: float) -> "Expr":
        """A copy where ``comparison`` (one of :meth:`comparisons`) tests ``value`` instead (what a slider moves)."""
        root = _with_threshold(self.root, comparison, value)
        return Expr(_source(root), root)

    def failure(self, row: Mapping[str, Any]) -> str | None:
        """None when ``row`` passes; else the failing clause (first failing conjunct of a top-level ``and``)."""
        if self(row):
            return None
        if isinstance(self.root, BoolOp) and self.root.op == "and":
            for part in self.root.parts:
                if not _truthy(_evaluate(part, row)):
                    return _source(part)
        return _source(self.root)


def parse(text: str) -> Expr:
    """Parse ``text`` into an :class:`Expr`, raising :class:`ExprError` when it is not valid."""
    return Expr.parse(text)
