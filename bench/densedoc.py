"""A generated OpenAPI document of any size whose schemas are densely linked (every schema references several
others, with cycles), and its "previous release": the worst case for compiling and diffing, reproducible.

    python bench/densedoc.py --operations 500 --out /tmp/dense     # writes dense.v1.json (previous) and dense.v2.json

Each resource has a schema with scalar fields and links to `links` other resources (so any schema reaches nearly all
others), a list operation (query parameters: deepObject filter with anyOf object|integer, an `expand` array), a get,
a create (JSON body) and an update (form body with deepObject encoding). The previous release differs in a handful
of places (a removed enum value, a new required property, a narrowed maximum, a removed operation).
"""

from __future__ import annotations

import argparse
import copy
import json
import random
from pathlib import Path
from typing import Any


def generate(operations: int = 500, links: int = 6, seed: int = 15) -> dict[str, Any]:
    """A 3.0 document with about `operations` operations (4 per resource), densely linked schemas."""
    rng = random.Random(seed)
    resources = max(1, operations // 4)
    schemas: dict[str, Any] = {
        "Error": {"type": "object", "required": ["type", "title"],
                  "properties": {"type": {"type": "string"}, "title": {"type": "string"},
                                 "detail": {"type": "string"}}},
        "RangeQuery": {"type": "object", "properties": {"gt": {"type": "integer"}, "gte": {"type": "integer"},
                                                         "lt": {"type": "integer"}, "lte": {"type": "integer"}}},
    }
    paths: dict[str, Any] = {}
    for i in range(resources):
        name = f"Resource{i}"
        props: dict[str, Any] = {
            "id": {"type": "string", "readOnly": True},
            "created": {"type": "integer", "format": "int64"},
            "status": {"type": "string", "enum": ["active", "pending", "closed"]},
            "amount": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
            "note": {"type": "string", "maxLength": 500, "nullable": True},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        }
        for j in rng.sample(range(resources), min(links, resources)):
            props[f"link{j}"] = {"anyOf": [{"type": "string"}, {"$ref": f"#/components/schemas/Resource{j}"}],
                                 "nullable": True}
        schemas[name] = {"type": "object", "required": ["status"], "properties": props}
        list_schema = {"type": "object", "required": ["data"], "properties": {
            "data": {"type": "array", "items": {"$ref": f"#/components/schemas/{name}"}},
            "has_more": {"type": "boolean"}}}
        error = {"description": "error", "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Error"}}}}
        one = {"description": "ok", "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{name}"}}}}
        paths[f"/v1/r{i}"] = {
            "get": {"operationId": f"list{name}", "parameters": [
                {"name": "created", "in": "query", "style": "deepObject", "explode": True, "schema": {
                    "anyOf": [{"$ref": "#/components/schemas/RangeQuery"}, {"type": "integer"}]}},
                {"name": "expand", "in": "query", "schema": {"type": "array", "items": {"type": "string"}}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}}],
                "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": list_schema}}},
                              "default": error}},
            "post": {"operationId": f"create{name}", "requestBody": {"required": True, "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}},
                "responses": {"200": one, "default": error}},
        }
        paths[f"/v1/r{i}/{{id}}"] = {
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": {"operationId": f"get{name}", "responses": {"200": one, "default": error}},
            "post": {"operationId": f"update{name}", "requestBody": {"content": {
                "application/x-www-form-urlencoded": {
                    "encoding": {"metadata": {"style": "deepObject", "explode": True}},
                    "schema": {"$ref": f"#/components/schemas/{name}"}}}},
                "responses": {"200": one, "default": error}},
        }
    return {"openapi": "3.0.3", "info": {"title": "Dense", "version": "2024-06-01"},
            "servers": [{"url": "https://api.example.com"}],
            "security": [{"basicAuth": []}, {"bearerAuth": []}],
            "paths": paths, "components": {"schemas": schemas, "securitySchemes": {
                "basicAuth": {"type": "http", "scheme": "basic"}, "bearerAuth": {"type": "http", "scheme": "bearer"}}}}


def previous_release(doc: dict[str, Any]) -> dict[str, Any]:
    """The release before `doc`: a few differences a diff must find (each once, at the schema's own pointer)."""
    old = copy.deepcopy(doc)
    schemas = old["components"]["schemas"]
    schemas["Resource0"]["properties"]["status"]["enum"].append("archived")  # new release removed a value
    schemas["Resource1"]["properties"].pop("note")  # new release added a property
    schemas["Resource2"]["properties"]["amount"]["maximum"] = 2_000_000  # new release narrowed it
    last = sorted(old["paths"])[-1]
    old["paths"][last]["delete"] = {"operationId": "deleteLast", "responses": {"204": {"description": "gone"}}}
    return old


def with_route(doc: dict[str, Any], api: str = "dense", route: str = "upstream.forward") -> dict[str, Any]:
    return {**doc, "x-gateway": {"api": api, "route": route}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--operations", type=int, default=500)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    doc = with_route(generate(args.operations))
    (args.out / "dense.v2.json").write_text(json.dumps(doc))
    (args.out / "dense.v1.json").write_text(json.dumps(previous_release(doc)))
    print(f"wrote {args.out}/dense.v1.json and dense.v2.json ({sum(len(p) for p in doc['paths'].values())} "
          "path items' entries)")


if __name__ == "__main__":
    main()
