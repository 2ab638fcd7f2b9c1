"""An internal service that already speaks a contract: it echoes what it received, for the http adapter's tests."""

from __future__ import annotations

from typing import Any

import orjson


async def echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = body.decode("utf-8", "replace")
    headers = {k.decode(): v.decode() for k, v in scope["headers"]}
    status = int(headers.get("x-echo-status", 201 if scope["method"] == "POST" else 200))
    if scope["path"].startswith("/echo/things") and isinstance(parsed, dict):
        # A resource service: answers the created thing itself (with whatever it was sent).
        answer = orjson.dumps({"id": "thing-1", **parsed})
    else:
        answer = orjson.dumps({"method": scope["method"], "path": scope["path"],
                               "query": scope["query_string"].decode(), "headers": headers, "body": parsed})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode()),
                            (b"x-request-id", b"upstream-" + headers.get("x-request-id", "none").encode())]})
    await send({"type": "http.response.body", "body": answer})
