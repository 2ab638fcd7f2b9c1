"""The hook the runtime installs into each VendorClient (adapters/client.py `contract`).

`check_request` runs once per logical request, before the first attempt, on what goes on the wire: the method, the
path (matched against the contract's templates, path parameters checked), the query string decoded (bracketed keys,
comma-separated and repeated lists), the declared headers, and the encoded body decoded by its media type (JSON,
or the form encoding with Stripe's bracketed keys). In `enforce` mode a violation raises
AdapterContractViolation (500 adapter-contract-violation: our adapter built a request the vendor does not accept,
logged loudly, nothing sent); in `report` mode the request goes out and the violation is logged and counted.

`check_answer` compares the final answer with what the operation declares for its status (drift.py). It never
raises: drift is reported, and the adapter's mapping and the public contract decide the public answer.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import orjson

from gateway.observability import metrics
from gateway.problems import AdapterContractViolation, Violation
from gateway.settings import VendorSettings

from .contract import FORM, VendorContract, VendorOperation, load_vendor_contract
from .drift import Drift, DriftLog, check_status, find_drift
from .schema import FormError, nest

log = logging.getLogger("gateway.vendors.contract")


class ContractCheck:
    """One vendor's contract applied to its requests and answers; `mode` is enforce or report."""

    def __init__(self, contract: VendorContract, mode: str, drift: DriftLog | None, answers: bool = True) -> None:
        self.contract = contract
        self.vendor = contract.vendor
        self.mode = mode
        self.drift = drift
        self.answers = answers and drift is not None

    # -- requests -------------------------------------------------------------------------------------------------

    def violations(self, method: str, target: str, headers: dict[str, str],
                   content: bytes | None) -> tuple[VendorOperation | None, list[Violation]]:
        """The operation `method target` is for and what in the request breaks the contract."""
        path, _, query = target.partition("?")
        matched = self.contract.match(method, path)
        if matched is None:
            return None, [Violation("path", path, f"{method.upper()} {path} is no operation of the {self.vendor} "
                                                  f"contract ({self.contract.file.name})")]
        op, path_values = matched
        found: list[Violation] = []
        for name, param in op.path_params.items():
            found += param.validator.violations(path_values.get(name, ""), "path", "/" + name)
        try:
            decoded = nest(parse_qsl(query, keep_blank_values=True), op.csv, op.repeated)
        except FormError as exc:
            found.append(Violation("query", "/" + exc.key, exc.reason))
        else:
            if op.query is not None:
                found += op.query.violations(decoded, "query")
        lowered = {k.lower(): v for k, v in headers.items()}
        for param in op.headers:
            value = lowered.get(param.name.lower())
            if value is None:
                if param.required:
                    found.append(Violation("header", "/" + param.name, "is required"))
            else:
                found += param.validator.violations(value, "header", "/" + param.name)
        found += self._body(op, lowered.get("content-type"), content)
        return op, found

    def _body(self, op: VendorOperation, content_type: str | None, content: bytes | None) -> list[Violation]:
        if not content:
            if op.body_required:
                return [Violation("body", "", "is required")]
            return []
        if not op.bodies:
            return [Violation("body", "", "this operation takes no body")]
        media = (content_type or "").split(";", 1)[0].strip().lower()
        validator = op.bodies.get(media)
        if validator is None:
            return [Violation("body", "", f"is {media or 'of no declared type'}; the contract declares "
                                          f"{', '.join(sorted(op.bodies))}")]
        if media == FORM:
            try:
                body: Any = nest(parse_qsl(content.decode("utf-8"), keep_blank_values=True))
            except FormError as exc:
                return [Violation("body", "/" + exc.key, exc.reason)]
            except UnicodeDecodeError:
                return [Violation("body", "", "is not UTF-8")]
        else:
            try:
                body = orjson.loads(content)
            except orjson.JSONDecodeError:
                return [Violation("body", "", "is not JSON")]
        return validator.violations(body, "body")

    def check_request(self, method: str, target: str, headers: dict[str, str], content: bytes | None,
                      call: Any) -> VendorOperation | None:
        """Raise AdapterContractViolation (enforce) or log (report) when the request breaks the contract;
        the matched operation is returned for `check_answer`."""
        op, found = self.violations(method, target, headers, content)
        if not found:
            return op
        name = op.operation_id if op is not None else "-"
        operation = getattr(call, "operation_id", None) or "-"
        metrics.vendor_contract_violations_total.labels(self.vendor, name, self.mode).inc()
        listed = "; ".join(f"{v.location} {v.pointer or '/'}: {v.message}" for v in found[:10])
        request_id = getattr(call, "request_id", None)
        log.error("adapter contract violation (%s): %s %s for %s breaks the %s contract's %s: %s", self.mode,
                  method, target.split("?", 1)[0], operation, self.vendor, name, listed,
                  extra={"vendor": self.vendor, "operation": operation, "vendor_operation": name,
                         "request_id": request_id})
        if self.mode == "enforce":
            raise AdapterContractViolation(
                f"the request the gateway built for {self.vendor} ({name}) breaks the vendor's contract: {listed}",
                extensions={"vendor": self.vendor, "vendor_operation": name,
                            "violations": [{"in": v.location, "pointer": v.pointer, "message": v.message}
                                           for v in found[:20]]})
        return op

    # -- answers --------------------------------------------------------------------------------------------------

    def check_answer(self, op: VendorOperation | None, status: int, headers: Any, body: bytes, call: Any) -> None:
        """Drift of one final answer: counted, logged once per distinct drift, kept. Never raises."""
        if op is None or not self.answers or self.drift is None:
            return
        try:
            drifts = check_status(op, status)
            declared = op.response_for(status)
            if declared is not None and declared.schema is not None and body:
                try:
                    value = orjson.loads(body)
                except orjson.JSONDecodeError:
                    drifts = [*drifts, Drift("not_json", "", "the body is not JSON")]
                else:
                    # Compiled first look; the walk that names each drift runs only on an answer that has some.
                    if declared.no_drift is None or not declared.no_drift.is_valid(value):
                        drifts += find_drift(self.contract, declared.schema, value)
            if drifts:
                self.drift.record(self.vendor, op.operation_id, drifts, getattr(call, "request_id", None))
        except Exception:  # noqa: BLE001 - a drift check must never break the call it watches
            log.exception("vendor drift: checking an answer of %s %s failed", self.vendor, op.operation_id)


def contract_file(vendor: VendorSettings, base_dir: Path, name: str | None = None) -> Path | None:
    """The vendor's contract file: configured, or contracts/vendors/<adapter>.yaml when it exists (for a
    declarative adapter, contracts/vendors/<vendor name>.yaml)."""
    if vendor.contract.file:
        path = Path(vendor.contract.file)
        return path if path.is_absolute() else base_dir / path
    stem = name if vendor.adapter == "declarative" and name else vendor.adapter
    default = base_dir / "contracts" / "vendors" / f"{stem}.yaml"
    return default if default.exists() else None


def build_check(name: str, vendor: VendorSettings, base_dir: Path, drift: DriftLog | None) -> ContractCheck | None:
    """The check for one vendor, or None (mode off, or no contract for its adapter). Raises VendorContractError."""
    if vendor.contract.mode == "off":
        return None
    file = contract_file(vendor, base_dir, name)
    if file is None:
        return None
    return ContractCheck(load_vendor_contract(name, file), vendor.contract.mode, drift, vendor.contract.answers)
