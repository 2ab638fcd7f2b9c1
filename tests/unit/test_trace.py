"""`gateway trace`: the verdict counts retries per vendor call, not across calls; run outside the gateway's
folder it says what is missing."""

from __future__ import annotations

import os
import subprocess
import sys

from gateway.observability.story import verdict
from tests.conftest import ROOT

ACCESS = {"status": 201, "stage": "dispatch", "vendor": "hubspot"}


def attempt(n: int, method: str, path: str, status: int) -> dict:
    return {"event": "vendor_attempt", "vendor": "hubspot", "attempt": n, "method": method, "path": path,
            "status": status}


def test_a_search_then_a_create_without_failure_is_not_called_a_retry():
    """A HubSpot upsert makes two calls, each on its first attempt: no retry, two vendor calls."""
    calls = [attempt(1, "POST", "/crm/v3/objects/contacts/search", 200),
             attempt(1, "POST", "/crm/v3/objects/contacts", 201)]
    assert verdict(ACCESS, calls) == "ok: answered 201 (2 vendor calls)"


def test_a_call_that_failed_twice_then_answered_counts_two_retries():
    calls = [attempt(1, "GET", "/x", 503), attempt(2, "GET", "/x", 503), attempt(3, "GET", "/x", 200)]
    assert verdict({**ACCESS, "status": 200}, calls) == "ok: answered 200 after 2 retries of failed vendor attempts"


def test_one_call_answered_at_once_is_plain_ok():
    assert verdict(ACCESS, [attempt(1, "POST", "/x", 201)]) == "ok: answered 201"


def test_trace_url_outside_the_gateway_folder_asks_for_the_config(tmp_path):
    """With no gateway.yaml in the working directory and no token, it says so instead of blaming the issuer."""
    env = {k: v for k, v in os.environ.items() if k not in ("GATEWAY_CONFIG", "GATEWAY_ADMIN_TOKEN")}
    env["PYTHONPATH"] = str(ROOT)
    out = subprocess.run([sys.executable, "-m", "gateway", "trace", "some-request", "--url", "http://127.0.0.1:9"],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60)
    assert out.returncode == 2
    assert out.stderr.startswith("no gateway.yaml here: pass --config") and "Traceback" not in out.stderr
