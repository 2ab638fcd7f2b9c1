"""Is this an OpenAPI 3.0 or 3.1 document? Checked against the official OpenAPI schemas, with jsonschema-rs.

The schemas are the ones openapi-spec-validator ships (its `resources/schemas`); the engine is jsonschema-rs, which
checks a 4 MB, 417-operation document in ~20 ms where openapi-spec-validator took 2.8 s (docs/decisions/
spec-validation.md). openapi-spec-validator's extra semantic checks are ours in lint.py (operationIds, path
parameters) or done when compiling (every schema must compile, reported at its own pointer).

A failing `oneOf`/`anyOf` (a Reference object *or* a Parameter, say) is followed into the alternative that got
furthest, so the finding points at the field that is wrong (`.../responses/200/description: must be a string`),
not at the object that contains it.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import jsonschema_rs

from .problems import ContractProblem, pointer_join

SWAGGER_HINT = ("Swagger 2.0: convert it to OpenAPI 3 (e.g. `npx swagger2openapi FILE -o openapi.yaml`), then "
                "check it again")
_QUOTED_VALUE = re.compile(r"^(\{.*\}|\[.*\]|\".*\"|-?[0-9.eE+-]+|true|false|null) ")


@functools.lru_cache(maxsize=4)
def _meta_validator(version: str) -> Any:
    # find_spec locates the package without importing it (its import costs ~0.8 s we do not need: only its data).
    spec = importlib.util.find_spec("openapi_spec_validator")
    if spec is None or spec.origin is None:
        raise RuntimeError("openapi-spec-validator (which ships the OpenAPI schemas) is not installed")
    folder = Path(spec.origin).parent / "resources" / "schemas" / version
    schema = json.loads((folder / "schema.json").read_text(encoding="utf-8"))
    return jsonschema_rs.validator_for(schema)


def version_problem(name: str, data: Any) -> ContractProblem | None:
    """Why `data` is not an OpenAPI 3.0/3.1 document we can serve, or None."""
    if not isinstance(data, dict):
        return ContractProblem(name, "", "not an OpenAPI document (the file holds no mapping)")
    if "swagger" in data and "openapi" not in data:
        return ContractProblem(name, "/swagger", SWAGGER_HINT)
    if "openapi" not in data:
        return ContractProblem(name, "", "not an OpenAPI document (no `openapi` field)")
    version = str(data.get("openapi"))
    if not version.startswith(("3.0", "3.1")):
        return ContractProblem(name, "/openapi", f"unsupported OpenAPI version {data.get('openapi')!r} "
                               "(3.0.x and 3.1.x are supported)")
    return None


def spec_problems(name: str, data: dict[str, Any]) -> list[ContractProblem]:
    """Every place where `data` breaks the OpenAPI schema of its version, each at the most precise pointer."""
    version = "v3.1" if str(data.get("openapi")).startswith("3.1") else "v3.0"
    validator = _meta_validator(version)
    problems: dict[tuple[str, str], ContractProblem] = {}
    try:
        errors = list(validator.iter_errors(data))
    except (ValueError, OverflowError) as exc:  # values jsonschema-rs cannot represent (integers beyond 64 bits)
        return [ContractProblem(name, "", f"the document holds a value that cannot be checked ({exc})"[:300])]
    for err in errors:
        for leaf in _leaves(err):
            where = pointer_join("", *leaf.instance_path)
            problems.setdefault((where, _message(leaf)), ContractProblem(name, where, _message(leaf)))
    return list(problems.values())


def _depth(errors: list[Any]) -> int:
    return max((len(e.instance_path) + _depth(_context(e)[0] if _context(e) else []) for e in errors), default=-1)


def _context(err: Any) -> list[list[Any]]:
    return list(getattr(err.kind, "context", None) or [])


def _leaves(err: Any) -> list[Any]:
    """The errors that say what is wrong: inside the alternative of a oneOf/anyOf that matched best."""
    branches = _context(err)
    if not branches:
        return [err]
    best = max(branches, key=lambda b: (_depth(b), -len(b)))
    if _depth(best) <= len(err.instance_path) and len(best) > 1:
        return [err]  # no alternative got further than the object itself: name the object
    out = []
    for e in best:
        out += _leaves(e)
    return out


def _message(err: Any) -> str:
    """A message that says what was expected, without repeating the (possibly huge) offending value."""
    name = err.kind.name
    if name in ("oneOf", "anyOf", "OneOfNotValid", "AnyOf"):
        return "matches none of the forms OpenAPI allows here"
    if name == "required":
        return f"{str(err.message).split(' is a required')[0]} is required"
    message = str(err.message)
    message = _QUOTED_VALUE.sub("value ", message, count=1) if len(message) < 400 else message
    if len(message) > 300:
        message = message[:297] + "..."
    return message
