"""Load what is declared for monitoring and check all of it at start-up: every problem, located, at once.

`gateway check` and `gateway serve` run this after the contracts compiled (gateway/runtime.py `check`), so a rule
naming an operation that does not exist, or an objective that cannot be measured or met, stops the gateway before
it serves, with the file and JSON pointer of the mistake:

    reconcile/orders.yaml#/rules/paid-orders/right/source: adapter 'stripe' has no operation 'list_payment' (...)
    contracts/orders.v2.yaml#/paths/~1orders/get/x-gateway/slo/availability: an objective of 100 % leaves no error
        budget: every bad request would break it, so no alert can come before it is broken
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from adapters.registry import adapter_for
from gateway.contracts.load import ContractProblem, display, pointer_join, read_document
from gateway.contracts.operations import TEMPLATE_VAR
from gateway.observability.metrics import FRESHNESS_BUCKETS, LATENCY_BUCKETS

from .calendar import BusinessCalendar, Calendars
from .models import CalendarSpec, PathSpec, RuleSpec, SloSpec, VolumeSpec
from .reconcile import Rule
from .sources import EVENTS
from .synthetic import GoldenPath

if TYPE_CHECKING:
    from gateway.contracts.compile import Operation
    from gateway.contracts.load import Contract
    from gateway.settings import Settings


@dataclass
class Declarations:
    rules: dict[str, Rule] = field(default_factory=dict)
    paths: dict[str, GoldenPath] = field(default_factory=dict)
    calendars: Calendars = field(default_factory=Calendars)


def _files(paths: list[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(x for x in p.rglob("*") if x.suffix in (".yaml", ".yml", ".json"))
        elif p.exists():
            out.append(p)
    return out


def _validate(model: type[BaseModel], value: Any, file: str, base: str) -> tuple[Any, list[ContractProblem]]:
    try:
        return model.model_validate(value), []
    except ValidationError as exc:
        return None, [ContractProblem(file, pointer_join(base, *e["loc"]), e["msg"]) for e in exc.errors()]


def _entries(paths: list[Path], top: str, model: type[BaseModel]) -> list[tuple[str, str, Any, list[Any]]]:
    """(file, name, parsed entry or None, problems) for every entry under `top` of every file; each entry is
    validated on its own, so one broken rule does not hide the problems of the others."""
    out: list[tuple[str, str, Any, list[Any]]] = []
    for i, missing in enumerate(paths):
        if not missing.exists():  # a typo must not silently turn monitoring off
            out.append(("gateway.yaml", "", None, [ContractProblem(
                "gateway.yaml", f"/monitoring/{'reconcile' if top == 'rules' else 'synthetic'}/{i}",
                f"{display(missing)} does not exist")]))
    for path in _files(paths):
        data, problems = read_document(path)
        file = display(path)
        if problems or data is None:
            out.append((file, "", None, problems))
            continue
        entries = data.get(top) if isinstance(data, dict) else None
        if not isinstance(entries, dict) or set(data) != {top}:
            out.append((file, "", None, [ContractProblem(file, "", f"expected a mapping with one key, {top}: "
                                                         f"{{name: ...}}")]))
            continue
        for name, value in entries.items():
            where = pointer_join("/" + top, name)
            if not re.match(r"^[a-z][a-z0-9-]{0,62}$", str(name)):
                out.append((file, str(name), None, [ContractProblem(file, where, "a name is lower case letters, "
                                                                    "digits and dashes")]))
                continue
            parsed, found = _validate(model, value, file, where)
            out.append((file, str(name), parsed, found))
    return out


def _bound_problem(value_s: float, bounds: tuple[float, ...], what: str, unit: float) -> str | None:
    if any(abs(value_s - b) < 1e-9 for b in bounds):
        return None
    allowed = ", ".join(f"{b * unit:g}" for b in bounds)
    return f"{what} is not a bucket bound of the histogram it is measured with, so it cannot be measured exactly: " \
           f"use one of {allowed}"


def _slo_problems(op: Operation) -> list[ContractProblem]:
    raw = op.extension.get("slo")
    if not raw:
        return []
    spec = SloSpec.model_validate(raw)  # shape checked by the contract lint already
    where = pointer_join(op.pointer, "x-gateway", "slo")
    out = []
    no_budget = ("an objective of 100 % leaves no error budget: every bad event would break it, so no alert can "
                 "come before it is broken; use e.g. 99.9")
    if spec.availability == 100:
        out.append(ContractProblem(op.file, pointer_join(where, "availability"), no_budget))
    if spec.latency_ms is not None:
        if spec.latency_ms.p == 100:
            out.append(ContractProblem(op.file, pointer_join(where, "latency_ms", "p"), no_budget))
        if reason := _bound_problem(spec.latency_ms.under / 1000, LATENCY_BUCKETS, f"{spec.latency_ms.under:g} ms",
                                    1000):
            out.append(ContractProblem(op.file, pointer_join(where, "latency_ms", "under"), reason + " (ms)"))
    if spec.freshness is not None:
        if not op.extension.get("async"):
            out.append(ContractProblem(op.file, pointer_join(where, "freshness"), "freshness applies to "
                                       "asynchronous operations (x-gateway.async): this one answers synchronously"))
        if spec.freshness.p == 100:
            out.append(ContractProblem(op.file, pointer_join(where, "freshness", "p"), no_budget))
        if reason := _bound_problem(spec.freshness.within_s, FRESHNESS_BUCKETS, f"{spec.freshness.within_s:g} s",
                                    1):
            out.append(ContractProblem(op.file, pointer_join(where, "freshness", "within_s"), reason + " (s)"))
    return out


def _adapter_ops(settings: Settings, vendor: str) -> set[str] | None:
    vendor_settings = settings.vendors.get(vendor)
    if vendor_settings is None:
        return None
    try:
        return adapter_for(vendor, vendor_settings, settings.base_dir).operations()
    except LookupError:
        return None


def _ref_problem(settings: Settings, ref: str, file: str, where: str) -> ContractProblem | None:
    vendor, _, name = ref.partition(".")
    ops = _adapter_ops(settings, vendor)
    if ops is None:
        known = ", ".join(sorted(settings.vendors)) or "none configured"
        return ContractProblem(file, where, f"unknown vendor {vendor!r} (vendors: {known})")
    if name not in ops:
        adapter = settings.vendors[vendor].adapter
        return ContractProblem(file, where, f"adapter {adapter!r} has no operation {name!r} (it has: "
                                            f"{', '.join(sorted(ops))})")
    return None


def load_declarations(settings: Settings, contracts: list[Contract],
                      operations: list[Operation]) -> tuple[Declarations, list[ContractProblem]]:
    decl = Declarations()
    problems: list[ContractProblem] = []
    # Business calendars: declared at a contract's root, used by its operations, and by rules and paths by name.
    declared: dict[str, tuple[CalendarSpec, str]] = {}
    for contract in contracts:
        for name, raw in ((contract.data.get("x-gateway") or {}).get("calendars") or {}).items():
            spec = CalendarSpec.model_validate(raw)
            where = pointer_join("/x-gateway/calendars", name)
            if name in declared and declared[name][0] != spec:
                problems.append(ContractProblem(contract.name, where, f"calendar {name!r} is declared differently "
                                                f"in {declared[name][1]}"))
                continue
            declared[name] = (spec, contract.name)
            calendar = BusinessCalendar(name, spec)
            try:
                calendar.next_open(0)
            except ValueError:
                problems.append(ContractProblem(contract.name, where, "this calendar is never open"))
                continue
            decl.calendars.by_name[name] = calendar
    for op in operations:
        ext = op.extension
        problems += _slo_problems(op)
        if ext.get("calendar"):
            own = ((op.contract.data.get("x-gateway") or {}).get("calendars") or {})
            if ext["calendar"] not in own:
                problems.append(ContractProblem(op.file, pointer_join(op.pointer, "x-gateway", "calendar"),
                                                f"calendar {ext['calendar']!r} is not declared at this contract's "
                                                f"root (x-gateway.calendars: {', '.join(sorted(own)) or 'none'})"))
            elif ext["calendar"] in decl.calendars.by_name:
                decl.calendars.by_operation[op.key] = decl.calendars.by_name[ext["calendar"]]
        if ext.get("volume"):
            volume = VolumeSpec.model_validate(ext["volume"])
            if volume.recorded and (p := _ref_problem(settings, f"{op.vendor}.{volume.recorded}", op.file,
                                                      pointer_join(op.pointer, "x-gateway", "volume", "recorded"))):
                problems.append(p)
    problems += _rules(settings, decl)
    problems += _paths(settings, decl, operations)
    return decl, problems


def _rules(settings: Settings, decl: Declarations) -> list[ContractProblem]:
    problems: list[ContractProblem] = []
    m = settings.monitoring
    for file, name, spec, found in _entries(m.paths(m.reconcile, settings.base_dir), "rules", RuleSpec):
        problems += found
        if spec is None:
            continue
        base = pointer_join("/rules", name)
        if name in decl.rules:
            problems.append(ContractProblem(file, base, f"rule {name!r} is also declared in {decl.rules[name].file}"))
            continue
        for side_name, side in (("left", spec.left), ("right", spec.right)):
            ref = side.source or side.lookup or ""
            where = pointer_join(base, side_name, "source" if side.source else "lookup")
            if side.lookup and side_name == "left":
                problems.append(ContractProblem(file, where, "the left side lists records over the window "
                                                "(source); only the right side may look them up by key"))
            elif ref == EVENTS and side.source:
                continue
            elif p := _ref_problem(settings, ref, file, where):
                problems.append(p)
        if spec.both_ways and spec.right.lookup:
            problems.append(ContractProblem(file, pointer_join(base, "both_ways"), "both_ways needs a right side "
                                            "that lists its records (source), not one that looks them up"))
        if spec.calendar and spec.calendar not in decl.calendars.by_name:
            problems.append(ContractProblem(file, pointer_join(base, "calendar"), f"no contract declares "
                                            f"calendar {spec.calendar!r}"))
        decl.rules[name] = Rule(name, spec, file)
    return problems


def _paths(settings: Settings, decl: Declarations, operations: list[Operation]) -> list[ContractProblem]:
    problems: list[ContractProblem] = []
    by_key = {op.key: op for op in operations}
    m = settings.monitoring
    for file, name, spec, found in _entries(m.paths(m.synthetic, settings.base_dir), "paths", PathSpec):
        problems += found
        if spec is None:
            continue
        base = pointer_join("/paths", name)
        if name in decl.paths:
            problems.append(ContractProblem(file, base, f"path {name!r} is also declared in {decl.paths[name].file}"))
            continue
        for i, step in enumerate(spec.steps):
            where = pointer_join(base, "steps", i)
            op = by_key.get(step.operation)
            if op is None:
                near = sorted(k for k in by_key if k.split(".")[-1] == step.operation.split(".")[-1])
                problems.append(ContractProblem(file, pointer_join(where, "operation"), f"unknown operation "
                                                f"{step.operation!r}" + (f" (did you mean {', '.join(near)}?)"
                                                                         if near else "")))
                continue
            for param in TEMPLATE_VAR.findall(op.path):
                if param not in step.params:
                    problems.append(ContractProblem(file, pointer_join(where, "params"), f"{step.operation} "
                                                    f"needs the path parameter {param!r}"))
        if spec.calendar and spec.calendar not in decl.calendars.by_name:
            problems.append(ContractProblem(file, pointer_join(base, "calendar"), f"no contract declares "
                                            f"calendar {spec.calendar!r}"))
        decl.paths[name] = GoldenPath(name, spec, file)
    if decl.paths and settings.monitoring.synthetic_token is None and not settings.auth.builtin.enabled:
        problems.append(ContractProblem("gateway.yaml", "/monitoring/synthetic_token", "golden paths call the "
                                        "gateway with a token: enable auth.builtin or set monitoring.synthetic_token"))
    return problems
