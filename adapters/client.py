"""VendorClient: the one way adapters reach a vendor over HTTP.

One client per vendor, created at start-up: a pooled connection set, explicit connect and read timeouts and
a total deadline, the caller's request id forwarded, transport failures translated into our error tree here and
nowhere else. Every call passes the vendor's circuit breaker and is retried (exponential backoff with full jitter,
Retry-After honoured, within the request's deadline and the vendor's retry budget) only when that is safe: an
idempotent method, an idempotency key the vendor honours (`deduplicated`, said by the adapter), or a connection that
was never made. Each attempt is recorded on the AdapterCall (for logs, metrics and `gateway trace`).

Below the client is a transport (adapters/transport/: one method, `send`): `h1`, the lean keep-alive pool on
httptools (the default, measured ~45% less CPU per request than aiohttp in the full chain), or `aiohttp`; tests
plug in `MockTransport` or `ASGITransport` (no sockets). A transport raises four errors, mapped here to ours.

`contract`: the vendor's own contract (gateway/vendorcontracts/, installed by the runtime; None when the vendor has
none). Each logical request is checked once before it is sent, on its real wire form (`check_request` raises in
enforce mode), and its final answer is checked for drift (`check_answer`, which never raises).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlencode

import orjson

from gateway.observability import metrics
from gateway.problems import GatewayError, UpstreamContractViolation, UpstreamProblem, VendorTimeout, VendorUnavailable
from gateway.settings import VendorSettings

from .backpressure import VendorThrottle
from .errors import retry_after_seconds
from .resilience import Backoff, RetryBudget, VendorBreaker
from .transport import AnswerTooLarge, ConnectFailed, Disconnected, Transport, TransportTimeout, build_transport
from .transport.h1 import IDEMPOTENT_METHODS

if TYPE_CHECKING:
    from gateway.stores.limiter import Limiter

    from .base import AdapterCall

log = logging.getLogger("gateway.vendors")
VENDOR_REQUEST_ID_HEADERS = ("request-id", "x-request-id", "x-hubspot-correlation-id", "x-correlation-id")


class VendorResponse:
    """Status, headers (case-insensitive mapping) and raw body of one vendor answer."""

    __slots__ = ("status", "headers", "body", "vendor")

    def __init__(self, vendor: str, status: int, headers: Mapping[str, str], body: bytes) -> None:
        self.vendor = vendor
        self.status = status
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        """The body as JSON; a vendor that sends something else breaks its contract with us."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            raise UpstreamContractViolation(
                f"{self.vendor} answered HTTP {self.status} with a body that is not JSON",
                extensions={"vendor": self.vendor}) from None

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def vendor_request_id(self) -> str | None:
        """The vendor's own id for this answer (for support tickets), under whichever name it uses."""
        for name in VENDOR_REQUEST_ID_HEADERS:
            if value := self.headers.get(name):
                return str(value)
        return None


def attempt_outcome(entry: dict[str, Any]) -> str:
    """A bounded word for how one recorded attempt ended: ok, 4xx, 5xx, timeout, unavailable or error."""
    status = entry.get("status")
    if status is None:
        return {"VendorTimeout": "timeout", "VendorUnavailable": "unavailable"}.get(entry.get("error", ""), "error")
    return "ok" if status < 400 else ("4xx" if status < 500 else "5xx")


class ContractHook(Protocol):
    """What the client asks of a vendor contract (gateway/vendorcontracts/check.py implements it)."""

    def check_request(self, method: str, target: str, headers: dict[str, str], content: bytes | None,
                      call: Any) -> Any: ...

    def check_answer(self, checked: Any, status: int, headers: Any, body: bytes, call: Any) -> None: ...


class VendorClient:
    """Pooled HTTP client for one vendor. `request()` returns any HTTP answer; only transport failures raise."""

    def __init__(self, vendor: str, settings: VendorSettings, transport: str | Transport = "h1",
                 limiter: Limiter | None = None) -> None:
        self.vendor = vendor
        self.settings = settings
        self.base_url = settings.base_url
        # A transport's name (built at start()) or a transport object (tests: MockTransport, ASGITransport).
        self.transport_name = transport if isinstance(transport, str) else type(transport).__name__
        self._transport: Transport | None = None if isinstance(transport, str) else transport
        b, r = settings.breaker, settings.retries
        self.breaker = VendorBreaker(vendor, b.fail_max, b.reset_timeout_s, b.half_open_max_calls)
        self.budget = RetryBudget(r.budget_ratio, r.budget_min_per_s)
        self.backoff = Backoff(r.backoff_base_s, r.backoff_cap_s)
        self.throttle = VendorThrottle(vendor, settings.limits, limiter)
        # Set by the runtime: where attempt lines go (gateway/observability/logs.py), and the tracer when tracing is on.
        self.events: Any = None
        self.tracing: Any = None
        self.contract: ContractHook | None = None  # set by the runtime: the vendor's contract, checked both ways
        self._attempt_metrics: dict[tuple[str, str], Any] = {}
        self._started = False
        t = settings.timeouts
        self.attempt_timeout_s = min(t.total_s, t.connect_s + t.read_s)

    async def start(self) -> None:
        if self._transport is None:
            self._transport = build_transport(self.transport_name, self.settings)
        self._started = True

    async def close(self) -> None:
        if self._transport is not None:
            await self._transport.close()
        self._started = False

    async def request(self, method: str, path: str, *, params: Any = None, json: Any = None,
                      form: Any = None, content: bytes | None = None, headers: dict[str, str] | None = None,
                      call: AdapterCall | None = None, request_id: str | None = None,
                      read_only: bool = False, deduplicated: bool = False) -> VendorResponse:
        """Send one logical request to `base_url + path`, through the breaker, with retries where safe.

        `read_only`: the vendor documents this request as changing nothing although its method is not idempotent
        (a search sent as POST): it is retried like a GET.
        `deduplicated`: the request carries an idempotency key the vendor honours (whatever its header is called),
        so sending it twice has one effect: it is retried like a GET too. Said by the adapter, never guessed from
        a header's name.

        Returns the vendor's answer whatever its status (the adapter maps failures); raises our errors for
        transport failures, an open breaker, or a spent deadline.
        """
        if not self._started:
            raise VendorUnavailable(f"{self.vendor} client is not started")
        hdrs = dict(headers) if headers else {}
        request_id = call.request_id if call is not None else request_id
        if request_id:
            hdrs["x-request-id"] = request_id
        if call is not None and call.traceparent:
            hdrs["traceparent"] = call.traceparent  # replaced per attempt by the attempt's span when tracing
            if call.tracestate:
                hdrs["tracestate"] = call.tracestate
        if json is not None:
            content = orjson.dumps(json)
            hdrs["content-type"] = "application/json"
        elif form is not None:
            content = urlencode(form, doseq=True).encode()
            hdrs["content-type"] = "application/x-www-form-urlencoded"
        if params:  # the wire form, encoded once for every attempt and for the contract check
            path += ("&" if "?" in path else "?") + urlencode(params, doseq=True)
            params = None
        contract = self.contract
        checked = contract.check_request(method, path, hdrs, content, call) if contract is not None else None
        # Safe to send twice: the method says so, or the vendor deduplicates by our idempotency key.
        repeatable = read_only or deduplicated or method in IDEMPOTENT_METHODS
        deadline = call.deadline if call is not None else None
        async with self.throttle.slot():  # our side of the vendor's limits: refused here, the vendor never knows
            trial = self.breaker.admit()
            try:
                response = await self._attempts(method, path, params, content, hdrs, call, repeatable, deadline,
                                                 trial, request_id)
            except asyncio.CancelledError:
                if trial:  # never recorded: without this the half-open breaker would wait for it forever
                    self.breaker.release_trial()
                raise
        if contract is not None:
            contract.check_answer(checked, response.status, response.headers, response.body, call)
        return response

    async def _attempts(self, method: str, path: str, params: Any, content: bytes | None, hdrs: dict[str, str],
                        call: AdapterCall | None, repeatable: bool, deadline: float | None, trial: bool,
                        request_id: str | None) -> VendorResponse:
        self.budget.deposit()
        attempt = 0
        while True:
            attempt += 1
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                self.breaker.record(failed=True, trial=trial)
                raise VendorTimeout(f"the request's deadline passed while calling {self.vendor}",
                                    extensions={"vendor": self.vendor})
            span = None
            if self.tracing is not None:
                span, hdrs["traceparent"] = self.tracing.start_attempt(
                    call.span if call is not None else None, self.vendor, method, path.split("?", 1)[0], attempt)
            started = time.monotonic()
            response: VendorResponse | None = None
            error: GatewayError | None = None
            # One attempt may take the vendor's own budget (connect, then the answer), never past the deadline.
            limit = min(self.attempt_timeout_s, remaining) if remaining is not None else self.attempt_timeout_s
            try:
                response = await self._send(method, path, params, content, hdrs, limit)
                self.throttle.observe(response)
            except GatewayError as exc:
                error = exc
            if span is not None:
                self.tracing.end(span, response.status if response is not None else None,
                                 type(error).__name__ if error is not None else None)
            self._record_attempt(call, attempt, method, path, response, error, started, request_id)
            failed = error is not None or response.status >= 500 or response.status in (408, 429)  # type: ignore
            if not failed:
                self.breaker.record(failed=False, trial=trial)
                return response  # type: ignore[return-value]
            delay = self._retry_delay(attempt, repeatable, response, error, deadline)
            if delay is None:
                self.breaker.record(failed=True, trial=trial)
                if error is not None:
                    raise error
                return response  # type: ignore[return-value]
            if self.throttle.paused_until > time.monotonic() + delay:
                # The vendor asked for a longer pause than our backoff: do not knock again before it ends.
                self.breaker.record(failed=True, trial=trial)
                if error is not None:
                    raise error
                return response  # type: ignore[return-value]
            reason = f"status {response.status}" if response is not None else type(error).__name__
            metrics.vendor_retries_total.labels(self.vendor, reason).inc()
            log.info("retrying %s %s on %s after %s (attempt %d, waiting %.0f ms)", method, path, self.vendor,
                     reason, attempt, delay * 1000, extra={"vendor": self.vendor, "attempt": attempt,
                                                          "request_id": request_id})
            await asyncio.sleep(delay)

    def _retry_delay(self, attempt: int, repeatable: bool, response: VendorResponse | None,
                     error: GatewayError | None, deadline: float | None) -> float | None:
        """How long to wait before the next attempt, or None when this failure is final."""
        policy = self.settings.retries
        if attempt >= policy.max_attempts:
            return None
        # A refused connection never reached the vendor: retrying it is safe for any method.
        never_sent = isinstance(error, VendorUnavailable) and error.extensions.get("connect") is True
        if not (repeatable or never_sent):
            return None
        delay = self.backoff.delay(attempt)
        if response is not None:
            asked = retry_after_seconds(response.header("retry-after"))
            if asked is not None:
                if asked > policy.max_retry_after_s:
                    return None  # the vendor wants a long pause: tell the caller rather than hold the request
                delay = max(delay, asked)
        if deadline is not None and time.monotonic() + delay >= deadline:
            return None
        if not self.budget.withdraw():
            metrics.retry_budget_exhausted_total.labels(self.vendor).inc()
            return None
        return delay

    def _record_attempt(self, call: AdapterCall | None, attempt: int, method: str, path: str,
                        response: VendorResponse | None, error: GatewayError | None, started: float,
                        request_id: str | None) -> None:
        """One attempt: on the call (for the access line and `gateway trace`), in metrics, as a log line."""
        seconds = time.monotonic() - started
        entry: dict[str, Any] = {"vendor": self.vendor, "attempt": attempt, "method": method,
                                 "path": path.split("?", 1)[0], "ms": round(seconds * 1000, 2)}
        if response is not None:
            entry["status"] = response.status
            if vendor_id := response.vendor_request_id():
                entry["vendor_request_id"] = vendor_id
        else:
            entry["error"] = type(error).__name__
        outcome = attempt_outcome(entry)
        operation = call.operation_id if call is not None else "-"
        child = self._attempt_metrics.get((operation, outcome))
        if child is None:
            child = metrics.vendor_attempt_seconds.labels(self.vendor, operation, outcome)
            self._attempt_metrics[(operation, outcome)] = child
        child.observe(seconds)
        if call is not None:
            call.attempts.append(entry)
        events = self.events
        if events is not None and events.level <= logging.INFO:
            events.emit(logging.INFO if outcome in ("ok", "4xx") else logging.WARNING, "vendor_attempt",
                        {"request_id": request_id, "operation": operation, "outcome": outcome, **entry})

    async def _send(self, method: str, path: str, params: Any, content: bytes | None, headers: dict[str, str],
                    timeout_s: float | None) -> VendorResponse:
        if params:
            path += ("&" if "?" in path else "?") + urlencode(params, doseq=True)
        assert self._transport is not None
        try:
            answer = await self._transport.send(method, path, headers, content, timeout_s)
        except (TransportTimeout, TimeoutError):
            raise VendorTimeout(f"{self.vendor} did not answer in time", extensions={"vendor": self.vendor}) from None
        except ConnectFailed:
            raise VendorUnavailable(f"cannot connect to {self.vendor}",
                                    extensions={"vendor": self.vendor, "connect": True}) from None
        except Disconnected:
            raise UpstreamProblem(f"{self.vendor} closed the connection without a complete answer",
                                  extensions={"vendor": self.vendor}) from None
        except AnswerTooLarge:
            raise UpstreamProblem(f"{self.vendor}'s answer is larger than the gateway accepts "
                                  f"(vendors.{self.vendor}.pool.max_response_bytes)",
                                  extensions={"vendor": self.vendor}) from None
        return VendorResponse(self.vendor, answer.status, answer.headers, answer.body)
