"""Loading, linting and compiling contracts: every problem reported at once, with file, JSON pointer and reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.contracts.load import ContractError
from gateway.runtime import Runtime, check
from gateway.settings import load_settings

DATA = Path(__file__).resolve().parents[1] / "data" / "contracts"


def settings_for(*paths: Path):
    return load_settings(None, {"contracts": [str(p) for p in paths],
                                "vendors": {"svc": {"adapter": "http", "base_url": "http://127.0.0.1:9"}}})


def problems_for(*paths: Path) -> list[str]:
    _, _, problems = check(settings_for(*paths))
    return [f"{p.file.split('/')[-1]}#{p.pointer}: {p.reason}" for p in problems]


def test_valid_contracts_compile_every_operation():
    """The feature contracts (3.0 and 3.1) compile without a single problem."""
    contracts, operations, problems = check(settings_for(DATA / "v3.1", DATA / "v3.0"))
    assert problems == []
    assert {op.operation_id for op in operations} >= {"getItem", "createItem", "createPet", "createThing"}


def test_every_lint_problem_is_reported_at_once_with_its_pointer():
    """One run lists every problem of the file: nothing is hidden behind the first."""
    found = problems_for(DATA / "broken" / "many.yaml")
    expected = [
        "many.yaml#/x-gateway/colour: x-gateway: Extra inputs are not permitted",
        "many.yaml#/paths/~1a~1{id}/get: path template variable {id} has no matching path parameter",
        "many.yaml#/paths/~1b~1{id}/get/parameters/1: path parameter 'other' does not appear in the path template",
        "many.yaml#/paths/~1c/get/operationId: duplicate operationId 'getA' (also at /paths/~1a~1{id}/get)",
        "many.yaml#/paths/~1c/post: operation has no route (x-gateway.route: <vendor>.<operation>, or one default "
        "for all: x-gateway.route at the document root)",
        "many.yaml#/paths/~1c/put/x-gateway/route: route to unknown vendor 'nosuchvendor' (vendors: svc)",
        "many.yaml#/paths/~1c/delete/x-gateway/route: adapter 'http' has no operation 'no_such_operation' "
        "(it has: forward)",
        "many.yaml#/paths/~1d~1{y}/get/x-gateway/retries: x-gateway: Extra inputs are not permitted",
    ]
    for line in expected:
        assert line in found, f"missing: {line}\nfound:\n" + "\n".join(found)


def test_ambiguous_routes_are_refused():
    """`/d/{x}` and `/d/{y}` with the same method can never be told apart: that is an error."""
    settings = load_settings(None, {"contracts": [str(DATA / "broken" / "many.yaml")],
                                    "vendors": {"svc": {"adapter": "http", "base_url": "http://127.0.0.1:9"}}})
    _, _, problems = check(settings)
    ambiguous = [p for p in problems if "ambiguous route" in p.reason]
    assert len(ambiguous) == 1
    assert ambiguous[0].pointer == "/paths/~1d~1{y}/get"
    assert "GET /b/d/{y} also matches" in ambiguous[0].reason


def test_unresolvable_refs_local_and_relative_file_are_each_reported():
    """A missing local component, a missing file and a missing pointer in an existing file: three problems."""
    found = problems_for(DATA / "broken" / "refs.yaml")
    assert any("/paths/~1r/get/parameters/0/$ref" in f and "points to nothing" in f for f in found)
    assert any("content/application~1json/schema/$ref" in f and "no-such-file.yaml does not exist" in f
               for f in found)
    assert any("/paths/~1r/post/requestBody" in f and "points to nothing (no 'Nope')" in f for f in found)


def test_openapi_schema_violations_are_reported_with_pointer():
    """openapi-spec-validator's findings carry the pointer into the document."""
    found = problems_for(DATA / "broken" / "invalid.yaml")
    assert any(f.startswith("invalid.yaml#/paths/~1x/get/responses/200/description:") for f in found)


def test_unparseable_and_duplicate_key_yaml_are_problems_not_crashes():
    """Broken YAML and duplicate keys (which YAML would silently merge) are both reported."""
    assert any("invalid YAML" in f for f in problems_for(DATA / "broken" / "notyaml.yaml"))
    assert any("duplicate key '/x'" in f for f in problems_for(DATA / "broken" / "dupkeys.yaml"))


def test_schema_that_cannot_compile_is_a_problem():
    """An invalid regular expression in a schema stops start-up with the schema's pointer."""
    found = problems_for(DATA / "broken" / "badpattern.yaml")
    assert any("#/paths/~1p/post/requestBody/content/application~1json/schema/pattern: schema cannot be compiled"
                   in f
               for f in found), found


def test_runtime_refuses_to_build_on_any_problem():
    """Start-up raises ContractError listing every problem, so the gateway never serves half a contract."""
    with pytest.raises(ContractError) as exc:
        Runtime.build(settings_for(DATA / "broken" / "many.yaml"))
    assert len(exc.value.problems) >= 8


def test_gateway_check_command_exits_1_and_lists_problems(tmp_path):
    """`gateway check PATHS` prints one line per problem and exits with status 1."""
    config = tmp_path / "gateway.yaml"
    config.write_text("vendors:\n  svc: {adapter: http, base_url: 'http://127.0.0.1:9'}\n")
    result = subprocess.run([sys.executable, "-m", "gateway", "check", "--config", str(config),
                             str(DATA / "broken" / "many.yaml")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    lines = [line for line in result.stdout.splitlines() if "many.yaml#/" in line]
    assert len(lines) >= 8
    assert "problems found" in result.stderr


def test_gateway_check_passes_on_the_repository_contracts():
    """The shipped contracts and gateway.yaml are consistent: `gateway check` exits 0."""
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-m", "gateway", "check"], cwd=root, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok:")
