"""The mapping rules compiled once into small objects, and applied per request: pointers read and written,
converters (minor units <-> decimal with the currency's exponent, enum tables, patterns, scalar types).

Everything a rule needs is prepared when the adapter class is built: pointers split into parts, converters turned
into functions. Per request a rule is one walk down its source and one write into the target.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from gateway.currencies import exponent

from .spec import PLACEHOLDER, Convert, Money, Rule

MISSING: Any = object()  # a source that has no value (not the same as null)
Part = str | int
Parts = tuple[Part, ...]

def exponent_of(currency: Any) -> int:
    if not isinstance(currency, str) or len(currency) != 3:
        raise ValueError(f"{currency!r} is not a currency code")
    return exponent(currency.upper())


def split(pointer: str) -> Parts:
    """A JSON pointer as parts; digits become list indexes."""
    if not pointer:
        return ()
    out: list[Part] = []
    for raw in pointer[1:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        out.append(int(part) if part.isdigit() else part)
    return tuple(out)


def read(root: Any, parts: Parts) -> Any:
    """The value at `parts` under `root`, or MISSING."""
    node = root
    for part in parts:
        kind = type(node)
        if kind is dict:
            node = node.get(part if type(part) is str else str(part), MISSING)
            if node is MISSING:
                return MISSING
        elif kind is list and type(part) is int:
            if part >= len(node):
                return MISSING
            node = node[part]
        else:
            return MISSING
    return node


def write(root: dict[str, Any], parts: Parts, value: Any) -> None:
    """Set `value` at `parts` under `root`, making the objects and lists on the way."""
    node: Any = root
    last = len(parts) - 1
    for i in range(last):
        part = parts[i]
        if type(node) is list:
            assert type(part) is int
            while len(node) <= part:
                node.append(None)
            child = node[part]
            if child is None:
                child = node[part] = [] if type(parts[i + 1]) is int else {}
        else:
            key = part if type(part) is str else str(part)
            child = node.get(key)
            if child is None:
                child = node[key] = [] if type(parts[i + 1]) is int else {}
        node = child
    part = parts[last]
    if type(node) is list:
        assert type(part) is int
        while len(node) <= part:
            node.append(None)
        node[part] = value
    else:
        node[part if type(part) is str else str(part)] = value


# -- converters: (value, the rule's source root) -> value ------------------------------------------------------------

Converter = Callable[[Any, Any], Any]


def _exponent(money: Money) -> Callable[[Any], int]:
    if money.exponent is not None:
        fixed = money.exponent
        return lambda root: fixed
    where = split(money.currency or "")
    return lambda root: exponent_of(read(root, where))


def minor_to_decimal(money: Money) -> Converter:
    exponent = _exponent(money)

    def convert(value: Any, root: Any) -> str:
        # JSON Schema's integer includes 1.0 and 1e2: what the public contract accepted as an integer is one here.
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"an amount in minor units is an integer, not {type(value).__name__}")
        places = exponent(root)
        return f"{Decimal(value).scaleb(-places):.{places}f}"

    return convert


def decimal_to_minor(money: Money) -> Converter:
    exponent = _exponent(money)

    def convert(value: Any, root: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(f"a decimal amount is a string or a number, not {type(value).__name__}")
        try:
            amount = Decimal(str(value).strip()).scaleb(exponent(root))
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a decimal amount") from None
        if not amount.is_finite() or amount != amount.to_integral_value():
            raise ValueError(f"{value!r} has more decimals than its currency")
        return int(amount)

    return convert


def enum_key(value: Any) -> str:
    """A value as an enum table's key (the keys are written as strings: true, false, 3)."""
    return value if isinstance(value, str) else ("true" if value is True else "false" if value is False
                                                 else str(value))


def enum_table(table: dict[str, Any], strict: bool = True) -> Converter:
    """Value -> value by the table; a value outside it is a broken answer (ValueError), or, when the rule has a
    `default` (strict False), absent so that the default applies."""

    def convert(value: Any, root: Any) -> Any:
        found = table.get(enum_key(value), MISSING)
        if found is MISSING and strict:
            raise ValueError(f"{value!r} is not in the enum table")
        return found

    return convert


def pattern(expression: str, strict: bool = True) -> Converter:
    """The text of the expression's group; a value it does not match (or matches empty) is an error, or, when the
    rule has a `default` (strict False), absent so that the default applies."""
    compiled = re.compile(expression)

    def convert(value: Any, root: Any) -> Any:
        found = compiled.search(value) if isinstance(value, str) else None
        if found is not None and found.group(1):
            return found.group(1)
        if strict:
            raise ValueError(f"{value!r} does not match {expression!r}")
        return MISSING

    return convert


def scalar(to: str) -> Converter:
    def convert(value: Any, root: Any) -> Any:
        if to == "string":
            if isinstance(value, bool):
                return "true" if value else "false"
            if isinstance(value, (int, float, str)):
                return str(value)
            raise ValueError(f"{type(value).__name__} cannot be written as a string")
        if to == "boolean":
            if isinstance(value, bool):
                return value
            if value in ("true", "false"):
                return value == "true"
            raise ValueError(f"{value!r} is not a boolean")
        if isinstance(value, bool):
            raise ValueError("a boolean is not a number")
        number = Decimal(str(value))  # InvalidOperation is an ArithmeticError: turned into ValueError below
        if to == "integer":
            if number != number.to_integral_value():
                raise ValueError(f"{value!r} is not an integer")
            return int(number)
        return int(number) if number == number.to_integral_value() else float(number)

    def guarded(value: Any, root: Any) -> Any:
        try:
            return convert(value, root)
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a number") from None

    return guarded


def converter(spec: Convert, has_default: bool = False) -> Converter:
    if spec.minor_to_decimal is not None:
        return minor_to_decimal(spec.minor_to_decimal)
    if spec.decimal_to_minor is not None:
        return decimal_to_minor(spec.decimal_to_minor)
    if spec.enum is not None:
        return enum_table(spec.enum, strict=not has_default)
    if spec.pattern is not None:
        return pattern(spec.pattern, strict=not has_default)
    assert spec.to is not None
    return scalar(spec.to)


# -- rules -----------------------------------------------------------------------------------------------------------


class Compiled:
    """One rule, ready to run: `value(root)` is its value for this source, or MISSING."""

    __slots__ = ("kind", "source", "origin", "const", "pieces", "fields", "convert", "default", "has_default")

    def __init__(self, rule: Rule) -> None:
        self.kind = rule.kind
        self.source = split(rule.from_ or rule.each or "")
        # where the value comes from (a template: its first placeholder), to locate a value that cannot be used
        self.origin = split(rule.from_ or rule.each or next(iter(PLACEHOLDER.findall(rule.template or "")), ""))
        self.const = rule.const
        self.pieces: tuple[str | Parts, ...] = ()
        if rule.template is not None:
            pieces: list[str | Parts] = []
            for i, piece in enumerate(PLACEHOLDER.split(rule.template)):
                pieces.append(split(piece) if i % 2 else piece)
            self.pieces = tuple(pieces)
        self.fields = compile_rules(rule.fields or {})
        self.convert = converter(rule.convert, rule.has_default) if rule.convert is not None else None
        self.default = rule.default
        self.has_default = rule.has_default

    def value(self, root: Any) -> Any:
        kind = self.kind
        if kind == "const":
            return self.const
        if kind == "from":
            value = read(root, self.source)
        elif kind == "template":
            value = self.fill(root)
        else:  # each
            items = read(root, self.source)
            if items is MISSING or items is None:
                return self.default if self.has_default else MISSING
            if not isinstance(items, list):
                raise TypeError(f"expected a list, found {type(items).__name__}")
            return [build(self.fields, item) for item in items]
        if value is not MISSING and value is not None and self.convert is not None:
            value = self.convert(value, root)
        if value is MISSING and self.has_default:
            return self.default
        return value


    def fill(self, root: Any) -> Any:
        """The template's text, or MISSING when a placeholder has no value (never written as "")."""
        out = []
        for piece in self.pieces:
            if isinstance(piece, str):
                out.append(piece)
                continue
            value = read(root, piece)
            if value is MISSING or value is None:
                return MISSING
            out.append(_text(value))
        return "".join(out)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def compile_rules(rules: dict[str, Rule]) -> tuple[tuple[Parts, Compiled], ...]:
    return tuple((split(target), Compiled(rule)) for target, rule in rules.items())


def build(rules: tuple[tuple[Parts, Compiled], ...], root: Any) -> dict[str, Any]:
    """The object the rules write from `root` (targets without a value are left out)."""
    out: dict[str, Any] = {}
    for target, rule in rules:
        value = rule.value(root)
        if value is not MISSING:
            write(out, target, value)
    return out
