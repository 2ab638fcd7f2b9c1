"""Stripe's wire protocol as the Stripe sandbox speaks it: keys, form parameters, errors, request ids, idempotency.

The PaymentIntents and Refunds logic lives in sandbox.py; this module is what every Stripe endpoint shares:

- authentication: `Authorization: Bearer sk_…`, or HTTP Basic with the key as user name (`curl -u sk_…:`); a
  missing, publishable or wrong key is Stripe's 401 body, which shows only a masked key;
- parameters: form-encoded POST bodies or GET query strings with bracket notation (`metadata[order_id]=…`,
  `expand[]=…`), unknown ones refused (`parameter_unknown`), a non-form body refused as Stripe refuses it;
- errors: `{"error": {"type", "code", "message", "param", "doc_url", "request_log_url"}}`;
- every answer carries `Request-Id: req_…` and the `Stripe-Version` it was rendered with;
- idempotency (https://docs.stripe.com/api/idempotent_requests): a POST's first answer is saved under its
  `Idempotency-Key` once the endpoint has started executing (a request refused for its parameters saves nothing
  and may be corrected under the same key); the same key and parameters again replay the saved status and body
  with `Idempotent-Replayed: true` and `Original-Request`; other parameters or another endpoint are a 400
  `idempotency_error`.
"""

from __future__ import annotations

import base64
import re
import secrets
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response

from sandboxes.base import json_response

SECRET_KEY = "sk_test_sandbox0000000000000000"  # gateway.yaml's demo default; every other key is refused
DEFAULT_VERSION = "2024-06-20"  # the simulated account's default API version
_ALNUM = string.ascii_letters + string.digits
_KEY = re.compile(r"^([A-Za-z0-9_]+)((?:\[[^\[\]]*\])*)$")
_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[a-z]+)?$")
Handler = Callable[[Mapping[str, str], dict[str, Any]], dict[str, Any]]


def new_id(prefix: str, length: int = 24) -> str:
    return prefix + "_" + "".join(secrets.choice(_ALNUM) for _ in range(length))


class StripeError(Exception):
    """An answer in Stripe's error shape. `executed`: the endpoint ran, so the idempotency layer saves the answer."""

    def __init__(self, status: int, message: str, *, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, executed: bool = False, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.executed = status, executed
        self.error: dict[str, Any] = {"type": type_, "message": message}
        if code:
            self.error["code"] = code
            self.error["doc_url"] = "https://docs.stripe.com/error-codes/" + code.replace("_", "-")
        if param:
            self.error["param"] = param
        self.error.update(extra)

    def body(self, request_id: str) -> dict[str, Any]:
        return {"error": {**self.error, "request_log_url": f"https://dashboard.stripe.com/test/logs/{request_id}"}}


def missing(name: str) -> StripeError:
    return StripeError(400, f"Missing required param: {name}.", code="parameter_missing", param=name)


def fault_response(status: int, message: str) -> Response:
    """Stripe's body for a status injected by the sandbox's fault rules."""
    if status == 429:
        error = StripeError(429, "Too many requests hit the API too quickly. We recommend an exponential backoff of "
                                 "your requests.", code="rate_limit")
    elif status >= 500:
        error = StripeError(status, "An unknown error occurred", type_="api_error")
    elif status == 402:
        error = StripeError(402, "Your card was declined.", type_="card_error", code="card_declined",
                            decline_code="generic_decline")
    else:
        error = StripeError(status, message)
    request_id = new_id("req", 14)
    return json_response(error.body(request_id), status, {"request-id": request_id})


def authorize(header: str | None) -> None:
    """Stripe's own key check: Bearer, or Basic with the key as user name (what `curl -u sk_…:` sends)."""
    scheme, _, credential = (header or "").partition(" ")
    key = credential.strip()
    if scheme.lower() == "basic":
        try:
            key = base64.b64decode(key).decode().partition(":")[0]
        except (ValueError, UnicodeDecodeError):
            key = ""
    elif scheme.lower() != "bearer":
        key = ""
    if not key:
        raise StripeError(401, "You did not provide an API key. You need to provide your API key in the "
                          "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). "
                          "See https://docs.stripe.com/api#authentication for details, or we can help at "
                          "https://support.stripe.com/.")
    if key.startswith("pk_"):
        raise StripeError(401, "This API call cannot be made with a publishable API key. Please use a secret API "
                          "key. You can find a list of your API keys at https://dashboard.stripe.com/account/apikeys.")
    if not secrets.compare_digest(key, SECRET_KEY):
        prefix = m.group(0) if (m := re.match(r"^[a-z]{2}_(test|live)_", key)) else ""
        rest = key[len(prefix):]
        raise StripeError(401, f"Invalid API Key provided: {prefix}{'*' * max(0, len(rest) - 4)}{rest[-4:]}")


def decode(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Stripe's bracket notation: `a[b]=1` -> {"a": {"b": "1"}}, `a[]=1` and `a[0]=1` -> {"a": ["1"]}."""
    params: dict[str, Any] = {}
    for key, value in pairs:
        m = _KEY.match(key)
        if m is None:
            raise StripeError(400, f"Received unknown parameter: {key}", code="parameter_unknown", param=key)
        keys = [m.group(1), *re.findall(r"\[([^\[\]]*)\]", m.group(2))]
        listed = len(keys) > 1 and (keys[-1] == "" or keys[-1].isdigit())
        *parents, last = keys[:-1] if listed else keys
        node = params
        for name in parents:
            node = node.setdefault(name, {})
            if not isinstance(node, dict):
                raise StripeError(400, "Invalid hash", param=keys[0])
        if listed:
            items = node.setdefault(last, [])
            if not isinstance(items, list):
                raise StripeError(400, "Invalid array", param=keys[0])
            items.append(value)
        elif isinstance(node.get(last), (dict, list)):
            raise StripeError(400, "Invalid hash", param=keys[0])
        else:
            node[last] = value
    return params


def integer(params: Mapping[str, Any], name: str) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"-?[0-9]+", value):
        raise StripeError(400, f"Invalid integer: {value}", code="parameter_invalid_integer", param=name)
    return int(value)


def text(params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is not None and not isinstance(value, str):
        raise StripeError(400, f"Invalid string: {value!r}", param=name)
    return value or None  # Stripe reads an empty value as "unset"


def boolean(params: Mapping[str, Any], name: str) -> bool:
    value = params.get(name, "false")
    if value not in ("true", "false"):
        raise StripeError(400, f"Invalid boolean: {value}", param=name)
    return value == "true"


@dataclass
class Saved:
    """The first answer to an idempotency key, and what it answered."""

    endpoint: str
    fingerprint: list[tuple[str, str]]
    status: int
    body: bytes
    request_id: str


def endpoint(handler: Handler, saved_answers: dict[str, Saved], allowed: set[str],
             expandable: set[str]) -> Callable[[Request], Any]:
    """A Starlette endpoint running `handler(path_params, params)` behind Stripe's checks and idempotency layer."""

    async def serve(request: Request) -> Response:
        request_id = new_id("req", 14)
        headers = {"request-id": request_id, "stripe-version": request.headers.get("stripe-version",
                                                                                   DEFAULT_VERSION)}
        key = request.headers.get("idempotency-key") if request.method == "POST" else None
        if key:
            headers["idempotency-key"] = key
        try:
            authorize(request.headers.get("authorization"))
            if not _VERSION.match(headers["stripe-version"]):
                raise StripeError(400, f"Invalid Stripe API version: {headers['stripe-version']}")
            pairs = await read_pairs(request)
            params = decode(pairs)
            if unknown := sorted(set(params) - allowed):
                raise StripeError(400, f"Received unknown parameter: {unknown[0]}", code="parameter_unknown",
                                  param=unknown[0])
            expand = params.get("expand", [])
            if not isinstance(expand, list):
                raise StripeError(400, "Invalid array", param="expand")
            if cannot := [path for path in expand if path not in expandable]:
                raise StripeError(400, f"This property cannot be expanded ({cannot[0]}).", param="expand")
            name, fingerprint = f"{request.method} {request.url.path}", sorted(pairs)
            if key and (saved := saved_answers.get(key)) is not None:
                if saved.endpoint != name:
                    raise StripeError(400, "Keys for idempotent requests can only be used for the same endpoint "
                                      f"they were first used for ('{name}' vs '{saved.endpoint}'). Try using a "
                                      f"key other than '{key}' if you meant to execute a different request.",
                                      type_="idempotency_error")
                if saved.fingerprint != fingerprint:
                    raise StripeError(400, "Keys for idempotent requests can only be used with the same "
                                      "parameters they were first used with. Try using a key other than "
                                      f"'{key}' if you meant to execute a different request.",
                                      type_="idempotency_error")
                return Response(saved.body, saved.status, media_type="application/json", headers={
                    **headers, "idempotent-replayed": "true", "original-request": saved.request_id})
            try:
                status, value = 200, handler(request.path_params, params)
            except StripeError as exc:
                if not exc.executed:
                    raise
                status, value = exc.status, exc.body(request_id)
            body = orjson.dumps(value)
            if key:
                saved_answers[key] = Saved(name, fingerprint, status, body, request_id)
            return Response(body, status, media_type="application/json", headers=headers)
        except StripeError as exc:
            return json_response(exc.body(request_id), exc.status, headers)

    return serve


async def read_pairs(request: Request) -> list[tuple[str, str]]:
    if request.method == "GET":
        return list(request.query_params.multi_items())
    raw = await request.body()
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if raw and media != "application/x-www-form-urlencoded":
        raise StripeError(400, f"Invalid request: unsupported Content-Type {media or '(none)'}. If error "
                          "persists and you need assistance, please contact support@stripe.com.")
    return parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)


async def unrecognized(request: Request) -> Response:
    request_id = new_id("req", 14)
    error = StripeError(404, f"Unrecognized request URL ({request.method}: {request.url.path}). Please see "
                        "https://docs.stripe.com or we can help at https://support.stripe.com/.")
    return json_response(error.body(request_id), 404, {"request-id": request_id})
