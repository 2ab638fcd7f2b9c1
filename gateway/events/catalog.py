"""The event types the contracts declare, and where each lives on the backbone.

An event type comes from an operation's `x-gateway.emits` (`order.created`): a success of that operation is the
fact. Its `data` schema is the one the contract's OpenAPI 3.1 `webhooks` section declares for it (the webhook whose
body's `type` property lists the event type: the `data` property of that body), else the operation's success
answer (the webhook `data` is the operation's answer in that version). One catalog entry per (api, type, major):

    subject   events.<api>.<type>.v<major>      e.g. events.orders.order.created.v2
    stream    <prefix>_<API>                    e.g. EVENTS_ORDERS, subjects events.orders.>

so the v1 and v2 of one event are two subjects of one stream, published side by side during a migration. The data
schemas are converted once by the same code as the operations' (gateway/contracts/schema.py) and compiled once;
`validate()` refuses an event whose data breaks its schema before anything is stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.contracts.compile import api_identity
from gateway.contracts.load import pointer_join
from gateway.contracts.operations import iter_operations
from gateway.contracts.schema import SchemaSet

if TYPE_CHECKING:
    from gateway.contracts.load import Contract
    from gateway.settings import EventSettings

_TOKEN = re.compile(r"[^A-Za-z0-9_-]")


def subject_token(text: str) -> str:
    """A NATS subject token may not hold spaces, `.`, `*` or `>`: anything else becomes `_`."""
    return _TOKEN.sub("_", text) or "_"


@dataclass(eq=False)
class EventType:
    api: str
    version: str  # v2
    type: str  # order.created
    subject: str
    stream: str
    summary: str
    operations: list[str]  # the operation keys that emit it
    schema_name: str  # its `data` schema in the contract's document ($defs name)
    schemas: SchemaSet = field(repr=False)
    webhook: str | None = None  # the contract's webhook that describes it, if any

    @property
    def key(self) -> str:
        """Its name in the AsyncAPI document (channel, message): orders_order_created_v2."""
        return re.sub(r"[^A-Za-z0-9_-]", "_", f"{self.api}_{self.type}_{self.version}")

    def violations(self, data: Any) -> list[str]:
        """Why `data` breaks the declared schema (empty: it does not)."""
        validator = self.schemas.validator(self.schema_name, "response")
        try:
            errors = list(validator.iter_errors({self.schema_name: data}))
        except (ValueError, OverflowError) as exc:
            return [f"data cannot be validated: {type(exc).__name__}"]
        out = []
        for err in errors[:10]:
            where = "/".join(str(p) for p in list(err.instance_path)[1:])
            out.append(f"/{where}: {str(err).splitlines()[0][:200]}")
        return out

    def data_schema(self) -> tuple[str, dict[str, Any]]:
        """(name, every converted schema of the contract: `$defs`), for the AsyncAPI document."""
        return self.schema_name, self.schemas.defs["response"]


class Catalog:
    """Every event type of every contract, by subject, and the streams that hold them."""

    def __init__(self, contracts: list[Contract], settings: EventSettings) -> None:
        self.settings = settings
        self.by_subject: dict[str, EventType] = {}
        self.by_key: dict[tuple[str, str, str], EventType] = {}  # (api, version, type)
        self.problems: list[str] = []
        for contract in contracts:
            self._add(contract)

    def _add(self, contract: Contract) -> None:
        api, version = api_identity(contract)
        found: dict[str, tuple[str, list[str], Any, Path, str, str | None]] = {}
        for raw in iter_operations(contract):
            if isinstance(raw, tuple):
                continue
            emits = (raw.node.get("x-gateway") or {}).get("emits")
            if not emits:
                continue
            key = f"{api}.{version}.{raw.node.get('operationId')}"
            if emits in found:
                found[emits][1].append(key)
                continue
            summary = str(raw.node.get("summary") or emits)
            schema = self._webhook_data(contract, emits)
            webhook = None
            if schema is not None:
                webhook, node, file, pointer = schema
            else:
                answer = self._answer(contract, raw.node, raw.pointer)
                if answer is None:
                    self.problems.append(f"{contract.name}{raw.pointer}: emits {emits} but declares no JSON answer "
                                         "and no webhook for it: its data has no schema")
                    continue
                node, file, pointer = answer
            found[emits] = (summary, [key], node, file, pointer, webhook)
        if not found:
            return
        schemas = SchemaSet(contract.resolver, contract.openapi_version)
        names = {t: schemas.name(node, file, pointer, "response")
                 for t, (_, _, node, file, pointer, _) in found.items()}
        for problem in schemas.compile():
            self.problems.append(f"{problem.file}{problem.pointer}: {problem.reason}")
        s = self.settings
        stream = f"{s.stream_prefix}_{subject_token(api).upper()}"
        for event_type, (summary, keys, _, _, _, webhook) in found.items():
            subject = f"{s.subject_prefix}.{subject_token(api)}.{event_type}.{version}"
            entry = EventType(api, version, event_type, subject, stream, summary, keys, names[event_type], schemas,
                              webhook)
            self.by_subject[subject] = entry
            self.by_key[(api, version, event_type)] = entry

    @staticmethod
    def _webhook_data(contract: Contract, event_type: str) -> tuple[str, Any, Path, str] | None:
        """(webhook name, data schema, file, pointer) of the webhook whose body's `type` lists `event_type`."""
        resolver = contract.resolver
        for name, item in (contract.data.get("webhooks") or {}).items():
            for method, op in (item or {}).items():
                if not isinstance(op, dict):
                    continue
                ptr = pointer_join("/webhooks", name, method, "requestBody")
                try:
                    body, file, ptr = resolver.deref(op.get("requestBody"), contract.path, ptr)
                    media = ((body or {}).get("content") or {}).get("application/json") or {}
                    schema, file, sptr = resolver.deref(media.get("schema"), file,
                                                        pointer_join(ptr, "content", "application/json", "schema"))
                    props = (schema or {}).get("properties") or {}
                    kind, _, _ = resolver.deref(props.get("type") or {}, file, pointer_join(sptr, "properties", "type"))
                except LookupError:
                    continue
                listed = set(kind.get("enum") or []) | ({kind["const"]} if "const" in kind else set())
                if event_type in listed and "data" in props:
                    return name, props["data"], file, pointer_join(sptr, "properties", "data")
        return None

    @staticmethod
    def _answer(contract: Contract, node: dict[str, Any], pointer: str) -> tuple[Any, Path, str] | None:
        """The JSON schema of the operation's first 2xx answer."""
        for status, response in sorted((node.get("responses") or {}).items()):
            if not str(status).startswith("2"):
                continue
            try:
                response, file, ptr = contract.resolver.deref(response, contract.path,
                                                              pointer_join(pointer, "responses", str(status)))
            except LookupError:
                continue
            for media, content in ((response or {}).get("content") or {}).items():
                if "json" in media and isinstance(content, dict) and "schema" in content:
                    return content["schema"], file, pointer_join(ptr, "content", media, "schema")
        return None

    def find(self, api: str, version: str, event_type: str) -> EventType | None:
        return self.by_key.get((api, version, event_type))

    def streams(self) -> dict[str, list[str]]:
        """Stream name -> its subjects (one wildcard per API)."""
        out: dict[str, list[str]] = {}
        for entry in self.by_subject.values():
            out.setdefault(entry.stream, [])
            wildcard = f"{self.settings.subject_prefix}.{subject_token(entry.api)}.>"
            if wildcard not in out[entry.stream]:
                out[entry.stream].append(wildcard)
        return out

    def types(self) -> list[EventType]:
        return sorted(self.by_subject.values(), key=lambda e: e.subject)
