"""Webhook signatures: Stripe's `Stripe-Signature` and Standard Webhooks (verify inbound, sign outbound).

Stripe: `t=<unix>,v1=<hex HMAC-SHA256 of "t.payload">[,v1=...]`; any v1 may match any configured secret (so a
secret can be rotated with both active), and `t` must be within the tolerance window (replays of old deliveries
fail). Standard Webhooks (https://www.standardwebhooks.com): `webhook-id`, `webhook-timestamp`,
`webhook-signature: v1,<base64>`; verified and signed with the `standardwebhooks` package, several secrets tried in
turn during a rotation. Comparisons are constant-time. Nothing is parsed or stored before a signature verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from datetime import UTC, datetime

from standardwebhooks import Webhook, WebhookVerificationError


class SignatureInvalid(Exception):
    """The delivery cannot be trusted. `malformed` is True when the signature header itself is unusable."""

    def __init__(self, reason: str, malformed: bool = False) -> None:
        super().__init__(reason)
        self.malformed = malformed


def verify_stripe(payload: bytes, header: str | None, secrets: list[str], tolerance_s: float,
                  now: float | None = None) -> None:
    if not header:
        raise SignatureInvalid("the Stripe-Signature header is missing", malformed=True)
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t" and value.isascii() and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        raise SignatureInvalid("the Stripe-Signature header has no timestamp or no v1 signature", malformed=True)
    if abs((now if now is not None else time.time()) - timestamp) > tolerance_s:
        raise SignatureInvalid("the signature's timestamp is outside the tolerance window")
    signed = str(timestamp).encode() + b"." + payload
    for secret in secrets:
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        if any(hmac.compare_digest(expected, candidate) for candidate in signatures):
            return
    raise SignatureInvalid("no signature matches")


def sign_stripe(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A Stripe-Signature header value (for the sandbox that plays Stripe, and tests)."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), str(t).encode() + b"." + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify_standard(payload: bytes, headers: dict[str, str], secrets: list[str]) -> str:
    """Verify a Standard Webhooks delivery; returns its `webhook-id`."""
    needed = {k: headers.get(k, "") for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    if not all(needed.values()):
        raise SignatureInvalid("the webhook-id, webhook-timestamp and webhook-signature headers are required",
                               malformed=True)
    if not (needed["webhook-timestamp"].isascii() and needed["webhook-timestamp"].isdigit()):
        raise SignatureInvalid("webhook-timestamp is not a number", malformed=True)
    last = "no signature matches"
    for secret in secrets:
        try:
            Webhook(secret).verify(payload, needed, json_parse=False)
            return needed["webhook-id"]
        except WebhookVerificationError as exc:
            last = str(exc)  # the library's reasons: too old, too new, no matching signature
    raise SignatureInvalid(last)


def sign_standard(msg_id: str, payload: bytes, secret: str, timestamp: float | None = None) -> dict[str, str]:
    """The three Standard Webhooks headers for one outbound delivery."""
    when = datetime.fromtimestamp(time.time() if timestamp is None else timestamp, UTC)
    signature = Webhook(secret).sign(msg_id, when, payload.decode())
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(when.timestamp())), "webhook-signature": signature}
