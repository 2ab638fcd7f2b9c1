"""Observability as an operator uses it: access lines, masking, metrics, trace context, `gateway trace`, health,
the operator page. Every gateway here writes its JSON log to a file of the test's own, over real sockets."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.observability.tracing import Tracing
from gateway.settings import TracingSettings
from tests.browser import ARTIFACTS, render
from tests.conftest import ROOT, bearer

ORDER = {"currency": "EUR", "customer": {"email": "ana@example.com", "first_name": "Ana", "last_name": "Lima",
                                         "phone": "+351 912 345 678"},
         "items": [{"sku": "SKU-123", "quantity": 1}],
         "shipping_address": {"line1": "Rua Augusta 10", "city": "Lisboa", "postal_code": "1100-053",
                              "country": "PT"}}


@pytest.fixture
def start(demo_gateway, tmp_path):
    """A gateway logging JSON to tmp_path/gateway.log, in front of freshly reset sandboxes."""
    def run(tracing_exporter=None, **overrides):
        log = tmp_path / "gateway.log"

        def prepare(app):
            if tracing_exporter is not None:
                app.runtime.tracing = Tracing(TracingSettings(), exporter=tracing_exporter)

        app, client = demo_gateway(prepare, **{"observability.logging.output": str(log), **overrides})
        return app, client, log

    return run


def log_lines(path: Path) -> list[dict]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def access_line(path: Path, request_id: str) -> dict:
    lines = [x for x in log_lines(path) if x["event"] == "access" and x["request_id"] == request_id]
    assert len(lines) == 1, lines
    return lines[0]


def journal(sandboxes, vendor: str) -> list[dict]:
    return httpx.get(sandboxes.urls[vendor] + "/_sandbox/requests").json()


def test_access_line_names_the_route_template_and_every_decision(start):
    """One JSON access line per request: template not raw path, status, duration, client, API, decisions."""
    app, client, log = start()
    created = client.post("/v2/orders", json=ORDER, headers={"Idempotency-Key": str(uuid.uuid4())})
    assert created.status_code == 201, created.text
    rid = "order-lookup-1042"
    got = client.get(f"/v2/orders/{created.json()['id']}", headers={"X-Request-ID": rid})
    assert got.status_code == 200 and got.headers["x-request-id"] == rid
    line = access_line(log, rid)
    assert line["route"] == "/v2/orders/{order_id}" and created.json()["id"] not in str(line)
    assert line["method"] == "GET" and line["status"] == 200 and line["duration_ms"] > 0
    assert (line["client"], line["api"], line["version"], line["operation"], line["vendor"]) == (
        "demo-partner", "orders", "v2", "getOrder", "woocommerce")
    assert line["attempts"] == 1 and line["breaker"] == "closed" and line["ratelimit"] == "allowed"
    assert line["stage"] == "dispatch" and line["level"] == "info" and line["ts"].endswith("Z")
    assert len(line["trace_id"]) == 32
    post = access_line(log, created.headers["x-request-id"])
    assert post["idempotency"] == "stored" and post["route"] == "/v2/orders"
    attempts = [x for x in log_lines(log) if x["event"] == "vendor_attempt" and x["request_id"] == rid]
    assert [(a["vendor"], a["operation"], a["status"], a["outcome"]) for a in attempts] == [
        ("woocommerce", "getOrder", 200, "ok")]
    replay = client.post("/v2/orders", json=ORDER, headers={"Idempotency-Key": "k-" + rid})
    again = client.post("/v2/orders", json=ORDER, headers={"Idempotency-Key": "k-" + rid})
    assert again.headers["idempotent-replayed"] == "true" and replay.status_code == 201
    replayed = access_line(log, again.headers["x-request-id"])
    assert replayed["idempotency"] == "replayed" and replayed["attempts"] == 0 and replayed["stage"] == "idempotency"


def test_request_id_is_validated_and_on_every_answer(start):
    """An unsafe X-Request-ID is replaced; the id is on successes, problems (instance) and the shell's answers."""
    _, client, log = start()
    bad = client.get("/v2/orders/ord_1", headers={"X-Request-ID": "no spaces/or slashes" + "x" * 200})
    rid = bad.headers["x-request-id"]
    assert bad.status_code == 404 and len(rid) == 32 and rid in bad.json()["instance"]
    assert access_line(log, rid)["problem"] == "resource-not-found"
    for path in ("/healthz", "/readyz", "/no/such/thing", "/docs"):
        r = client.get(path, headers={"X-Request-ID": "probe-1"})
        assert r.headers["x-request-id"] == "probe-1", path
    missing = client.get("/no/such/thing")
    assert missing.headers["x-request-id"] in missing.json()["instance"]


def test_trace_context_and_request_id_reach_the_vendor(start, sandboxes):
    """A caller's traceparent/tracestate and request id arrive at the vendor; without one, a trace is started."""
    _, client, log = start()
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    r = client.get("/v2/orders/ord_1", headers={"traceparent": traceparent, "tracestate": "congo=t61rcWkgMzE",
                                                "X-Request-ID": "trace-me"})
    assert r.status_code == 404
    seen = journal(sandboxes, "woocommerce")[-1]["headers"]
    assert seen["traceparent"] == traceparent and seen["tracestate"] == "congo=t61rcWkgMzE"
    assert seen["x-request-id"] == "trace-me"
    assert access_line(log, "trace-me")["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    fresh = client.get("/v2/orders/ord_2", headers={"traceparent": "00-zz-not-valid-01"})
    seen = journal(sandboxes, "woocommerce")[-1]["headers"]
    version, trace_id, span_id, flags = seen["traceparent"].split("-")
    assert (version, flags, len(span_id)) == ("00", "00", 16) and "tracestate" not in seen
    assert trace_id == fresh.headers["x-request-id"]  # a generated request id doubles as the trace id


def test_tokens_and_sensitive_fields_never_reach_a_log_or_a_metric(start, sandboxes):
    """The caller's token, a phone number and a payment method (x-sensitive) appear nowhere, even in failures."""
    app, client, log = start()
    token = client.headers["authorization"].split()[1]
    phone, method = "+351 912 345 678", "pm_card_visa"
    assert client.post("/v2/orders", json=ORDER).status_code == 201
    payment = {"order_id": "ord_1", "amount": 2500, "currency": "EUR", "capture_method": "automatic",
               "payment_method": method}
    assert client.post("/v1/payments", json=payment, headers={"Idempotency-Key": str(uuid.uuid4())}).status_code \
        == 201
    httpx.put(sandboxes.urls["stripe"] + "/_sandbox/faults", json=[{"status": 503, "times": 1}]).raise_for_status()
    client.post("/v1/payments", json=payment, headers={"Idempotency-Key": str(uuid.uuid4())})
    client.get("/v2/orders", params={"status": "bogus"}, headers={"authorization": f"Bearer {token}x"})
    import logging

    logging.getLogger("gateway.test").warning("caller sent %s", f"Authorization: Bearer {token}",
                                              extra={"request_id": "r1", "phone": phone, "password": "hunter2"})
    everything = log.read_text() + b"".join(app.runtime.events.recent).decode()
    metrics_text = client.get("/metrics").text
    assert "gateway_requests_total" in metrics_text
    for secret in (token, phone, method, "hunter2"):
        assert secret not in everything, secret
        assert secret not in metrics_text, secret
    warning = next(x for x in log_lines(log) if x.get("logger") == "gateway.test")
    assert warning["msg"] == "caller sent Authorization: ***" and warning["phone"] == "***"


def sample(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                total += s.value
    return total


def test_metrics_after_a_scripted_sequence(start, sandboxes):
    """Two reads, a retried read, a bad query, a deprecated call, a replay and a rate-limit refusal, counted."""
    app, client, _ = start(**{"limits.plans.partner-basic.requests": {"rate": "3/minute", "burst": 3}})
    before = client.get("/metrics").text
    created = client.post("/v2/orders", json=ORDER).json()
    client.get(f"/v2/orders/{created['id']}")
    httpx.put(sandboxes.urls["woocommerce"] + "/_sandbox/faults",
              json=[{"status": 503, "times": 2}]).raise_for_status()
    client.get(f"/v2/orders/{created['id']}")
    assert client.get("/v2/orders", params={"status": "processing"}).status_code == 400
    assert client.get(f"/v1/orders/{created['id']}").headers["deprecation"]
    key = {"Idempotency-Key": str(uuid.uuid4())}
    client.post("/v2/orders", json=ORDER, headers=key)
    client.post("/v2/orders", json=ORDER, headers=key)
    # orders:all: the order is demo-partner's, and only its owner or a bypass scope reads it (docs/ownership.md).
    readonly = bearer(app, "demo-readonly", ["orders:read", "orders:all"])
    codes = [client.get(f"/v2/orders/{created['id']}", headers=readonly).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    after = client.get("/metrics").text

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    get_order = {"api": "orders", "version": "v2", "operation": "getOrder"}
    assert delta("gateway_requests_total", **get_order, status_class="2xx", client="demo-partner") == 2
    assert delta("gateway_requests_total", **get_order, status_class="2xx", client="demo-readonly") == 3
    assert delta("gateway_requests_total", **get_order, status_class="4xx", client="demo-readonly") == 1
    assert delta("gateway_request_seconds_count", **get_order) == 6
    assert delta("gateway_vendor_attempt_seconds_count", vendor="woocommerce", operation="getOrder",
                 outcome="5xx") == 2
    assert delta("gateway_vendor_attempt_seconds_count", vendor="woocommerce", operation="getOrder",
                 outcome="ok") == 6  # v1's getOrder too
    assert delta("gateway_vendor_calls_total", vendor="woocommerce", operation="getOrder", outcome="ok") == 6
    assert delta("gateway_validation_failures_total", operation="listOrders", location="query") == 1
    assert delta("gateway_deprecated_calls_total", api="orders", version="v1", client="demo-partner") == 1
    assert delta("gateway_idempotency_replays_total", operation="createOrder", version="v2") == 1
    assert delta("gateway_ratelimit_rejections_total", client="demo-readonly", reason="rate") == 1
    assert sample(after, "gateway_breaker_state", vendor="woocommerce") == 0


def test_gateway_trace_tells_the_story_of_a_request_retried_twice(start, sandboxes, tmp_path):
    """Two 503s then an answer: `gateway trace` (from the log file) and the admin endpoint tell the same story."""
    app, client, log = start()
    created = client.post("/v2/orders", json=ORDER).json()
    httpx.put(sandboxes.urls["woocommerce"] + "/_sandbox/faults",
              json=[{"status": 503, "times": 2}]).raise_for_status()
    rid = "partner-order-1042"
    assert client.get(f"/v2/orders/{created['id']}", headers={"X-Request-ID": rid}).status_code == 200
    out = subprocess.run([sys.executable, "-m", "gateway", "trace", rid, "--log", str(log)], capture_output=True,
                         text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    story = out.stdout
    assert f"request {rid}" in story and "GET /v2/orders/{order_id}" in story and "client demo-partner" in story
    assert ("policies: auth passed, ratelimit passed (allowed), validation passed, ownership passed, dispatch to "
            "woocommerce") in story
    assert story.count("-> HTTP 503") == 2 and "attempt 3: GET /wp-json/wc/v3/orders/" in story
    assert "retrying GET" in story
    assert "outcome: HTTP 200" in story and "3 vendor attempt(s)" in story
    assert "verdict: ok: answered 200 after 2 retries of failed vendor attempts" in story
    admin = bearer(app, "demo-operator", ["gateway:admin"])
    told = client.get(f"/admin/requests/{rid}", headers=admin)
    assert told.status_code == 200 and told.json()["story"] == story.rstrip("\n")
    assert httpx.get(f"{str(client.base_url).rstrip('/')}/admin/requests/{rid}").status_code == 401
    assert client.get(f"/admin/requests/{rid}").status_code == 403  # the partner's token is not an admin's
    httpx.put(sandboxes.urls["woocommerce"] + "/_sandbox/faults", json=[{"status": 503}]).raise_for_status()
    client.get(f"/v2/orders/{created['id']}", headers={"X-Request-ID": "vendor-down"})
    down = client.get("/admin/requests/vendor-down", headers=admin).json()["story"]
    assert "verdict: vendor: woocommerce failed (upstream-error) after 3 attempt(s)" in down
    client.get("/v2/orders", params={"status": "bogus"}, headers={"X-Request-ID": "bad-query"})
    theirs = client.get("/admin/requests/bad-query", headers=admin).json()["story"]
    assert "validation REFUSED" in theirs and "verdict: them: the caller's request was refused by the " \
                                              "validation policy (validation-error)" in theirs


def test_health_is_cheap_and_open_and_readiness_checks_redis(start, redis_url):
    """/healthz and /readyz need no token and no rate limit; /readyz reports Redis and breakers."""
    app, client, _ = start()
    with httpx.Client(base_url=str(client.base_url)) as anonymous:
        assert anonymous.get("/healthz").json() == {"status": "ok"}
        ready = anonymous.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"]["contracts"]["ok"] is True
    assert ready.json()["breakers"] == {name: "closed" for name in app.runtime.settings.vendors}
    _, with_redis, _ = start(**{"redis_url": redis_url, "limits.backend": "redis"})
    assert httpx.get(str(with_redis.base_url) + "/readyz").json()["checks"]["redis"] == {"ok": True}
    _, no_redis, _ = start(**{"redis_url": "redis://127.0.0.1:9/0", "limits.backend": "redis"})
    down = httpx.get(str(no_redis.base_url) + "/readyz")
    assert down.status_code == 503 and down.json()["checks"]["redis"]["ok"] is False


def test_spans_for_request_policies_and_each_vendor_attempt(start, sandboxes):
    """With an exporter: a server span, one per policy, one client span per attempt named in the vendor's
    traceparent, all in the caller's trace."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    _, client, _ = start(tracing_exporter=exporter)
    httpx.put(sandboxes.urls["woocommerce"] + "/_sandbox/faults",
              json=[{"status": 503, "times": 1}]).raise_for_status()
    caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    client.get("/v2/orders/ord_1", headers={"traceparent": f"00-{caller_trace}-00f067aa0ba902b7-01"})
    spans = exporter.get_finished_spans()
    names = [s.name for s in spans]
    assert names.count("woocommerce GET") == 2 and "GET /v2/orders/{order_id}" in names
    assert {"policy auth", "policy ratelimit", "policy validation"} <= set(names)
    assert {format(s.context.trace_id, "032x") for s in spans} == {caller_trace}
    last_attempt = [s for s in spans if s.name == "woocommerce GET"][-1]
    seen = journal(sandboxes, "woocommerce")[-1]["headers"]["traceparent"]
    assert seen == f"00-{caller_trace}-{format(last_attempt.context.span_id, '016x')}-01"


def test_operator_page_in_headless_chromium(start, sandboxes):
    """The page shows traffic per operation, breaker states and rejections; without a token it asks for one."""
    app, client, _ = start(**{"limits.plans.partner-basic.requests": {"rate": "1/minute", "burst": 1}})
    created = client.post("/v2/orders", json=ORDER).json()
    for _ in range(3):
        client.get(f"/v2/orders/{created['id']}")
    # orders:all: the order is demo-partner's, and only its owner or a bypass scope reads it (docs/ownership.md).
    readonly = bearer(app, "demo-readonly", ["orders:read", "orders:all"])
    client.get("/v2/orders/ord_1", headers=readonly)
    client.get("/v2/orders/ord_1", headers=readonly)
    token = bearer(app, "demo-operator", ["gateway:admin"])["authorization"].split()[1]
    base = str(client.base_url)
    dom = render(f"{base}/admin/ops#token={token}", screenshot="operator-page.png", wait_ms=5000)
    assert "getOrder" in dom and "createOrder" in dom, dom[:3000]
    assert '<td class="l closed">closed</td>' in dom
    assert "demo-readonly" in dom and "rate" in dom  # the rate-limit rejection
    assert "dead letters: " in dom and token not in dom
    assert (ARTIFACTS / "operator-page.png").stat().st_size > 10_000
    assert client.get("/admin/ops/data").status_code == 403
    locked = render(f"{base}/admin/ops", wait_ms=2000)
    assert "a token is needed" in locked and "getOrder" not in locked


NO_TRACING = """
import sys, httpx
from sandboxes.base import SandboxThread
from gateway.app import create_app
from tests.conftest import ServerThread, bearer, demo_settings
sandboxes = SandboxThread().start()
app = create_app(demo_settings(sandboxes.urls, **{"observability.logging.output": "none"}))
server = ServerThread(app).start()
assert httpx.get(server.url + "/v2/orders/ord_1", headers=bearer(app)).status_code == 404
server.stop()
print(sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk.trace", "opentelemetry.exporter"))))
"""


def test_without_an_endpoint_tracing_costs_nothing():
    """No OTLP endpoint: a request is served without OpenTelemetry's tracing SDK or exporter even being imported
    (the redis client imports the API and metrics SDK for itself), so no span object can exist."""
    out = subprocess.run([sys.executable, "-c", NO_TRACING], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
