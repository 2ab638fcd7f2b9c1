"""Reports a person can act on, documents nobody here wrote, and the compile cache.

One line per distinct cause with a count and the first places; every finding located (schema errors at the
schema's own pointer); no internal exception shown as a finding, whatever the document; Swagger 2.0 named with the
conversion hint; default routes; `gateway init`; a restart with unchanged contracts reuses the compile cache.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.contracts import spec
from gateway.contracts.compile import derived_version
from gateway.contracts.report import summarize
from gateway.runtime import check_all
from gateway.settings import load_settings

VENDORS = {"svc": {"adapter": "http", "base_url": "http://127.0.0.1:9"}}


def doc(paths: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"openapi": "3.1.0", "info": {"title": "T", "version": "1.0.0"}, "paths": paths, **extra}


def problems_of(tmp: Path, data: Any, name: str = "api.yaml", cache: bool = False) -> tuple[list[Any], list[Any]]:
    path = tmp / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    settings = load_settings(None, {"contracts": [str(path)], "vendors": VENDORS,
                                    "contracts_cache": str(tmp / "cache") if cache else None})
    _, operations, problems, _ = check_all(settings)
    return operations, problems


def test_one_line_per_cause_with_count_and_first_places(tmp_path):
    """Forty operations without a route are one line: `(40 places; also #..., #..., #..., and 36 more)`."""
    paths = {f"/things{i}": {"get": {"operationId": f"get{i}", "responses": {"200": {"description": "ok"}}}}
             for i in range(40)}
    _, problems = problems_of(tmp_path, doc(paths))
    assert len(problems) == 40
    lines = summarize(problems)
    assert len(lines) == 1
    assert lines[0].endswith("(40 places; also #/paths/~1things1/get, #/paths/~1things2/get, "
                             "#/paths/~1things3/get, and 36 more)")
    assert "api.yaml#/paths/~1things0/get: operation has no route" in lines[0]


def test_swagger_2_is_named_with_the_conversion_hint(tmp_path):
    """A Swagger 2.0 file is not "not an OpenAPI document": it is named, with what to do about it."""
    _, problems = problems_of(tmp_path, {"swagger": "2.0", "info": {"title": "x", "version": "1"}, "paths": {}})
    assert [(p.pointer, p.reason) for p in problems] == [("/swagger", spec.SWAGGER_HINT)]
    assert "swagger2openapi" in spec.SWAGGER_HINT


def test_schema_errors_are_located_at_the_schema_itself(tmp_path):
    """A bad pattern in a component is reported at /components/schemas/<name>/..., not at the operation."""
    data = doc({"/p": {"post": {"operationId": "p", "x-gateway": {"route": "svc.forward"},
                                "requestBody": {"content": {"application/json": {
                                    "schema": {"$ref": "#/components/schemas/Code"}}}},
                                "responses": {"200": {"description": "ok"}}}}},
               components={"schemas": {"Code": {"type": "object", "properties": {
                   "value": {"type": "string", "pattern": "(unclosed"}}}}})
    _, problems = problems_of(tmp_path, data)
    assert [p.pointer for p in problems] == ["/components/schemas/Code/properties/value/pattern"]
    assert problems[0].reason.startswith("schema cannot be compiled")


def test_openapi_violations_point_at_the_field_inside_alternatives(tmp_path):
    """A wrong field inside a `$ref`-or-object alternative is reported at that field, without its value."""
    data = doc({"/x": {"get": {"operationId": "x", "x-gateway": {"route": "svc.forward"},
                               "parameters": [{"name": "a", "in": "query", "schema": {"type": "string"},
                                               "style": "sideways"}],
                               "responses": {"200": {"description": 5}}}}})
    _, problems = problems_of(tmp_path, data)
    found = {p.pointer for p in problems}
    assert "/paths/~1x/get/responses/200/description" in found
    assert any(p.startswith("/paths/~1x/get/parameters/0") for p in found)


MALFORMED = {
    "paths is a list": {"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "paths": ["/a"]},
    "operation is a string": doc({"/a": {"get": "yes"}}),
    "parameters is a mapping": doc({"/a": {"parameters": {"name": "x"}, "get": {"responses": {}}}}),
    "responses is null": doc({"/a": {"get": {"operationId": "a", "responses": None}}}),
    "schema is a string": doc({"/a": {"get": {"operationId": "a", "parameters": [
        {"name": "q", "in": "query", "schema": "string"}], "responses": {"200": {"description": "ok"}}}}}),
    "security is a string": doc({"/a": {"get": {"operationId": "a", "security": "all",
                                                 "responses": {"200": {"description": "ok"}}}}}),
    "components is a list": doc({}, components=["schemas"]),
    "ref is a number": doc({"/a": {"$ref": 5}}),
    "ref to a list index out of range": doc({"/a": {"get": {"operationId": "a", "parameters": [
        {"$ref": "#/paths/~1a/get/parameters/9"}], "responses": {"200": {"description": "ok"}}}}}),
    "x-gateway is a list": doc({"/a": {"get": {"operationId": "a", "x-gateway": ["svc.forward"],
                                               "responses": {"200": {"description": "ok"}}}}}),
    "info missing, openapi a number": {"openapi": 3.1, "paths": {}},
    "not a mapping": "- just\n- a list\n",
    "empty file": "",
    "binary": "\x00\x01\x02",
}


@pytest.mark.parametrize("name", MALFORMED, ids=list(MALFORMED))
def test_broken_documents_get_located_reasons_never_an_internal_exception(tmp_path, name):
    """Whatever is wrong, `check` lists located reasons in words: no exception text, no traceback."""
    data = MALFORMED[name]
    text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
    operations, problems = problems_of(tmp_path, text)
    assert problems and not operations
    for problem in problems:
        assert not any(word in problem.reason for word in ("Error:", "Traceback", "object has no attribute",
                                                           "NoneType", "KeyError", "TypeError"))
        assert problem.file
    if name not in ("paths is a list", "x-gateway is a list", "binary"):
        return  # the command itself, for a few of them (each run is a new process: ~1 s)
    result = subprocess.run([sys.executable, "-m", "gateway", "check", str(tmp_path / "api.yaml")],
                            capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr


def test_default_route_at_the_root_and_per_path_item(tmp_path):
    """One block at the root serves every operation; a path item's block wins for its operations; a bad default
    is reported where it is written."""
    data = doc({"/a": {"get": {"operationId": "a", "responses": {"200": {"description": "ok"}}}},
                "/b": {"x-gateway": {"route": "svc.forward", "upstream_path": "/elsewhere"},
                       "get": {"operationId": "b", "responses": {"200": {"description": "ok"}}}}},
               **{"x-gateway": {"api": "things", "route": "svc.forward"}})
    operations, problems = problems_of(tmp_path, data)
    assert problems == []
    by_id = {op.operation_id: op for op in operations}
    assert by_id["a"].vendor == "svc" and by_id["a"].route_options["upstream_path"] == "/a"
    assert by_id["b"].route_options["upstream_path"] == "/elsewhere"
    data["x-gateway"]["route"] = "nosuch.forward"
    _, problems = problems_of(tmp_path, data)
    assert {p.pointer for p in problems} == {"/x-gateway/route"}


def test_operations_without_operation_id_get_one_from_method_and_path(tmp_path):
    """OpenAPI makes operationId optional: `GET /users/{id}/posts` is served as get_users_id_posts."""
    data = doc({"/users/{id}/posts": {"get": {"parameters": [
        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": {"description": "ok"}}}}}, **{"x-gateway": {"route": "svc.forward"}})
    operations, problems = problems_of(tmp_path, data)
    assert problems == [] and [op.operation_id for op in operations] == ["get_users_id_posts"]


@pytest.mark.parametrize("info_version, paths, expected", [
    ("2.3.1", ["/a"], "v2"), ("2020-08-27", ["/v1/charges", "/v1/customers"], "v1"),
    ("2023-08-16", ["/a"], "v1"), ("10", ["/x"], "v10"), ("preview", ["/v3/a"], "v3")])
def test_version_derived_from_info_version_or_paths(info_version, paths, expected):
    """A date-versioned API is served under the /vN its paths share (or v1), never a version nothing can parse."""
    assert derived_version({"info": {"version": info_version}, "paths": dict.fromkeys(paths, {})}) == expected


def test_restart_with_unchanged_contracts_reuses_the_compile_cache(tmp_path, monkeypatch):
    """Second start: the OpenAPI schema check is not run again; an edited fragment is a miss."""
    (tmp_path / "shared.yaml").write_text(yaml.safe_dump({"Thing": {"type": "object"}}))
    data = doc({"/a": {"post": {"operationId": "a", "requestBody": {"content": {"application/json": {
        "schema": {"$ref": "shared.yaml#/Thing"}}}}, "responses": {"200": {"description": "ok"}}}}},
        **{"x-gateway": {"route": "svc.forward"}})
    operations, problems = problems_of(tmp_path, data, cache=True)
    assert problems == [] and len(list((tmp_path / "cache").glob("*.json"))) == 1

    def fail(*_: Any) -> Any:
        raise AssertionError("the schema check ran although the cache holds this document")

    monkeypatch.setattr(spec, "spec_problems", fail)
    operations, problems = problems_of(tmp_path, data, cache=True)
    assert problems == [] and len(operations) == 1
    (tmp_path / "shared.yaml").write_text(yaml.safe_dump({"Thing": {"type": "array"}}))
    with pytest.raises(AssertionError, match="schema check ran"):
        problems_of(tmp_path, data, cache=True)


def test_init_writes_the_block_and_a_config_and_refuses_swagger(tmp_path):
    """`gateway init FILE --upstream URL`: a servable contract and gateway.yaml; Swagger 2.0 gets the hint."""
    source = tmp_path / "src" / "petstore.json"
    source.parent.mkdir()
    source.write_text(json.dumps(doc({"/pets": {"get": {"responses": {"200": {"description": "ok"}}}}},
                                     info={"title": "Pet Store", "version": "1.0.0"})))
    work = tmp_path / "work"
    run = subprocess.run([sys.executable, "-m", "gateway", "init", str(source), "--upstream", "http://127.0.0.1:9",
                          "--dir", str(work)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    written = json.loads((work / "contracts" / "pet-store.json").read_text())
    assert written["x-gateway"] == {"api": "pet-store", "route": "upstream.forward"}
    assert yaml.safe_load((work / "gateway.yaml").read_text())["vendors"]["upstream"]["base_url"] == \
        "http://127.0.0.1:9"
    assert "ok: 1 operations" in run.stdout
    swagger = tmp_path / "src" / "swagger.yaml"
    swagger.write_text("swagger: '2.0'\ninfo: {title: x, version: '1'}\npaths: {}\n")
    refused = subprocess.run([sys.executable, "-m", "gateway", "init", str(swagger), "--upstream", "http://x",
                              "--dir", str(tmp_path / "other")], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1 and "swagger2openapi" in refused.stderr
    assert not (tmp_path / "other" / "gateway.yaml").exists()
