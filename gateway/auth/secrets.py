"""Hashing of client secrets and API keys: nothing the gateway stores can be used to authenticate.

Client secrets may be chosen by people, so they get a salted, slow hash (PBKDF2-HMAC-SHA256, 600,000 iterations:
OWASP's 2023 recommendation); they are checked once per token, not per request. API keys are generated here with
192 bits of randomness, so a plain SHA-256 digest is as strong and lets the hot path check one in microseconds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

PBKDF2_ITERATIONS = 600_000
API_KEY_PREFIX = "cgk_"


def hash_secret(secret: str, iterations: int = PBKDF2_ITERATIONS) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, iterations)
    return f"pbkdf2_sha256${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_secret(secret: str, stored: str) -> bool:
    try:
        scheme, iterations, salt, digest = stored.split("$")
        if scheme != "pbkdf2_sha256":
            return False
        computed = hashlib.pbkdf2_hmac("sha256", secret.encode(), base64.b64decode(salt), int(iterations))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(computed, base64.b64decode(digest))


def new_api_key() -> str:
    return API_KEY_PREFIX + secrets.token_urlsafe(24)


def hash_api_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()
