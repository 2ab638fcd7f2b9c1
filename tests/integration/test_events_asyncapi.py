"""The AsyncAPI 3.0 document of the contracts' events: valid against the official schema, served and rendered by
the gateway, the same as `gateway asyncapi` prints; a breaking change to an event schema is caught by `gateway diff`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from gateway.contracts.diff import diff_paths
from tests.conftest import ROOT

SCHEMA = json.loads((ROOT / "tests/data/asyncapi/asyncapi-3.0.0.schema.json").read_text())


def problems(doc: dict[str, Any]) -> list[str]:
    """Schema violations, and `$ref`s that point nowhere in the document."""
    out = [f"{list(e.absolute_path)}: {e.message[:200]}" for e in jsonschema.Draft7Validator(SCHEMA).iter_errors(doc)]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str):
                target: Any = doc
                for part in ref.removeprefix("#/").split("/"):
                    target = target.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(target, dict) \
                        else None
                if target is None:
                    out.append(f"$ref {ref} points nowhere")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    return out


def test_the_served_document_is_valid_asyncapi_3_and_lists_every_event(demo_gateway) -> None:
    app, client = demo_gateway()  # events need not be enabled to be documented
    answer = client.get("/contracts/events/asyncapi.json")
    assert answer.status_code == 200
    doc = answer.json()
    assert doc["asyncapi"] == "3.0.0"
    assert problems(doc) == []
    addresses = {c["address"] for c in doc["channels"].values()}
    assert addresses == {"events.orders.order.created.v2", "events.orders.order.delivered.v2",
                         "events.payments.payment.refunded.v1"}
    created = doc["components"]["schemas"]["orders_order_created_v2_event"]
    order = doc["components"]["schemas"][created["properties"]["data"]["$ref"].rsplit("/", 1)[-1]]
    assert "total" in order["properties"]  # the contract's Order, v2 (money as {amount, currency})
    page = client.get("/docs/events")
    assert page.status_code == 200 and "events.orders.order.created.v2" in page.text
    assert "/docs/events" in client.get("/docs").text  # linked from the portal


def test_a_document_that_breaks_asyncapi_is_caught_by_the_check() -> None:
    from gateway.events.asyncapi import document
    from gateway.events.catalog import Catalog
    from gateway.runtime import check_all
    from gateway.settings import load_settings

    settings = load_settings(ROOT / "gateway.yaml", {})
    doc = document(Catalog(check_all(settings)[0], settings.events))
    assert problems(doc) == []
    broken = json.loads(json.dumps(doc))
    next(iter(broken["operations"].values()))["action"] = "publish"  # AsyncAPI 2's verb: not valid in 3.0
    assert problems(broken)
    del broken["components"]["messages"][next(iter(broken["components"]["messages"]))]
    assert any("points nowhere" in p for p in problems(broken))


def test_gateway_asyncapi_prints_the_same_document(tmp_path: Path) -> None:
    out = tmp_path / "asyncapi.json"
    run = subprocess.run([sys.executable, "-m", "gateway", "asyncapi", "--config", str(ROOT / "gateway.yaml"),
                          "-o", str(out)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert "3 event types" in run.stderr
    assert problems(json.loads(out.read_text())) == []


def test_a_breaking_change_to_an_event_schema_is_caught_by_gateway_diff(tmp_path: Path) -> None:
    old = ROOT / "contracts"
    new = tmp_path / "contracts"
    subprocess.run(["cp", "-r", str(old), str(new)], check=True)
    doc = yaml.safe_load((new / "orders.v2.yaml").read_text())
    # The event's envelope loses a field subscribers read: a breaking change to order.created / order.delivered.
    event = doc["components"]["schemas"]["OrderEvent"]
    event["required"].remove("created_at")
    del event["properties"]["created_at"]
    (new / "orders.v2.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    report, errors = diff_paths([old], [new])
    assert not errors
    breaking = [c for c in report.breaking if "OrderEvent" in c.pointer]
    assert [c.kind for c in breaking] == ["response-property-removed"], [f"{c.kind} {c.pointer}"
                                                                         for c in report.changes]
    run = subprocess.run([sys.executable, "-m", "gateway", "diff", str(old), str(new)], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    assert run.returncode != 0 and "created_at" in run.stdout + run.stderr, run.stdout + run.stderr
