"""The AsyncAPI 3.0 document of the contracts' events: `gateway asyncapi`, and /contracts/events/asyncapi.json.

One channel per event subject (`events.orders.order.created.v2`), one `send` operation per channel (the gateway
publishes), one message per event type whose payload is the CloudEvents envelope (service.py) around the `data`
schema the contract declares. The contract's schemas are the ones the gateway validates with (converted by
gateway/contracts/schema.py), named `<api>_<version>_<name>` so that two contracts never collide.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from .catalog import Catalog, EventType

_REF = re.compile(r"^#/\$defs/(.+)$")
_NAME = re.compile(r"[^A-Za-z0-9_.-]")


def _id(text: str) -> str:
    return _NAME.sub("_", text)


def _rename(node: Any, prefix: str) -> Any:
    """`#/$defs/X` -> `#/components/schemas/<prefix>X`, everywhere in a converted schema."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and (m := _REF.match(value)):
                out[key] = f"#/components/schemas/{prefix}{_id(m.group(1))}"
            else:
                out[key] = _rename(value, prefix)
        return out
    if isinstance(node, list):
        return [_rename(v, prefix) for v in node]
    return node


def envelope_schema(data_ref: str) -> dict[str, Any]:
    """The CloudEvents 1.0 structured-mode JSON the relay publishes (service.py EventBus.envelope)."""
    return {
        "type": "object",
        "required": ["specversion", "id", "source", "type", "time", "datacontenttype", "data"],
        "properties": {
            "specversion": {"type": "string", "const": "1.0"},
            "id": {"type": "string", "description": "Unique per event; also the Nats-Msg-Id (de-duplication)."},
            "source": {"type": "string", "description": "/contract-gateway/<api>/<version>"},
            "type": {"type": "string"},
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {"type": "string", "const": "application/json"},
            "dataschema": {"type": "string"},
            "subject": {"type": "string", "description": "The id of the resource the event is about."},
            "apiversion": {"type": "string", "description": "The API version of `data` (v2)."},
            "traceparent": {"type": "string", "description": "W3C trace context of the request that caused it."},
            "owner": {"type": "string", "description": "The client whose request caused it."},
            "data": {"$ref": data_ref},
        },
    }


def document(catalog: Catalog, url: str = "nats://127.0.0.1:4222", title: str = "contract-gateway events",
             version: str = "1.0.0") -> dict[str, Any]:
    servers: dict[str, Any] = {}
    for i, server in enumerate(u.strip() for u in url.split(",") if u.strip()):
        parts = urlsplit(server if "://" in server else f"nats://{server}")
        servers[f"nats{i + 1}" if i else "nats"] = {
            "host": parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else server,
            "protocol": parts.scheme or "nats", "description": "NATS JetStream (the event backbone)"}
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    done: set[int] = set()
    for entry in catalog.types():
        prefix = f"{_id(entry.api)}_{entry.version}_"
        name, defs = entry.data_schema()
        if id(defs) not in done:  # each contract's schemas once
            done.add(id(defs))
            for def_name, schema in defs.items():
                schemas[prefix + _id(def_name)] = _rename(schema, prefix)
        key = entry.key
        schemas[f"{key}_event"] = envelope_schema(f"#/components/schemas/{prefix}{_id(name)}")
        messages[key] = _message(entry, key)
        channels[key] = {"address": entry.subject, "title": f"{entry.type} ({entry.api} {entry.version})",
                         "description": f"Stream {entry.stream}. Emitted by " + ", ".join(entry.operations) + ".",
                         "messages": {key: {"$ref": f"#/components/messages/{key}"}}}
        operations[f"publish_{key}"] = {
            "action": "send", "channel": {"$ref": f"#/channels/{key}"}, "summary": entry.summary,
            "messages": [{"$ref": f"#/channels/{key}/messages/{key}"}]}
    return {"asyncapi": "3.0.0",
            "info": {"title": title, "version": version,
                     "description": "Events the gateway publishes on NATS JetStream, generated from the contracts "
                                    "(`x-gateway.emits` and the `webhooks` sections). Each is a CloudEvents 1.0 "
                                    "envelope whose `data` is the contract's schema."},
            "defaultContentType": "application/json", "servers": servers, "channels": channels,
            "operations": operations, "components": {"messages": messages, "schemas": schemas}}


def _message(entry: EventType, key: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": entry.type, "title": entry.summary, "contentType": "application/json",
                           "payload": {"$ref": f"#/components/schemas/{key}_event"},
                           "headers": {"type": "object", "properties": {
                               "Nats-Msg-Id": {"type": "string", "description": "The event id"}}}}
    if entry.webhook:
        out["description"] = f"Also delivered to partners as the `{entry.webhook}` webhook of {entry.api} " \
                             f"{entry.version}."
    return out


def render_html(doc: dict[str, Any]) -> str:
    """The document as a page of the docs portal: each channel with its message and payload schema."""
    import html
    import json

    parts = [f"<h1>{html.escape(doc['info']['title'])}</h1><p>{html.escape(doc['info']['description'])}</p>",
             "<p>The document: <a href='/contracts/events/asyncapi.json'>asyncapi.json</a> (AsyncAPI 3.0). "
             "Servers: " + ", ".join(f"<code>{html.escape(s['protocol'])}://{html.escape(s['host'])}</code>"
                                     for s in doc["servers"].values()) + "</p>",
             "<table><thead><tr><th>subject</th><th>event</th><th>about</th></tr></thead><tbody>"]
    schemas = doc["components"]["schemas"]
    for key, channel in doc["channels"].items():
        message = doc["components"]["messages"][key]
        parts.append(f"<tr><td><a href='#{key}'><code>{html.escape(channel['address'])}</code></a></td>"
                     f"<td>{html.escape(message['name'])}</td><td>{html.escape(channel['description'])}</td></tr>")
    parts.append("</tbody></table>")
    for key, channel in doc["channels"].items():
        message = doc["components"]["messages"][key]
        envelope = schemas[message["payload"]["$ref"].rsplit("/", 1)[-1]]
        data_ref = envelope["properties"]["data"]["$ref"].rsplit("/", 1)[-1]
        parts.append(f"<h2 id='{key}'>{html.escape(message['name'])} <small>{html.escape(channel['title'])}</small>"
                     f"</h2><p><code>{html.escape(channel['address'])}</code>. {html.escape(message['title'])}. "
                     f"{html.escape(message.get('description', ''))}</p><details><summary>data: "
                     f"<code>{html.escape(data_ref)}</code></summary><pre>"
                     f"{html.escape(json.dumps(schemas.get(data_ref), indent=2))}</pre></details>")
    return "".join(parts)


def routes(contracts: list[Any], settings: Any, page: Any) -> Any:
    """/contracts/events/asyncapi.json and /docs/events, for the docs portal (gateway/docs/portal.py)."""
    from functools import lru_cache

    from fastapi import APIRouter
    from fastapi.responses import HTMLResponse, JSONResponse

    router = APIRouter()

    @lru_cache(maxsize=1)
    def built() -> dict[str, Any]:
        return document(Catalog(contracts, settings.events), settings.events.url)

    @router.get("/contracts/events/asyncapi.json")
    async def asyncapi_json() -> JSONResponse:
        return JSONResponse(built())

    @router.get("/docs/events", response_class=HTMLResponse)
    async def events_page() -> str:
        return str(page("Events", render_html(built())))

    return router
