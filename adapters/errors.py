"""The single mapping from a vendor's HTTP failure to our error tree.

Each vendor's adapter reads its own error body (Stripe's `error` object, HubSpot's `category`, WooCommerce's `code`)
into a `VendorFailure` and calls `to_problem`; the status decides the class of problem here, so every vendor's 404
is our 404 and every vendor's credential failure is our 502, whatever the vendor calls it.

    vendor answer          our problem
    400, 422               422 VendorRejected (sanitised vendor message)
    402 (payment failed)   422 VendorRejected
    404, 410               404 ResourceNotFound
    409                    409 ResourceConflict
    401, 403               502 VendorCredentialsRejected (operators alerted; caller sees no vendor detail)
    408, 429               503 VendorUnavailable with Retry-After
    5xx                    502 UpstreamProblem
    other 4xx              422 VendorRejected
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC

from gateway.observability import metrics
from gateway.problems import (
    GatewayError,
    ResourceConflict,
    ResourceNotFound,
    UpstreamProblem,
    VendorCredentialsRejected,
    VendorRejected,
    VendorUnavailable,
)

log = logging.getLogger("gateway.vendors")
# Anything that looks like a credential is removed from vendor messages before a caller sees them.
_SECRETISH = re.compile(r"(sk|pk|rk)_(test|live)_[A-Za-z0-9]+|pat-[a-z0-9-]+|ck_[A-Za-z0-9]+|cs_[A-Za-z0-9]+|"
                        r"Bearer\s+\S+|Basic\s+\S+", re.IGNORECASE)
MAX_DETAIL = 300


def sanitise(message: str | None) -> str | None:
    if not message:
        return None
    text = _SECRETISH.sub("[redacted]", str(message)).replace("\n", " ").strip()
    return text[:MAX_DETAIL]


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from datetime import datetime
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


@dataclass(frozen=True, slots=True)
class VendorFailure:
    """What a vendor said when it refused or failed, in its own terms."""

    vendor: str
    status: int
    message: str | None = None
    code: str | None = None
    param: str | None = None
    vendor_request_id: str | None = None
    retry_after_s: float | None = None


def to_problem(f: VendorFailure) -> GatewayError:
    ext: dict[str, object] = {"vendor": f.vendor, "vendor_status": f.status}
    if f.vendor_request_id:
        ext["vendor_request_id"] = f.vendor_request_id
    if f.code:
        ext["vendor_code"] = f.code
    message = sanitise(f.message)
    status = f.status
    if status in (401, 403):
        # The caller cannot fix our credentials; the detail is for operators (logs), not for them.
        metrics.vendor_credential_failures_total.labels(f.vendor).inc()
        log.error("%s refused the gateway's credentials (HTTP %s, %s): fix vendors.%s credentials", f.vendor, status,
                  f.code or "no code", f.vendor, extra={"vendor": f.vendor, "vendor_request_id": f.vendor_request_id})
        return VendorCredentialsRejected(f"{f.vendor} refused the gateway's credentials", extensions=ext)
    if status in (408, 429):
        return VendorUnavailable(f"{f.vendor} is throttling or timed out; try again later",
                                 retry_after_s=f.retry_after_s if f.retry_after_s is not None else 1.0,
                                 extensions=ext)
    if status >= 500:
        return UpstreamProblem(f"{f.vendor} failed with HTTP {status}", extensions=ext)
    if status in (404, 410):
        return ResourceNotFound(message or "not found at the vendor", extensions=ext)
    if status == 409:
        return ResourceConflict(message or "the vendor reports a conflict", extensions=ext)
    if f.param:
        ext["vendor_param"] = f.param
    return VendorRejected(message or f"{f.vendor} refused the request (HTTP {status})", extensions=ext)
