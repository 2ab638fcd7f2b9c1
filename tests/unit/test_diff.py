"""`gateway diff`: a table of changes, each applied in both directions, with its verdict and pointer."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.contracts.diff import diff_paths

BASE: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Things", "version": "1.0.0"},
    "servers": [{"url": "/v1"}],
    "x-gateway": {"api": "things"},
    "components": {
        "securitySchemes": {"oauth": {"type": "oauth2", "flows": {"clientCredentials": {
            "tokenUrl": "/oauth/token", "scopes": {"things:read": "r", "things:write": "w", "admin": "a"}}}}},
        "schemas": {
            "Thing": {"type": "object", "additionalProperties": False, "required": ["name", "size"],
                      "properties": {"name": {"type": "string", "maxLength": 50},
                                     "size": {"type": "integer", "minimum": 1, "maximum": 10},
                                     "color": {"type": "string", "enum": ["red", "blue"]},
                                     "note": {"type": "string"}}},
        },
    },
    "paths": {
        "/things/{id}": {
            "put": {
                "operationId": "putThing",
                "security": [{"oauth": ["things:write"]}],
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                               {"name": "dry_run", "in": "query", "schema": {"type": "boolean"}}],
                "requestBody": {"required": False, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/Thing"}}}},
                "responses": {
                    "200": {"description": "ok", "content": {"application/json": {
                        "schema": {"$ref": "#/components/schemas/Thing"}}}},
                    "404": {"description": "missing"},
                },
            },
        },
        "/things": {"get": {"operationId": "listThings", "responses": {"200": {"description": "ok"}}}},
    },
}

OP = "/paths/~1things~1{id}/put"
BODY = OP + "/requestBody/content/application~1json/schema"
RESP = OP + "/responses/200/content/application~1json/schema"
# A change inside a shared schema is reported once, at the schema's own pointer (not once per operation using it).
THING = "/components/schemas/Thing"
Mutation = Callable[[dict[str, Any]], None]


def thing(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["components"]["schemas"]["Thing"]


def op(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["paths"]["/things/{id}"]["put"]


# (name, mutation, expected kinds when applied old->new: (kind, breaking, pointer or None), and new->old)
CASES: list[tuple[str, Mutation, tuple[str, bool, str | None], tuple[str, bool, str | None]]] = [
    ("operation", lambda d: d["paths"].pop("/things"),
     ("operation-removed", True, "/paths/~1things/get"), ("operation-added", False, "/paths/~1things/get")),
    ("response status", lambda d: op(d)["responses"].pop("404"),
     ("response-status-removed", True, OP + "/responses/404"), ("response-status-added", False, OP + "/responses/404")),
    ("required query parameter", lambda d: op(d)["parameters"].append(
        {"name": "v", "in": "query", "required": True, "schema": {"type": "string"}}),
     ("required-parameter-added", True, OP + "/parameters/2"), ("parameter-removed", True, OP + "/parameters/2")),
    ("optional parameter made required", lambda d: op(d)["parameters"][1].update(required=True),
     ("parameter-made-required", True, OP + "/parameters/1/required"),
     ("parameter-made-optional", False, OP + "/parameters/1/required")),
    ("parameter moved to a header", lambda d: op(d)["parameters"][1].update({"in": "header"}),
     ("parameter-moved", True, OP + "/parameters/1/in"), ("parameter-moved", True, OP + "/parameters/1/in")),
    ("parameter type changed", lambda d: op(d)["parameters"][0]["schema"].update(type="integer"),
     ("schema-type-changed", True, OP + "/parameters/0/schema/type"),
     ("schema-type-changed", True, OP + "/parameters/0/schema/type")),
    ("parameter type narrowed", lambda d: op(d)["parameters"][1]["schema"].update(type=["boolean", "null"]),
     ("schema-made-nullable", False, OP + "/parameters/1/schema/type"),
     ("schema-made-not-nullable", True, OP + "/parameters/1/schema/type")),
    ("body made required", lambda d: op(d)["requestBody"].update(required=True),
     ("request-body-made-required", True, OP + "/requestBody/required"), (None, False, None)),
    ("new required request property", lambda d: (thing(d)["properties"].update(shape={"type": "string"}),
                                                 thing(d)["required"].append("shape")),
     ("required-request-property-added", True, THING + "/properties/shape"),
     ("response-property-removed", True, THING + "/properties/shape")),
    ("optional property made required", lambda d: thing(d)["required"].append("note"),
     ("request-property-made-required", True, THING + "/required"),
     ("response-property-made-optional", True, THING + "/required")),
    ("enum value removed", lambda d: thing(d)["properties"]["color"]["enum"].remove("blue"),
     ("enum-value-removed", True, THING + "/properties/color/enum"),
     ("enum-value-added", True, THING + "/properties/color/enum")),
    ("maximum lowered", lambda d: thing(d)["properties"]["size"].update(maximum=5),
     ("maximum-narrowed", True, THING + "/properties/size/maximum"),
     ("maximum-widened", True, THING + "/properties/size/maximum")),
    ("minimum raised", lambda d: thing(d)["properties"]["size"].update(minimum=3),
     ("minimum-narrowed", True, THING + "/properties/size/minimum"),
     ("minimum-widened", True, THING + "/properties/size/minimum")),
    ("maxLength lowered", lambda d: thing(d)["properties"]["name"].update(maxLength=10),
     ("maxLength-narrowed", True, THING + "/properties/name/maxLength"),
     ("maxLength-widened", True, THING + "/properties/name/maxLength")),
    ("pattern added", lambda d: thing(d)["properties"]["name"].update(pattern="^[a-z]+$"),
     ("pattern-changed", True, THING + "/properties/name/pattern"),
     ("pattern-removed", True, THING + "/properties/name/pattern")),
    ("format added", lambda d: thing(d)["properties"]["note"].update(format="email"),
     ("format-changed", True, THING + "/properties/note/format"),
     ("format-removed", True, THING + "/properties/note/format")),
    ("made nullable", lambda d: thing(d)["properties"]["note"].update(type=["string", "null"]),
     ("schema-made-nullable", True, THING + "/properties/note/type"),
     ("schema-made-not-nullable", True, THING + "/properties/note/type")),
    ("scope added to a requirement", lambda d: op(d)["security"][0]["oauth"].append("admin"),
     ("security-requirement-narrowed", True, OP + "/security"),
     ("security-alternative-added", False, OP + "/security")),
    ("public operation secured", lambda d: d["paths"]["/things"]["get"].update(security=[{"oauth": ["things:read"]}]),
     ("security-added", True, "/paths/~1things/get/security"),
     ("security-removed", False, "/paths/~1things/get/security")),
    ("operationId renamed", lambda d: op(d).update(operationId="replaceThing"),
     ("operation-id-changed", True, OP + "/operationId"), ("operation-id-changed", True, OP + "/operationId")),
    ("media type", lambda d: op(d)["requestBody"]["content"].update(
        {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}}),
     ("request-media-type-added", False, OP + "/requestBody/content/application~1x-www-form-urlencoded"),
     ("request-media-type-removed", True, OP + "/requestBody/content/application~1x-www-form-urlencoded")),
    ("webhook payload widened", lambda d: d.setdefault("webhooks", {}).update(thingMade={"post": {
        "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}},
        "responses": {"200": {"description": "ok"}}}}) or thing(d)["properties"]["color"]["enum"].append("green"),
     ("webhook-added", False, "/webhooks/thingMade"), ("webhook-removed", True, "/webhooks/thingMade")),
    ("deprecated", lambda d: op(d).update(deprecated=True),
     ("operation-deprecated", False, OP + "/deprecated"), (None, False, None)),
]


def write(tmp: Path, name: str, doc: dict[str, Any]) -> Path:
    path = tmp / name
    path.mkdir()
    (path / "things.v1.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.parametrize("name, mutate, forward, backward", CASES, ids=[c[0] for c in CASES])
def test_each_change_in_both_directions(tmp_path, name, mutate, forward, backward):
    """The change is found with its verdict and pointer, whichever way round the two versions are."""
    old = copy.deepcopy(BASE)
    new = copy.deepcopy(BASE)
    mutate(new)
    before, after = write(tmp_path, "old", old), write(tmp_path, "new", new)
    for (a, b), (kind, breaking, pointer) in (((before, after), forward), ((after, before), backward)):
        report, errors = diff_paths([a], [b])
        assert errors == []
        if kind is None:
            assert not report.breaking, [str(c) for c in report.changes]
            continue
        found = [c for c in report.changes if c.kind == kind and (pointer is None or c.pointer == pointer)]
        assert found, f"{name}: expected {kind} at {pointer}, got {[str(c) for c in report.changes]}"
        assert found[0].breaking is breaking
        assert bool(report.breaking) is any(c.breaking for c in report.changes)


def test_identical_contracts_have_no_changes(tmp_path):
    """Comparing a contract with itself reports nothing and does not fail."""
    a, b = write(tmp_path, "a", BASE), write(tmp_path, "b", BASE)
    report, errors = diff_paths([a], [b])
    assert report.changes == [] and errors == []


def test_a_new_major_version_is_an_addition_not_a_break(tmp_path):
    """Breaking changes belong in a new major version: old v1 + new v2 side by side is not breaking."""
    old = write(tmp_path, "old", BASE)
    new = tmp_path / "new"
    new.mkdir()
    (new / "things.v1.yaml").write_text(yaml.safe_dump(BASE))
    v2 = copy.deepcopy(BASE)
    v2["info"]["version"] = "2.0.0"
    v2["servers"] = [{"url": "/v2"}]
    thing(v2)["required"].append("note")
    (new / "things.v2.yaml").write_text(yaml.safe_dump(v2))
    report, _ = diff_paths([old], [new])
    assert [c.kind for c in report.changes] == ["api-version-added"]
    assert not report.breaking


def test_cli_exit_status_and_json_output(tmp_path):
    """`gateway diff OLD NEW` exits 1 on breaking changes and `--format json` is machine-readable."""
    new = copy.deepcopy(BASE)
    new["paths"].pop("/things")
    old_dir, new_dir = write(tmp_path, "old", BASE), write(tmp_path, "new", new)
    run = subprocess.run([sys.executable, "-m", "gateway", "diff", str(old_dir), str(new_dir), "--format", "json"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    out = json.loads(run.stdout)
    assert out["breaking"] == 1
    assert out["changes"][0]["kind"] == "operation-removed"
    same = subprocess.run([sys.executable, "-m", "gateway", "diff", str(old_dir), str(old_dir)],
                          capture_output=True, text=True, timeout=60)
    assert same.returncode == 0


def test_a_widened_webhook_payload_breaks_subscribers(tmp_path):
    """Subscribers receive webhook payloads: a new enum value there breaks them, like in a response."""
    with_hook = copy.deepcopy(BASE)
    with_hook["components"]["schemas"]["Event"] = {"type": "object", "properties": {
        "kind": {"type": "string", "enum": ["made"]}}}
    with_hook["webhooks"] = {"thingMade": {"post": {
        "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Event"}}}},
        "responses": {"200": {"description": "ok"}}}}}
    widened = copy.deepcopy(with_hook)
    widened["components"]["schemas"]["Event"]["properties"]["kind"]["enum"].append("remade")
    report, _ = diff_paths([write(tmp_path, "old", with_hook)], [write(tmp_path, "new", widened)])
    assert [(c.kind, c.breaking, c.pointer) for c in report.changes] == [
        ("enum-value-added", True, "/components/schemas/Event/properties/kind/enum")]
    assert "webhook thingMade" in report.changes[0].message


def test_densely_linked_documents_compare_each_shared_schema_once(tmp_path):
    """Every schema links six others (with cycles): the planted changes are found once each, at the schema's own
    pointer, and a document against an identical copy has no change (this never finished before)."""
    from bench.densedoc import generate, previous_release, with_route

    new = with_route(generate(80))
    old_path, new_path = tmp_path / "old.json", tmp_path / "new.json"
    old_path.write_text(json.dumps(previous_release(new)))
    new_path.write_text(json.dumps(new))
    report, errors = diff_paths([old_path], [new_path])
    assert errors == []
    assert sorted((c.kind, c.pointer) for c in report.breaking) == [
        ("enum-value-removed", "/components/schemas/Resource0/properties/status/enum"),
        ("maximum-narrowed", "/components/schemas/Resource2/properties/amount/maximum"),
        ("operation-removed", "/paths/~1v1~1r9~1{id}/delete")]
    same, _ = diff_paths([new_path], [new_path])
    assert same.changes == []
