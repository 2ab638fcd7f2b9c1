"""The mapping file of a declarative adapter (docs/vendor-contracts.md#declarative-adapters), as typed models.

A mapping file says, per route name (`x-gateway.route: <vendor>.<route name>`), which vendor operation to call
(`call: METHOD /path`, from the vendor contract) and how fields go both ways: request rules write the vendor
request (`/path/<name>`, `/query/<name>`, `/header/<name>`, `/body/...`) from the public request (`/body/...`,
`/params/<name>`, `/owner`, `/idempotency_key`); response rules write the public answer's body from the vendor
answer's body. A rule is one of `from` (a JSON pointer), `const`, `template` ("text {/pointer} text") or `each` (a
list, item by item, with `fields` relative to the item), optionally with a `convert` and a `default`.

Reading the file checks its shape only (unknown keys, one kind per rule, pointers that are JSON pointers); whether
each pointer exists in the two contracts is checked by gateway/vendorcontracts/mapping.py at start-up.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
REQUEST_TARGETS = ("path", "query", "header", "body")
REQUEST_SOURCES = ("body", "params", "owner", "idempotency_key")
_ROUTE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
PLACEHOLDER = re.compile(r"\{(/[^{}]*)\}")
CREDENTIAL = re.compile(r"\{credentials\.([A-Za-z0-9_]+)\}")
# Names the declarative adapter class uses besides Adapter's, and instance attributes (set in __init__, so not
# visible on a class): no route may take them. adapters/declarative/adapter.py asserts the list is complete.
RESERVED = frozenset({"vendor", "settings", "client", "headers", "idempotency_header", "run", "prepare", "SPEC",
                      "PLANS"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _pointer(value: str) -> str:
    if not isinstance(value, str) or not (value == "" or value.startswith("/")):
        raise ValueError(f"{value!r} is not a JSON pointer (it starts with '/')")
    return value


class Money(_Model):
    """Which currency decides the number of decimals: a pointer to the currency code (ISO 4217) beside the amount,
    in the same source as the amount, or a fixed exponent."""

    currency: str | None = None
    exponent: int | None = Field(None, ge=0, le=4)

    @model_validator(mode="after")
    def _one(self) -> Money:
        if (self.currency is None) == (self.exponent is None):
            raise ValueError("give either `currency: <pointer to the currency code>` or `exponent: <decimals>`")
        if self.currency is not None:
            _pointer(self.currency)
        return self


class Convert(_Model):
    """One converter, applied to the rule's value."""

    minor_to_decimal: Money | None = None  # 1250 (EUR) -> "12.50"
    decimal_to_minor: Money | None = None  # "12.50" or 12.5 (EUR) -> 1250
    enum: dict[str, Any] | None = None  # a table, value -> value (keys are written as strings); a value outside
    #                                     it is an error, or the rule's `default` when it has one
    pattern: str | None = None  # a regular expression with one group: the group's text (no match: an error,
    #                             or the rule's `default` when it has one)
    to: Literal["string", "integer", "number", "boolean"] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Convert:
        given = [k for k in ("minor_to_decimal", "decimal_to_minor", "enum", "pattern", "to")
                 if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a converter is exactly one of minor_to_decimal, decimal_to_minor, enum, pattern, to")
        if self.pattern is not None:
            try:
                compiled = re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern does not compile: {exc}") from None
            if compiled.groups != 1:
                raise ValueError("pattern needs exactly one group: the text it keeps")
        if self.enum is not None and not self.enum:
            raise ValueError("an enum table needs at least one entry")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("minor_to_decimal", "decimal_to_minor", "enum", "pattern", "to")
                    if getattr(self, k) is not None)


class Rule(_Model):
    """How one target field gets its value."""

    from_: str | None = Field(None, alias="from")
    const: Any = None
    template: str | None = None
    each: str | None = None
    fields: dict[str, Rule] | None = None
    convert: Convert | None = None
    default: Any = None

    @model_validator(mode="after")
    def _one_kind(self) -> Rule:
        kinds = [k for k in ("from_", "const", "template", "each") if k in self.model_fields_set]
        if len(kinds) != 1:
            raise ValueError("a rule is exactly one of `from`, `const`, `template`, `each`")
        if (self.fields is not None) != (self.each is not None):
            raise ValueError("`fields` goes with `each` (the rules for each item), and only there")
        if self.convert is not None and self.kind in ("const", "each"):
            raise ValueError(f"`convert` does not apply to `{self.kind}`")
        for pointer in [self.from_, self.each, *PLACEHOLDER.findall(self.template or "")]:
            if pointer is not None:
                _pointer(pointer)
        for target in self.fields or {}:
            if not _pointer(target):
                raise ValueError("a target names a field of the item")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("from", "const", "template", "each") if (k + "_" if k == "from" else k)
                    in self.model_fields_set)

    @property
    def has_default(self) -> bool:
        return "default" in self.model_fields_set


class Errors(_Model):
    """Where a vendor error body says what went wrong: the first pointer that finds a value wins."""

    message: list[str] = Field(default_factory=list)
    code: list[str] = Field(default_factory=list)


class Response(_Model):
    status: int | None = Field(None, ge=200, le=299)  # the public status (default: the vendor's)
    body: dict[str, Rule] = Field(default_factory=dict)
    owner: Rule | None = None  # where the vendor's answer keeps the owner (x-gateway.ownership)

    @field_validator("body")
    @classmethod
    def _targets(cls, v: dict[str, Rule]) -> dict[str, Rule]:
        for target in v:
            if not _pointer(target):
                raise ValueError("a target names a field: the answer's body is built from its fields")
        return v


class OperationSpec(_Model):
    call: str  # "METHOD /path" of the vendor contract
    read_only: bool = False  # a POST the vendor documents as changing nothing: retried like a GET
    ownership: str | None = None  # create | read | change:<route name of the read> (Adapter.OWNERSHIP)
    request: dict[str, Rule] = Field(default_factory=dict)
    response: Response = Response()
    errors: Errors | None = None  # default: the file's `errors`

    @field_validator("call")
    @classmethod
    def _call(cls, v: str) -> str:
        method, _, path = v.partition(" ")
        if method not in METHODS or not path.startswith("/"):
            raise ValueError(f"{v!r}: write the vendor operation as `METHOD /path` (e.g. `POST /shipments`)")
        return v

    @field_validator("ownership")
    @classmethod
    def _ownership(cls, v: str | None) -> str | None:
        if v is not None and v not in ("create", "read") and not v.startswith("change:"):
            raise ValueError("ownership is create, read or change:<route name of the read>")
        return v

    @field_validator("request")
    @classmethod
    def _request_targets(cls, v: dict[str, Rule]) -> dict[str, Rule]:
        for target in v:
            head = _pointer(target).split("/")[1] if target else ""
            if head not in REQUEST_TARGETS or (head != "body" and target.count("/") != 2):
                raise ValueError(f"{target!r}: a request target is /path/<name>, /query/<name>, /header/<name> "
                                 "or /body/...")
        return v

    @property
    def method(self) -> str:
        return self.call.partition(" ")[0]

    @property
    def path(self) -> str:
        return self.call.partition(" ")[2]


class MappingSpec(_Model):
    mapping: Literal[1]
    credentials: list[str] = Field(default_factory=list)  # the credentials `gateway check` requires
    headers: dict[str, str] = Field(default_factory=dict)  # on every call; "{credentials.NAME}" is filled in
    idempotency_header: str | None = None  # the vendor's idempotency header: the caller's key is sent in it
    errors: Errors = Errors()
    operations: dict[str, OperationSpec]

    @field_validator("operations")
    @classmethod
    def _names(cls, v: dict[str, OperationSpec]) -> dict[str, OperationSpec]:
        # A route becomes a method of the adapter class: a name the class already uses (`run`, `headers`, ...)
        # would replace it and break every route.
        from adapters.base import Adapter

        for name in v:
            if not _ROUTE_NAME.match(name) or hasattr(Adapter, name) or name in RESERVED:
                raise ValueError(f"{name!r} cannot be a route name (lower case, digits, _; not an attribute of "
                                 "the adapter class, such as run, handler or headers)")
        return v

    @field_validator("headers")
    @classmethod
    def _credentials_declared(cls, v: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        declared = info.data.get("credentials") or []
        for header, value in v.items():
            for name in CREDENTIAL.findall(value):
                if name not in declared:
                    raise ValueError(f"{header}: {{credentials.{name}}} is not declared in `credentials` "
                                     f"({', '.join(declared) or 'none declared'})")
        return v


class MappingFileError(ValueError):
    """The mapping file cannot be used; `problems` are (JSON pointer in the file, reason)."""

    def __init__(self, file: Path, problems: list[tuple[str, str]]) -> None:
        super().__init__(f"{file}: " + "; ".join(f"{p or '/'}: {r}" for p, r in problems))
        self.file = file
        self.problems = problems


def escape(part: Any) -> str:
    return str(part).replace("~", "~0").replace("/", "~1")


def load_mapping(file: Path) -> MappingSpec:
    """Read and shape-check one mapping file; MappingFileError lists every problem with its pointer."""
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MappingFileError(file, [("", f"cannot read file: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        line = exc.object[:exc.start].count(b"\n") + 1
        raise MappingFileError(file, [("", f"not UTF-8 text: byte {exc.object[exc.start]:#04x} at line {line} "
                                           "cannot be decoded (save the file as UTF-8)")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise MappingFileError(file, [("", f"invalid YAML{where}: {getattr(exc, 'problem', None) or exc}")]) \
            from None
    try:
        return MappingSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = [("from" if part == "from_" else part) for part in error["loc"]]
            # pydantic names the model or validator in the location of union members; keep the data's keys
            pointer = "".join("/" + escape(p) for p in loc if not str(p).startswith(("function-", "Rule")))
            problems.append((pointer, str(error["msg"]).removeprefix("Value error, ")))
        raise MappingFileError(file, problems) from None
