"""A declarative adapter's mapping file checked against BOTH contracts at start-up and by `gateway check`.

For each route of the mapping (adapters/declarative/), with the public operation that routes to it and the vendor
operation it calls:
- every public pointer exists: request sources in the public operation's body or parameters, response targets in
  its answer's schema; every vendor pointer exists: request targets in the vendor operation's body or parameters,
  response sources in its success answer's schema;
- types fit after conversion (an integer where the target says string needs `convert: {to: string}`; null only
  where the target allows it); converters fit their input (minor units from integers, decimals from strings or
  numbers, patterns from strings); enum tables cover every value the source side declares, and give only values
  the target side declares;
- every required vendor request field (and path parameter, and required query or header parameter) is supplied,
  and surely: from a constant, a template, a default, or a public field the public contract requires all the way
  down; every required public response field is produced, surely, the same way from the vendor's answer;
- ownership: a `create` route writes `/owner` somewhere and says where the answer keeps it (`response.owner`), a
  `read` route says where.

Each problem names three places: the mapping file and the pointer inside it, the public contract's file and JSON
pointer, and the vendor contract's file and JSON pointer (where one of them is not involved, it is left out).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from adapters.declarative.adapter import mapping_file
from adapters.declarative.engine import enum_key, split
from adapters.declarative.spec import (
    PLACEHOLDER,
    MappingFileError,
    MappingSpec,
    OperationSpec,
    Rule,
    escape,
    load_mapping,
)
from gateway.contracts.compile import Operation
from gateway.contracts.load import display
from gateway.contracts.problems import ContractProblem
from gateway.contracts.shapes import json_type
from gateway.settings import Settings, VendorSettings

from .check import contract_file
from .contract import VendorContract, VendorContractError, load_vendor_contract
from .navigate import CALLER, DEPTH, Pos, Schemas, fits


class _Route:
    """The checks of one mapping route: its problems are collected in `out`."""

    def __init__(self, checker: MappingCheck, name: str, spec: OperationSpec, public: Operation,
                 vendor_pos: Pos) -> None:
        self.c = checker
        self.name = name
        self.spec = spec
        self.public = public
        self.vendor_op = vendor_pos
        self.base = f"/operations/{escape(name)}"
        self.pub = Schemas(self._public_deref)
        self.ven = Schemas(self._vendor_deref)
        self.public_op = Pos(public.node, public.contract.path, public.pointer)
        self.public_body: Pos | None = None

    # -- document access ----------------------------------------------------------------------------------------

    def _public_deref(self, node: Any, file: Path, pointer: str) -> tuple[Any, Path, str]:
        return self.public.contract.resolver.deref(node, file, pointer)

    def _vendor_deref(self, node: Any, file: Path, pointer: str) -> tuple[Any, Path, str]:
        seen = 0
        while isinstance(node, dict) and isinstance(node.get("$ref"), str) and seen < DEPTH:
            ref = node["$ref"]
            if not ref.startswith("#/"):
                raise LookupError(f"only local references: {ref}")
            pointer = ref[1:]
            node = self.c.vendor.data
            for part in split(pointer):
                node = node[int(part)] if isinstance(node, list) else node[str(part)]
            seen += 1
        return node, file, pointer

    def problem(self, where: str, reason: str, public: Pos | None = None, vendor: Pos | None = None) -> None:
        places = []
        if public is not None:
            places.append("public " + public.where())
        if vendor is not None:
            places.append("vendor " + vendor.where())
        self.c.out.append(ContractProblem(self.c.file_name, self.base + where,
                                          reason + (f" ({'; '.join(places)})" if places else "")))

    def media_schema(self, schemas: Schemas, holder: Pos | None) -> Pos | None:
        if holder is None:
            return None
        holder = schemas.resolve(holder)
        content = holder.node.get("content") if isinstance(holder.node, dict) else None
        if not isinstance(content, dict):
            return None
        for media in content:
            json_like = media.split(";")[0].strip().lower() in ("application/json", "*/*") or media.endswith("+json")
            if json_like and isinstance(content[media], dict) and "schema" in content[media]:
                return holder.at("content", media, "schema")
        return None

    def parameter(self, schemas: Schemas, op: Pos, path_item: Pos, name: str, location: str | None) -> Pos | None:
        for holder in (op, path_item):
            for i, _ in enumerate(holder.node.get("parameters") or []):
                p = schemas.resolve(holder.at("parameters", i))
                if p.node.get("name") == name and (location is None or p.node.get("in") == location):
                    return p.at("schema") if "schema" in p.node else Pos({}, p.file, p.pointer)
        return None

    def response(self, schemas: Schemas, op: Pos, status: int | None) -> Pos | None:
        responses = op.node.get("responses") or {}
        keys = [str(status)] if status is not None else []
        keys += [k for k in ("200", "201", "202", "2XX") if k not in keys]
        for key in keys:
            if key in responses:
                return self.media_schema(schemas, op.at("responses", key))
        return None

    # -- the checks ---------------------------------------------------------------------------------------------

    def run(self) -> None:
        item_pointer = self.public.pointer.rsplit("/", 1)[0]  # /paths/<escaped template>
        public_path_item = Pos(self.public.contract.data["paths"][str(split(item_pointer)[1])],
                               self.public.contract.path, item_pointer)
        vendor_path_item = Pos(self.c.vendor.data["paths"][self.spec.path], self.c.vendor.file,
                               self.vendor_op.pointer.rsplit("/", 1)[0])
        public_body = self.public_body = self.media_schema(self.pub, self.public_op.at("requestBody")
                                        if "requestBody" in self.public_op.node else None)
        vendor_body = self.media_schema(self.ven, self.vendor_op.at("requestBody")
                                        if "requestBody" in self.vendor_op.node else None)

        def public_source(parts: tuple[str | int, ...]) -> tuple[Pos | None, str, bool]:
            """(schema, missing part, surely there) of a public request source."""
            head, rest = (parts[0], parts[1:]) if parts else ("", ())
            if head in ("owner", "idempotency_key") and not rest:
                return CALLER, "", head == "owner" and self.spec.ownership is not None
            if head == "params" and len(rest) == 1:
                found = self.parameter(self.pub, self.public_op, public_path_item, str(rest[0]), None)
                if found is None:
                    self.pub.last = self.public_op
                    return None, str(rest[0]), False
                param = self._param_object(self.pub, self.public_op, public_path_item, str(rest[0]))
                return found, "", bool(param.get("required")) or param.get("in") == "path"
            if head == "body" and public_body is not None:
                found, missing = self.pub.walk(public_body, rest)
                required = bool(self.pub.resolve(self.public_op.at("requestBody")).node.get("required"))
                return found, missing, required and found is not None and self.pub.surely(public_body, rest)
            self.pub.last = self.public_op
            return None, str(head), False

        def vendor_target(parts: tuple[str | int, ...]) -> tuple[Pos | None, str]:
            head, rest = parts[0], parts[1:]
            if head == "body":
                if vendor_body is None:
                    return None, "body"
                return self.ven.walk(vendor_body, rest)
            found = self.parameter(self.ven, self.vendor_op, vendor_path_item, str(rest[0]), str(head))
            self.ven.last = self.vendor_op
            return found, "" if found is not None else str(rest[0])

        supplied: dict[tuple[str | int, ...], bool] = {}
        for target, rule in self.spec.request.items():
            where = f"/request/{escape(target)}"
            parts = split(target)
            target_pos, missing = vendor_target(parts)
            if target_pos is None:
                self.problem(where, f"{target} is not in the vendor operation's request ({missing!r} is not "
                             "declared)", vendor=self.ven.last or self.vendor_op,
                             public=self._source_pos(rule, public_source) or public_body or self.public_op)
                continue
            sure = self.rule(where, rule, public_source, self.pub, target_pos, self.ven, "public", "vendor")
            supplied[parts] = sure
            if rule.kind == "each" and rule.each is not None:
                self.request_items(where, rule, public_source(split(rule.each))[0], target_pos)
        self.required_supplied(vendor_body, vendor_path_item, supplied)
        if self.spec.ownership == "create" and not any("{/owner}" in (r.template or "") or r.from_ == "/owner"
                                                       for r in self.spec.request.values()):
            self.problem("/request", "an ownership `create` route writes /owner into the vendor request "
                                     "(where the vendor keeps it)", vendor=self.vendor_op)
        if self.spec.ownership in ("create", "read") and self.spec.response.owner is None:
            self.problem("/response", f"an ownership `{self.spec.ownership}` route says where the answer keeps the "
                                      "owner (`response.owner`)", vendor=self.vendor_op)
        self.responses()

    def request_items(self, where: str, rule: Rule, source_list: Pos | None, target_list: Pos,
                      depth: int = 0) -> None:
        """A request `each`: its item rules against the public list's items and the vendor list's items, as the
        answer's are (pointers, types, converters), and the vendor item's required fields written."""
        item_target = self.ven.child(target_list, "*")
        if item_target is None or depth > DEPTH:
            return
        item_source = self.pub.child(source_list, "*") if source_list is not None and source_list is not CALLER \
            else None

        def item_find(parts: tuple[str | int, ...]) -> tuple[Pos | None, str, bool]:
            if item_source is None:
                return CALLER, "", True  # the list itself is refused already: its items cannot be looked at
            found, missing = self.pub.walk(item_source, parts)
            return found, missing, found is not None and self.pub.surely(item_source, parts)

        written: dict[tuple[str | int, ...], bool] = {}
        for target, item_rule in (rule.fields or {}).items():
            here = f"{where}/fields/{escape(target)}"
            parts = split(target)
            target_pos, missing = self.ven.walk(item_target, parts)
            if target_pos is None:
                self.problem(here, f"{target} is not in the vendor request's list items ({missing!r} is not "
                             "declared)", vendor=self.ven.last or item_target, public=item_source or self.public_op)
                continue
            written[parts] = self.rule(here, item_rule, item_find, self.pub, target_pos, self.ven, "public",
                                       "vendor")
            if item_rule.kind == "each" and item_rule.each is not None:
                self.request_items(here, item_rule, item_find(split(item_rule.each))[0], target_pos, depth + 1)
        names, _ = self.ven.required(item_target)
        if names or written:
            self._required(item_target, (), written, f"{where}/fields", "vendor request item", self.ven,
                           vendor=True, other=item_source or self.public_op, in_body=False)

    def _source_pos(self, rule: Rule, source: Callable[[tuple[str | int, ...]], tuple[Pos | None, str, bool]]
                    ) -> Pos | None:
        """Where a rule's source is declared (for the other side's location in a problem), if it is."""
        pointer = rule.from_ or rule.each or next(iter(PLACEHOLDER.findall(rule.template or "")), None)
        found = source(split(pointer))[0] if pointer is not None else None
        return found if found is not CALLER else None

    def _param_object(self, schemas: Schemas, op: Pos, path_item: Pos, name: str) -> dict[str, Any]:
        for holder in (op, path_item):
            for i, _ in enumerate(holder.node.get("parameters") or []):
                p = schemas.resolve(holder.at("parameters", i))
                if p.node.get("name") == name:
                    return p.node
        return {}

    def required_supplied(self, vendor_body: Pos | None, path_item: Pos,
                          supplied: dict[tuple[str | int, ...], bool]) -> None:
        for holder in (self.vendor_op, path_item):
            for i, _ in enumerate(holder.node.get("parameters") or []):
                p = self.ven.resolve(holder.at("parameters", i))
                location, name = p.node.get("in"), p.node.get("name")
                if location == "path" or (p.node.get("required") and location in ("query", "header")):
                    if location == "header" and name.lower() in {h.lower() for h in self.c.spec.headers}:
                        continue
                    key = (str(location), str(name))
                    if key not in supplied:
                        self.problem("/request", f"the vendor's required {location} parameter {name!r} is not "
                                                 f"supplied (/{location}/{name})", vendor=p)
                    elif not supplied[key]:
                        self.problem(f"/request/{escape(f'/{location}/{name}')}", f"the vendor's required "
                                     f"{location} parameter {name!r} may have no value: its source is optional "
                                     "(give a default)", vendor=p)
        if vendor_body is None:
            return
        body_targets = {k[1:]: v for k, v in supplied.items() if k and k[0] == "body"}
        body_required = bool(self.ven.resolve(self.vendor_op.at("requestBody")).node.get("required")) \
            if "requestBody" in self.vendor_op.node else False
        if body_required or body_targets:
            self._required(vendor_body, (), body_targets, "/request", "vendor request", self.ven, vendor=True,
                           other=self.public_body or self.public_op)

    def _required(self, pos: Pos, prefix: tuple[str | int, ...], targets: dict[tuple[str | int, ...], bool],
                  where: str, side: str, schemas: Schemas, vendor: bool, depth: int = 0, strict: bool = True,
                  other: Pos | None = None, in_body: bool = True) -> None:
        """Required properties under `pos` (at `prefix`) are written by `targets` (parts -> surely). Under an
        optional object (`strict` False) a rule is enough: the object is there only when its sources are."""
        if depth > DEPTH:
            return
        names, required_at = schemas.required(pos)
        beneath = {t[len(prefix)] for t in targets if len(t) > len(prefix) and t[:len(prefix)] == prefix}
        for name in sorted(names | {b for b in beneath if isinstance(b, str)}):
            child_prefix = (*prefix, name)
            child = schemas.child(pos, name)
            exact = targets.get(child_prefix)
            deeper = any(len(t) > len(child_prefix) and t[:len(child_prefix)] == child_prefix for t in targets)
            pointer = "/" + "/".join(escape(p) for p in child_prefix)
            place = {"vendor" if vendor else "public": required_at or pos}
            if other is not None:
                place["public" if vendor else "vendor"] = other
            if name in names and exact is None and not deeper:
                self.problem(where, f"the {side} field {pointer} is required and no rule writes it", **place)
            elif name in names and exact is False and strict:
                self.problem(f"{where}/{escape(self._key(child_prefix, vendor and in_body))}",
                             f"the {side} field {pointer} is required but its source may be absent (give a "
                             "`default`, or take it from a field the other contract requires)", **place)
            if deeper and child is not None:
                item = schemas.child(child, "*") if "array" in (schemas.types(child) or set()) else None
                if item is not None:
                    index_prefix = next((t[:len(child_prefix) + 1] for t in targets
                                         if len(t) > len(child_prefix) and t[:len(child_prefix)] == child_prefix),
                                        None)
                    if index_prefix is not None:
                        self._required(item, index_prefix, targets, where, side, schemas, vendor, depth + 1,
                                       strict and name in names, other, in_body)
                else:
                    self._required(child, child_prefix, targets, where, side, schemas, vendor, depth + 1,
                                   strict and name in names, other, in_body)

    def _key(self, parts: tuple[str | int, ...], vendor: bool) -> str:
        return ("/body" if vendor else "") + "".join("/" + escape(p) for p in parts)

    def responses(self) -> None:
        vendor_answer = self.response(self.ven, self.vendor_op, None)
        public_answer = self.response(self.pub, self.public_op, self.spec.response.status)
        if public_answer is None:
            status = self.spec.response.status or "2xx"
            self.problem("/response", f"the public operation declares no JSON answer for {status}",
                         public=self.public_op)
            return
        if vendor_answer is None and (self.spec.response.body or self.spec.response.owner):
            self.problem("/response", "the vendor operation declares no JSON success answer to read",
                         vendor=self.vendor_op)
            return
        assert vendor_answer is not None or not self.spec.response.body

        def vendor_source(root: Pos) -> Callable[[tuple[str | int, ...]], tuple[Pos | None, str, bool]]:
            def find(parts: tuple[str | int, ...]) -> tuple[Pos | None, str, bool]:
                found, missing = self.ven.walk(root, parts)
                return found, missing, found is not None and self.ven.surely(root, parts)
            return find

        produced: dict[tuple[str | int, ...], bool] = {}
        if vendor_answer is not None:
            self.response_rules("/response/body", self.spec.response.body, vendor_answer, public_answer, (),
                                produced, vendor_source)
            if self.spec.response.owner is not None:
                self.rule("/response/owner", self.spec.response.owner, vendor_source(vendor_answer), self.ven,
                          CALLER, self.pub, "vendor", "public")
        self._required(public_answer, (), produced, "/response/body", "public response", self.pub, vendor=False,
                       other=vendor_answer or self.vendor_op)

    def response_rules(self, where: str, rules: dict[str, Rule], source_root: Pos, target_root: Pos,
                       prefix: tuple[str | int, ...], produced: dict[tuple[str | int, ...], bool],
                       vendor_source: Callable[[Pos], Callable[[tuple[str | int, ...]],
                                                               tuple[Pos | None, str, bool]]]) -> None:
        for target, rule in rules.items():
            here = f"{where}/{escape(target)}"
            parts = split(target)
            target_pos, missing = self.pub.walk(target_root, parts)
            if target_pos is None:
                self.problem(here, f"{target} is not in the public operation's answer ({missing!r} is not "
                             "declared)", public=self.pub.last or target_root,
                             vendor=self._source_pos(rule, vendor_source(source_root)) or source_root)
                continue
            sure = self.rule(here, rule, vendor_source(source_root), self.ven, target_pos, self.pub, "vendor",
                             "public")
            produced[(*prefix, *parts)] = sure
            if rule.kind == "each" and rule.each is not None:
                items_source, _ = self.ven.walk(source_root, split(rule.each))
                items_target = self.pub.child(target_pos, "*")
                if items_source is not None and items_target is not None:
                    item_source = self.ven.child(items_source, "*")
                    if item_source is not None:
                        self.response_rules(f"{here}/fields", rule.fields or {}, item_source, items_target,
                                            (*prefix, *parts, 0), produced, vendor_source)

    def rule(self, where: str, rule: Rule, source: Callable[[tuple[str | int, ...]], tuple[Pos | None, str, bool]],
             source_schemas: Schemas, target: Pos, target_schemas: Schemas, source_side: str,
             target_side: str) -> bool:
        """One rule's source pointers, converter and types; whether it surely gives a value."""
        place = {target_side: target}
        target_types = target_schemas.types(target) if target is not CALLER else {"string", "null"}
        default_types = {json_type(rule.default)} if rule.has_default else set()
        if rule.kind == "const":
            self._enum_member(where, [rule.const], target, target_schemas, place)
            self._fit(where, {json_type(rule.const)}, target_types, place, "the constant")
            return True
        if rule.kind == "template":
            # A template has a value only when every placeholder has one (a missing one is never written as ""):
            # it is sure when all its placeholders are, or when it has a default.
            all_sure = True
            for pointer in PLACEHOLDER.findall(rule.template or ""):
                found, missing, sure = source(split(pointer))
                if found is None:
                    self._missing(where, pointer, missing, source_side, place, source_schemas)
                all_sure = all_sure and sure
            self._fit(where, {"string"} | default_types, target_types, place, "the template's text")
            return all_sure or rule.has_default
        if rule.has_default and rule.default is not None:
            self._enum_member(f"{where}/default", [rule.default], target, target_schemas, place)
        pointer = rule.from_ if rule.kind == "from" else rule.each
        assert pointer is not None
        found, missing, sure = source(split(pointer))
        if found is None:
            self._missing(where, pointer, missing, source_side, place, source_schemas)
            return True  # reported here: not again as a required field without a sure source
        place[source_side] = found
        if rule.kind == "each":
            if not fits(source_schemas.types(found), {"array", "null"}):
                self.problem(where, f"`each` needs a list, {pointer} is not one", **place)
            if not fits({"array"}, target_types):
                self.problem(where, "`each` writes a list where the target is not one", **place)
            return sure or rule.has_default
        types = source_schemas.types(found)
        convert = rule.convert
        if convert is not None:
            kind = convert.kind
            expects = {"minor_to_decimal": {"integer", "null"}, "decimal_to_minor": {"string", "number", "integer",
                                                                                     "null"},
                       "pattern": {"string", "null"}}.get(kind)
            if kind == "to":
                expects = {"string": {"string", "integer", "number", "boolean", "null"},
                           "boolean": {"boolean", "string", "null"}}.get(str(convert.to),
                                                                         {"string", "integer", "number", "null"})
            if expects is not None and not fits(types, expects):
                self.problem(where, f"{kind} reads {' or '.join(sorted(expects - {'null'}))}; {pointer} is "
                                    f"{' or '.join(sorted(types or ()))}", **place)
            money = convert.minor_to_decimal or convert.decimal_to_minor
            if money is not None and money.currency is not None:
                currency, gone, _ = source(split(money.currency))
                here = f"{where}/convert/{kind}/currency"
                if currency is None:
                    self._missing(here, money.currency, gone, source_side, place, source_schemas)
                elif currency is not CALLER:
                    kinds = source_schemas.types(currency)
                    if not fits(kinds, {"string"}):
                        self.problem(here, f"{money.currency} is {' or '.join(sorted(kinds or ()))}: a currency code "
                                           "is a string", **{**place, source_side: currency})
                    elif not self._present_with(source, pointer, money.currency, source_schemas):
                        self.problem(here, f"{money.currency} may be absent where {pointer} is there: the amount "
                                           "could not be converted (take a currency the contract requires beside "
                                           "the amount, or a fixed `exponent`)", **{**place, source_side: currency})
            if kind == "enum" and convert.enum is not None:
                declared = source_schemas.enum(found)
                if declared is not None and not rule.has_default:
                    gaps = [v for v in declared[0] if v is not None and enum_key(v) not in convert.enum]
                    if gaps:
                        self.problem(f"{where}/convert/enum", f"the enum table has no entry for {gaps} of "
                                     f"{pointer}", **{**place, source_side: declared[1]})
                self._enum_member(f"{where}/convert/enum", list(convert.enum.values()), target, target_schemas,
                                  place)
                out_types = {json_type(v) for v in convert.enum.values()}
            else:
                if kind == "to":
                    out_types = {str(convert.to)}
                else:
                    out_types = {"minor_to_decimal": {"string"}, "decimal_to_minor": {"integer"},
                                 "pattern": {"string"}}[kind]
                self._open_into_enum(where, f"{kind} of {pointer}", target, target_schemas, place)
            if types is not None and "null" in types:
                out_types = out_types | {"null"}  # null passes through a converter unchanged
            types = out_types
        else:
            declared = source_schemas.enum(found)
            if declared is not None:
                self._enum_member(where, declared[0], target, target_schemas, place, source=pointer)
            elif types is None or types - {"null"} <= {"string", "integer", "number", "boolean"}:
                self._open_into_enum(where, pointer, target, target_schemas, place)
        self._fit(where, (types | default_types) if types is not None else None, target_types, place, pointer)
        return sure or rule.has_default

    def _fit(self, where: str, source: set[str] | None, target: set[str] | None, place: dict[str, Pos],
             what: str) -> None:
        if not fits(source, target):
            self.problem(where, f"type mismatch: {what} is {' or '.join(sorted(source or ()))}, the target takes "
                                f"{' or '.join(sorted(target or ()))}", **place)

    def _enum_member(self, where: str, values: list[Any], target: Pos, schemas: Schemas, place: dict[str, Pos],
                     source: str | None = None) -> None:
        declared = schemas.enum(target) if target is not CALLER else None
        if declared is None:
            return
        outside = [v for v in values if v not in declared[0] and v is not None]
        if outside:
            what = f"{source} may be" if source else "the mapping gives"
            # the target's side is located at its enum
            place = {side: declared[1] if pos is target else pos for side, pos in place.items()}
            self.problem(where, f"{what} {outside}, outside the target's enum {declared[0]}", **place)

    def _open_into_enum(self, where: str, what: str, target: Pos, schemas: Schemas, place: dict[str, Pos]) -> None:
        """A value of no declared enum written where the target has one: it needs an enum table."""
        declared = schemas.enum(target) if target is not CALLER else None
        if declared is not None:
            place = {side: declared[1] if pos is target else pos for side, pos in place.items()}
            self.problem(where, f"{what} may be any value; the target's enum takes only {declared[0]} (map it "
                                "with `convert: {enum: {...}}`, with a `default` for the values the table does not "
                                "know)", **place)

    @staticmethod
    def _present_with(source: Callable[[tuple[str | int, ...]], tuple[Pos | None, str, bool]], amount: str,
                      currency: str, schemas: Schemas) -> bool:
        """Whether the currency is there whenever the amount is: required below the objects the two share."""
        a, c = split(amount), split(currency)
        common = 0
        while common < min(len(a), len(c)) - 1 and a[common] == c[common]:
            common += 1
        shared = source(c[:common])[0]
        if shared is None or shared is CALLER:
            return True
        return schemas.surely(shared, c[common:])

    def _missing(self, where: str, pointer: str, missing: str, side: str, place: dict[str, Pos],
                 schemas: Schemas) -> None:
        root = {"public": "the public operation's request", "vendor": "the vendor operation's answer"}[side]
        if schemas.last is not None:
            place = {**place, side: schemas.last}
        self.problem(where, f"{pointer} is not in {root} ({missing!r} is not declared)", **place)


class MappingCheck:
    """One declarative vendor's mapping file against the public operations routed to it and its vendor contract."""

    def __init__(self, name: str, vendor: VendorSettings, settings: Settings) -> None:
        self.name = name
        self.settings = settings
        self.file = mapping_file(vendor, settings.base_dir)
        self.file_name = display(self.file)
        self.out: list[ContractProblem] = []
        self.spec: MappingSpec
        self.vendor: VendorContract

    def run(self, vendor: VendorSettings, operations: list[Operation]) -> list[ContractProblem]:
        try:
            self.spec = load_mapping(self.file)
        except MappingFileError:
            return []  # reported with the vendor contracts, before compiling (mapping_file_problems)
        contract = contract_file(vendor, self.settings.base_dir, self.name)
        if contract is None or not contract.exists():
            return [ContractProblem("gateway.yaml", f"/vendors/{self.name}/contract/file", "a declarative adapter "
                                    f"needs its vendor's contract (contracts/vendors/{self.name}.yaml, or "
                                    "contract.file)")]
        try:
            self.vendor = load_vendor_contract(self.name, contract)
        except VendorContractError:
            return []  # reported by the vendor contract check, with its place
        routed = {op.adapter_operation: op for op in operations if op.vendor == self.name}
        for route, spec in self.spec.operations.items():
            base = f"/operations/{escape(route)}"
            method, path = spec.method.lower(), spec.path
            item = (self.vendor.data.get("paths") or {}).get(path)
            if not isinstance(item, dict) or not isinstance(item.get(method), dict):
                self.out.append(ContractProblem(self.file_name, base + "/call", f"{spec.call} is no operation of "
                                                f"the vendor contract ({display(contract)}#/paths)"))
                continue
            used_by = item[method].get("x-gateway-used-by")
            if isinstance(used_by, list) and route not in used_by:
                # `gateway diff --vendor` follows this list from a vendor change to the public operations it touches
                self.out.append(ContractProblem(self.file_name, base + "/call", f"{spec.call} does not list "
                                                f"{route!r} in its x-gateway-used-by ({display(contract)}#/paths/"
                                                f"{escape(path)}/{method}/x-gateway-used-by)"))
            public = routed.get(route)
            if public is None:
                continue  # no contract routes here (yet): nothing to check it against, and nothing served
            pointer = "/paths/" + escape(path) + "/" + method
            try:
                _Route(self, route, spec, public, Pos(item[method], contract, pointer)).run()
            except (LookupError, KeyError, TypeError) as exc:
                self.out.append(ContractProblem(self.file_name, base, f"cannot be checked: {exc}"))
        return self.out


def mapping_file_problems(vendor: VendorSettings, base_dir: Path) -> list[ContractProblem]:
    """The shape of one declarative vendor's mapping file, every problem at its pointer."""
    file = mapping_file(vendor, base_dir)
    try:
        load_mapping(file)
    except MappingFileError as exc:
        return [ContractProblem(display(file), pointer, reason) for pointer, reason in exc.problems]
    return []


def mapping_problems(settings: Settings, operations: list[Operation]) -> list[ContractProblem]:
    """Every problem of every declarative vendor's mapping (gateway check; start-up refuses them)."""
    out: list[ContractProblem] = []
    for name, vendor in settings.vendors.items():
        if vendor.adapter == "declarative":
            out += MappingCheck(name, vendor, settings).run(vendor, operations)
    return out
