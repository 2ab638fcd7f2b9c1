"""Parameter styles, the router's matching rules and the problem tree, without sockets."""

from __future__ import annotations

import orjson
import pytest

from gateway.http.params import ParamSpec, coerce
from gateway.http.router import Router
from gateway.problems import (
    GatewayError,
    MethodNotAllowed,
    NotFound,
    ProblemRenderer,
    RequestInvalid,
    Violation,
    all_problem_classes,
)
from gateway.runtime import check
from gateway.settings import load_settings
from tests.conftest import DATA


def spec(style: str, explode: bool, shape: str = "array", types=("integer",), props=None) -> ParamSpec:
    return ParamSpec("p", "query", False, style, explode, shape, types, props or {})


@pytest.mark.parametrize("style, explode, raw, expected", [
    ("form", False, "1,2,3", [1, 2, 3]),
    ("form", True, ["1", "2"], [1, 2]),
    ("spaceDelimited", False, "1 2", [1, 2]),
    ("pipeDelimited", False, "1|2", [1, 2]),
    ("simple", False, "4,5", [4, 5]),
    ("label", False, ".4,5", [4, 5]),
    ("label", True, ".4.5", [4, 5]),
    ("matrix", False, ";p=4,5", [4, 5]),
    ("matrix", True, ";p=4;p=5", [4, 5]),
])
def test_array_styles_decode_per_openapi(style, explode, raw, expected):
    """Each serialization style of an array parameter decodes to the same typed list."""
    assert spec(style, explode).decode(raw) == expected


def test_object_styles_decode_per_openapi():
    """Objects: `k,v,k2,v2` without explode, `k=v,k2=v2` with it; property types are applied."""
    props = {"min": ("integer",), "name": ("string",)}
    assert spec("simple", False, "object", (), props).decode("min,3,name,x") == {"min": 3, "name": "x"}
    assert spec("simple", True, "object", (), props).decode("min=3,name=x") == {"min": 3, "name": "x"}
    assert spec("deepObject", True, "object", (), props).decode({"min": "3"}) == {"min": 3}


@pytest.mark.parametrize("raw, types, expected", [
    ("12", ("integer",), 12), ("-3", ("integer",), -3), ("01", ("integer",), "01"), ("1.5", ("number",), 1.5),
    ("true", ("boolean",), True), ("yes", ("boolean",), "yes"), ("nan", ("number",), "nan"),
    ("12345678901234567890123", ("integer",), "12345678901234567890123"), ("", ("null", "string"), None),
    ("x", ("integer", "string"), "x"),
])
def test_coercion_keeps_strings_it_cannot_type(raw, types, expected):
    """Strings become the declared type only when they spell it exactly; otherwise validation reports them."""
    assert coerce(raw, types) == expected


@pytest.fixture(scope="module")
def router() -> Router:
    settings = load_settings(None, {"contracts": [str(DATA / "contracts" / "v3.1")],
                                    "vendors": {"svc": {"adapter": "http", "base_url": "http://127.0.0.1:9"}}})
    _, operations, problems = check(settings)
    assert not problems
    return Router(operations)


def test_router_prefers_literals_and_decodes_segments(router):
    """Literal segments win over templates; each segment is percent-decoded on its own."""
    assert router.match("GET", "/feat/items/search")[0].operation_id == "searchItems"
    op, params = router.match("GET", "/feat/items/a%2Fb")
    assert op.operation_id == "getItem" and params == {"item_id": "a/b"}
    op, params = router.match("GET", "/feat/items/7.xml")
    assert op.operation_id == "getItemFormatted" and params == {"item_id": "7", "format": "xml"}


def test_router_405_lists_allowed_methods_and_404_otherwise(router):
    """A known path with an unknown method is 405 with Allow; unknown, empty-segment or NUL paths are 404."""
    with pytest.raises(MethodNotAllowed) as exc:
        router.match("PUT", "/feat/items")
    assert exc.value.headers == {"allow": "POST"}
    for path in ("/feat/items/1/2", "/feat//items", "/feat/items/", "/feat/items/%00"):
        with pytest.raises(NotFound):
            router.match("GET", path)


def test_every_problem_type_is_documented_and_unique():
    """Each problem class has its own slug and a docstring; 4xx and 5xx sit on their own branches."""
    classes = [c for c in all_problem_classes() if c not in (GatewayError,)]
    slugs = [c.slug for c in classes if c.__name__ not in ("ClientProblem", "ServerProblem")]
    assert len(slugs) == len(set(slugs))
    assert all(c.__doc__ for c in classes)
    from gateway.problems import ClientProblem, ServerProblem
    for c in classes:
        if issubclass(c, ClientProblem):
            assert 400 <= c.status < 500, c
        elif issubclass(c, ServerProblem):
            assert 500 <= c.status < 600, c


def test_problem_rendering_follows_rfc_9457():
    """type, title, status, detail, instance and the errors extension."""
    err = RequestInvalid([Violation("query", "/limit", "value is greater than the maximum of 100")])
    doc = orjson.loads(ProblemRenderer("https://example.test/p").body(err, "req-1"))
    assert doc == {"type": "https://example.test/p/validation-error", "title": "Request does not match the contract",
                   "status": 400, "detail": "1 violation of the contract", "instance": "req-1",
                   "errors": [{"in": "query", "pointer": "/limit",
                               "message": "value is greater than the maximum of 100"}]}
