"""Request validation: Accept, parameters, Content-Type, body size, body syntax and body schema.

Runs after routing (ctx.op and ctx.path_params are set). Every violation found in parameters and body is
reported in one 400; a body is read only up to the configured limit (413 as soon as it is exceeded).
Afterwards ctx.params holds typed parameter values by name and ctx.body the parsed body (or None).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gateway.context import RequestContext
from gateway.http.body import parse_form, parse_json, read_body
from gateway.http.media import acceptable, match_media, media_type
from gateway.http.response import Response
from gateway.observability import metrics
from gateway.policies.base import BasePolicy
from gateway.problems import MalformedRequest, NotAcceptable, RequestInvalid, UnsupportedMediaType, Violation

if TYPE_CHECKING:
    from gateway.contracts.compile import Operation
    from gateway.services import Services


class ValidationPolicy(BasePolicy):
    name = "validation"

    def __init__(self, op: Operation, body_limit: int) -> None:
        self.op = op
        self.params = op.params
        self.body = op.body
        self.body_limit = body_limit
        self.produces = op.produces

    async def on_request(self, ctx: RequestContext) -> Response | None:
        scope = ctx.scope
        if self.produces and not acceptable(ctx.header(b"accept"), self.produces):
            raise NotAcceptable(f"this operation produces {', '.join(self.produces)}")
        params, violations = self.params.parse(ctx.path_params, scope["query_string"], scope["headers"])
        ctx.params = params
        if self.body is not None:
            violations += await self._body(ctx)
        if violations:
            metrics.validation_failures_total.labels(self.op.api, self.op.version, self.op.operation_id,
                                                     violations[0].location).inc()
            raise RequestInvalid(violations)
        return None

    async def _body(self, ctx: RequestContext) -> list[Violation]:
        spec = self.body
        assert spec is not None
        content_type = ctx.header(b"content-type")
        declared_media = media_type(content_type)
        length_header = ctx.header(b"content-length")
        content_length = None
        if length_header is not None:
            if not length_header.strip().isdigit():
                raise MalformedRequest("Content-Length is not a number")
            content_length = int(length_header)
        has_body = (content_length or 0) > 0 or ctx.header(b"transfer-encoding") is not None
        if not has_body and declared_media is None:
            return [Violation("body", "", "a request body is required")] if spec.required else []
        if declared_media is None:
            raise UnsupportedMediaType(f"send Content-Type: {' or '.join(spec.declared)}")
        matched = match_media(declared_media, spec.declared)
        if matched is None:
            raise UnsupportedMediaType(f"{declared_media} is not accepted here; send {' or '.join(spec.declared)}")
        raw = await read_body(ctx.receive, self.body_limit, content_length)
        ctx.raw_body = raw
        # The whole header, parameters included: a pass-through upstream needs the multipart boundary and charset.
        ctx.media_type = content_type.strip() if content_type else declared_media
        kind, validator, decoder = spec.media[matched]
        if not raw and kind != "form":  # an empty urlencoded form is a form with no fields: validated below
            return [Violation("body", "", "a request body is required")] if spec.required else []
        value: Any
        found: list[Violation] = []
        if kind == "json":
            try:
                value = parse_json(raw)
            except MalformedRequest as exc:
                return [Violation("body", "", exc.detail or "body is not valid JSON")]
        elif kind == "form":
            value, found = decoder.decode(raw) if decoder is not None else (parse_form(raw), [])
        elif kind == "multipart":
            value, found = decoder.decode(raw, content_type or "")
        else:
            ctx.body = raw
            return []
        ctx.body = value
        if validator is not None and not validator.is_valid(value):
            return found + validator.violations(value, "body")
        return found


def build(op: Operation, services: Services) -> ValidationPolicy:
    return ValidationPolicy(op, services.settings.request.body_max_bytes)
