"""The declarative adapter: a vendor served from a mapping file, no Python of its own.

`declarative_class(vendor, settings, base_dir)` reads `vendors.<vendor>.mapping` once and makes an Adapter subclass
whose operation table (`OPERATIONS`) and `OWNERSHIP` are the file's routes: `gateway check`, the compiler and the
ownership policy see it as any other adapter. Each route is one vendor call through the same VendorClient as the
Python adapters (breaker, deadline, safe retries, the vendor contract's request check and drift check); a vendor
failure goes through adapters/errors.py's one table; an answer the mapping cannot read is a 502
upstream-contract-violation (the `@operation` guard), never a crash.

That every pointer exists in both contracts, that types fit and that required fields are supplied is checked at
start-up, with the contracts at hand, by gateway/vendorcontracts/mapping.py.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote

from adapters.base import Adapter, AdapterCall, AdapterResult
from adapters.client import VendorResponse
from adapters.errors import VendorFailure, retry_after_seconds, to_problem
from gateway.problems import InternalError, RequestUnprocessable, UpstreamContractViolation, Violation
from gateway.settings import VendorSettings

from .engine import MISSING, Compiled, Parts, build, compile_rules, read, split, write
from .spec import CREDENTIAL, RESERVED, Errors, MappingFileError, MappingSpec, OperationSpec, escape, load_mapping

log = logging.getLogger("adapters.declarative")


class Plan:
    """One route compiled: the vendor call and the rules both ways."""

    __slots__ = ("method", "template", "request", "request_rules", "body", "read_only", "status", "response", "owner",
                 "errors")

    def __init__(self, spec: OperationSpec, errors: Errors) -> None:
        self.method = spec.method
        self.template = spec.path
        self.request = compile_rules(spec.request)
        self.request_rules = {parts: rule for parts, rule in self.request}
        self.body = any(target.startswith("/body") for target in spec.request)
        self.read_only = spec.read_only
        self.status = spec.response.status
        self.response = compile_rules(spec.response.body)
        self.owner = Compiled(spec.response.owner) if spec.response.owner is not None else None
        chosen = spec.errors or errors
        self.errors: tuple[tuple[Parts, ...], tuple[Parts, ...]] = (
            tuple(split(p) for p in chosen.message), tuple(split(p) for p in chosen.code))


def mapping_file(settings: VendorSettings, base_dir: Path) -> Path:
    path = Path(settings.mapping or "")
    return path if path.is_absolute() else base_dir / path


class DeclarativeAdapter(Adapter):
    """Base of the classes `declarative_class` makes; `SPEC` and `PLANS` are the mapping file's."""

    name = "declarative"
    SPEC: ClassVar[MappingSpec]
    PLANS: ClassVar[dict[str, Plan]] = {}

    @classmethod
    def check_settings(cls, settings: VendorSettings) -> list[str]:
        missing = []
        for name in cls.SPEC.credentials:
            value = settings.credentials.get(name)
            if value is None or not value.get_secret_value().strip():
                missing.append(f"credentials.{name} is required (the mapping file's `credentials`)")
        return missing

    def __init__(self, vendor: str, settings: VendorSettings, client: Any) -> None:
        super().__init__(vendor, settings, client)
        # Static headers with their credentials filled in once (never logged: the client logs no headers).
        self.headers = {name: CREDENTIAL.sub(lambda m: settings.secret(m.group(1)), value)
                        for name, value in self.SPEC.headers.items()}
        self.idempotency_header = self.SPEC.idempotency_header

    def prepare(self, call: AdapterCall, plan: Plan) -> tuple[str, dict[str, Any], dict[str, str], Any]:
        """The vendor request (path, query, headers, body) from the public request, before any vendor call and
        outside the @operation guard: a value of the caller's that cannot be converted is the caller's 422
        (located at its field), a rule that cannot run is our mapping's bug, a loud 500; never the vendor's 502."""
        source = {"body": call.body, "params": call.params, "owner": call.owner,
                  "idempotency_key": call.idempotency_key}
        out: dict[str, Any] = {}
        for target, rule in plan.request:
            try:
                value = rule.value(source)
            except ValueError as exc:
                raise _caller_problem(rule, str(exc)) from None
            except (KeyError, TypeError, AttributeError, IndexError) as exc:
                raise self._our_bug(call, plan, f"request rule {_pointer(target)}: {type(exc).__name__}: {exc}") \
                    from None
            if value is MISSING or (value is None and target[0] != "body"):
                continue  # null is absent outside the body: never `?flag=None` nor a "None" path segment
            write(out, target, value)
        path = plan.template
        for name, value in (out.get("path") or {}).items():
            text = _wire(value)
            if not text:
                raise _caller_problem(plan.request_rules[("path", name)], "is empty: it names the vendor's object")
            path = path.replace("{" + name + "}", quote(text, safe=""))
        if "{" in path:  # the mapping check makes path values sure: one missing is our bug
            raise self._our_bug(call, plan, f"a path parameter of {plan.template} has no value")
        headers = dict(self.headers)
        for name, value in (out.get("header") or {}).items():
            headers[name] = _wire(value)
        if self.idempotency_header and call.idempotency_key:
            headers[self.idempotency_header] = call.idempotency_key
        query = {k: ([_wire(v) for v in value if v is not None] if isinstance(value, list) else _wire(value))
                 for k, value in (out.get("query") or {}).items()}
        return path, query, headers, out.get("body", {}) if plan.body else None

    def _our_bug(self, call: AdapterCall, plan: Plan, what: str) -> InternalError:
        log.error("%s: the mapping cannot build the vendor request for %s %s (a bug of the mapping file): %s",
                  self.vendor, plan.method, plan.template, what, extra={"request_id": call.request_id})
        return InternalError(f"the gateway could not build the request to {self.vendor}")

    async def run(self, call: AdapterCall, plan: Plan, prepared: tuple[str, dict[str, Any], dict[str, str], Any]
                  ) -> AdapterResult:
        path, query, headers, body = prepared
        response = await self.client.request(plan.method, path, params=query or None, json=body, headers=headers,
                                             call=call, request_id=call.request_id, read_only=plan.read_only,
                                             deduplicated=bool(self.idempotency_header and call.idempotency_key))
        if response.status >= 300:
            raise to_problem(self._failure(response, plan))
        answer = response.json() if response.body else None  # 204: nothing to read, the rules give defaults
        owner = plan.owner.value(answer) if plan.owner is not None else MISSING
        return AdapterResult(plan.status or response.status, build(plan.response, answer),
                             vendor_request_id=response.vendor_request_id(),
                             owner=str(owner) if owner not in (MISSING, None, "") else None)

    def _failure(self, response: VendorResponse, plan: Plan) -> VendorFailure:
        message = code = None
        try:
            body = response.json()
        except Exception:  # noqa: BLE001 - an error body that is not JSON still maps by its status
            body = None
        messages, codes = plan.errors
        for where in messages:
            if (found := read(body, where)) not in (MISSING, None):
                message = str(found)
                break
        for where in codes:
            if (found := read(body, where)) not in (MISSING, None):
                code = str(found)
                break
        return VendorFailure(self.vendor, response.status, message, code,
                             vendor_request_id=response.vendor_request_id(),
                             retry_after_s=retry_after_seconds(response.header("retry-after")))


# Every name the class adds to Adapter is reserved in the mapping (a route of that name would replace it).
assert {n for n in vars(DeclarativeAdapter) if not n.startswith("_") and not hasattr(Adapter, n)} <= RESERVED


def _wire(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _caller_problem(rule: Compiled, reason: str) -> RequestUnprocessable:
    """A value of the caller's that the mapping cannot carry to the vendor, located at the caller's field."""
    head, rest = (rule.origin[0], rule.origin[1:]) if rule.origin else ("body", ())
    location = "body" if head == "body" else "path" if head == "params" else "header"
    return RequestUnprocessable([Violation(location, _pointer(rest), reason)])


def _pointer(parts: Parts) -> str:
    return "".join("/" + escape(p) for p in parts)


def _route(name: str) -> Any:
    async def route(self: DeclarativeAdapter, call: AdapterCall) -> AdapterResult:
        plan = self.PLANS[name]
        prepared = self.prepare(call, plan)  # outside the guard: our own request is never the vendor's fault
        try:
            return await self.run(call, plan, prepared)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            # the vendor's answer could not be translated: its contract broken, 502 (as adapters.base.operation)
            log.warning("%s.%s: vendor answer could not be translated: %s: %s", self.vendor, name,
                        type(exc).__name__, exc, extra={"request_id": call.request_id})
            raise UpstreamContractViolation(f"{self.vendor} answered in a shape the adapter does not understand",
                                            extensions={"vendor": self.vendor}) from exc

    route.__name__ = route.__qualname__ = name
    route.__gateway_operation__ = True  # type: ignore[attr-defined]  # routable, as adapters.base.operation marks
    return route


def make_class(vendor: str, spec: MappingSpec) -> type[DeclarativeAdapter]:
    """An Adapter subclass whose routes are the mapping's operations."""
    namespace: dict[str, Any] = {name: _route(name) for name in spec.operations}
    namespace.update(SPEC=spec, PLANS={name: Plan(op, spec.errors) for name, op in spec.operations.items()},
                     OWNERSHIP={name: op.ownership for name, op in spec.operations.items() if op.ownership},
                     __module__=__name__, __doc__=f"The {vendor} vendor, from its mapping file.")
    return type(f"Declarative_{vendor}", (DeclarativeAdapter,), namespace)


def declarative_class(vendor: str, settings: VendorSettings, base_dir: Path) -> type[DeclarativeAdapter]:
    """The adapter class of a declarative vendor (made once per file version); LookupError if the file is unusable
    (its problems, with pointers, are reported by `gateway check`)."""
    file = mapping_file(settings, base_dir)
    try:
        stamp = file.stat().st_mtime_ns
    except OSError:
        raise LookupError(f"mapping file {settings.mapping} does not exist") from None
    return _cached(vendor, file, stamp)


@functools.lru_cache(maxsize=64)
def _cached(vendor: str, file: Path, stamp: int) -> type[DeclarativeAdapter]:
    try:
        return make_class(vendor, load_mapping(file))
    except MappingFileError as exc:
        raise LookupError(f"mapping file {file.name} is not usable ({len(exc.problems)} problem(s), listed under "
                          "its name)") from None
