"""The adapter seam: what an adapter receives, what it returns, and how it declares its operations.

An adapter translates one of our contract operations into its vendor's real API and back, and maps the vendor's
errors to ours (`adapters.errors`). It holds no policy: auth, limits, validation, retries and idempotency are the
gateway's job. All its HTTP goes through the `VendorClient` it is given.
"""

from __future__ import annotations

import functools
import logging
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from gateway.problems import UpstreamContractViolation
from gateway.settings import VendorSettings

from .client import VendorClient

log = logging.getLogger("adapters")
F = TypeVar("F", bound=Callable[..., Awaitable["AdapterResult"]])


@dataclass(slots=True)
class AdapterCall:
    """One call to an adapter operation: the validated request in the contract's own shape."""

    operation_id: str
    params: dict[str, Any]
    body: Any = None
    request_id: str = ""
    client_id: str | None = None
    idempotency_key: str | None = None
    scopes: frozenset[str] = frozenset()
    options: dict[str, Any] = field(default_factory=dict)  # the route's static options from the contract
    method: str = "GET"
    raw_body: bytes | None = None  # the body as received (pass-through adapters forward it unchanged)
    query_string: bytes = b""
    media_type: str | None = None
    deadline: float | None = None  # time.monotonic() by which every vendor attempt must be done
    attempts: list[dict[str, Any]] = field(default_factory=list)  # one entry per vendor attempt (client.py)
    traceparent: str | None = None  # W3C trace context sent to the vendor (gateway/observability/tracing.py)
    tracestate: str | None = None
    span: Any = None  # the request's span when tracing is on: vendor attempts become its children
    # An earlier attempt of this same call may have taken effect at the vendor, no earlier than this (epoch
    # seconds): a retried, re-claimed or replayed job. A create at a vendor without idempotency keys looks for that
    # effect (by the marker it stamps with `idempotency_key`) before making it again.
    earlier_attempt_since: float | None = None
    # Object-level authorization (x-gateway.ownership, gateway/policies/ownership.py): the owner a create stamps in
    # the vendor's own place, or whose objects a list is filtered to. None: the operation is not owned, or the
    # caller holds the bypass scope (sees every owner's objects).
    owner: str | None = None


@dataclass(slots=True)
class AdapterResult:
    """The answer in the contract's shape: validated against the operation's response schema before it leaves."""

    status: int
    body: Any = None
    headers: dict[str, str] | None = None
    vendor_request_id: str | None = None
    raw: bytes | None = None  # pass-through body (http adapter): sent as is after validation
    media_type: str = "application/json"
    # Ownership: the owner the vendor has stored for the object answered (None: the vendor answer names none),
    # and for a list, one owner per item of the answer's list, in order (see Adapter.OWNERSHIP).
    owner: str | None = None
    owners: list[str | None] | None = None


def operation(fn: F) -> F:
    """Marks an adapter method as routable from a contract (`x-gateway.route: <vendor>.<method name>`).

    A vendor answer of an unexpected shape makes translation code fail with KeyError, TypeError or ValueError;
    that is the vendor breaking its contract, so it becomes a 502 upstream-contract-violation, not a 500.
    """

    @functools.wraps(fn)
    async def guarded(self: Adapter, call: AdapterCall) -> AdapterResult:
        try:
            return await fn(self, call)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            log.warning("%s.%s: vendor answer could not be translated: %s: %s", self.vendor, fn.__name__,
                        type(exc).__name__, exc, extra={"request_id": call.request_id})
            raise UpstreamContractViolation(f"{self.vendor} answered in a shape the adapter does not understand",
                                            extensions={"vendor": self.vendor}) from exc

    guarded.__gateway_operation__ = True  # type: ignore[attr-defined]
    return guarded  # type: ignore[return-value]


Handler = Callable[[AdapterCall], Awaitable[AdapterResult]]


class Adapter:
    """Base class of every vendor adapter. Subclasses set `name` and decorate methods with `@operation`.

    The `@operation` methods of a class (and of its bases) make its operation table, `OPERATIONS`, built once when
    the class is defined: what a contract's `x-gateway.route` may name, what `gateway check` checks routes against,
    and where `handler()` binds each compiled operation at start-up.
    """

    name: ClassVar[str] = ""
    # What each operation does with ownership (x-gateway.ownership; docs/ownership.md), by operation name:
    #   "create"          stamps `call.owner` where the vendor keeps it; the result reports `owner`
    #   "read"            the result reports the owner the vendor stored (`AdapterResult.owner`)
    #   "change:<read>"   changes an existing object: the gateway first asks the "read" operation <read> (same path
    #                     parameters) who owns it, and calls this one only for the caller's own object
    #   "list"            filters at the vendor by `call.owner`; `AdapterResult.owners` reports each item's owner
    #   "list-unfiltered" cannot filter, reports each item's owner: the contract must say `gateway-filtered`
    #   "forward"         a pass-through: the upstream gets the owner and answers with it (http adapter)
    # An owned operation routed to an adapter operation not listed here is refused by `gateway check`.
    OWNERSHIP: ClassVar[dict[str, str]] = {}
    OPERATIONS: ClassVar[dict[str, Callable[..., Awaitable[AdapterResult]]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        table = {n: f for base in reversed(cls.__mro__[1:]) for n, f in getattr(base, "OPERATIONS", {}).items()}
        for n, f in vars(cls).items():
            if getattr(f, "__gateway_operation__", False):
                table[n] = f
            elif n in table:  # overridden by a method that is not an operation
                del table[n]
        cls.OPERATIONS = table

    def __init__(self, vendor: str, settings: VendorSettings, client: VendorClient) -> None:
        self.vendor = vendor
        self.settings = settings
        self.client = client

    @classmethod
    def operations(cls) -> set[str]:
        return set(cls.OPERATIONS)

    @classmethod
    def ownership_kind(cls, operation: str) -> tuple[str | None, str | None]:
        """(kind, read operation) of `operation` in OWNERSHIP: ("change", "get_order"), ("read", None), (None, None)."""
        entry = cls.OWNERSHIP.get(operation)
        if entry is None:
            return None, None
        kind, _, reader = entry.partition(":")
        return kind, reader or None

    def handler(self, operation: str) -> Handler:
        """The bound method for one entry of the operation table (KeyError if the adapter has no such operation)."""
        function = self.OPERATIONS[operation]
        return types.MethodType(function, self)

    @classmethod
    def check_settings(cls, settings: VendorSettings) -> list[str]:
        """Problems with this vendor's settings (missing credentials...), reported before start-up."""
        return []

    async def startup(self) -> None:
        await self.client.start()

    async def shutdown(self) -> None:
        await self.client.close()
