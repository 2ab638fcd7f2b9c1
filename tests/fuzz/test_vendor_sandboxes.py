"""Faithful sandboxes (issue 18): schemathesis fuzzes each vendor sandbox against the vendor's contract in
contracts/vendors/. Every answer must be one the contract declares, of the declared media type, never a 5xx, and
without drift (tests/fuzz/vendor_hooks.py: no field the vendor does not send, none missing, no other type, no unknown
enum value). A resource made first gives the fuzzer ids that exist, so reads and updates reach the sandbox's logic.
A sandbox that answers what the real vendor never would fails here."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from sandboxes.shippo import CARRIERS
from tests.conftest import ROOT

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance," \
         "no_vendor_drift"
STRIPE_KEY = "sk_test_sandbox0000000000000000"
HUBSPOT_TOKEN = "pat-na1-sandbox-0000"
SHIPPO_TOKEN = "shippo_test_sandbox0000000000"
WOO_AUTH = "Basic " + base64.b64encode(b"ck_sandbox000000000000:cs_sandbox000000000000").decode()

pytestmark = pytest.mark.fuzz


def existing(vendor: str, url: str) -> tuple[str, dict[str, str]]:
    """The Authorization header and path parameters of a resource made in the sandbox just now."""
    if vendor == "stripe":
        auth = f"Bearer {STRIPE_KEY}"
        made = httpx.post(url + "/v1/payment_intents", headers={"authorization": auth}, data={
            "amount": "1000", "currency": "eur", "payment_method": "pm_card_visa", "confirm": "true",
            "capture_method": "manual", "automatic_payment_methods[enabled]": "true",
            "automatic_payment_methods[allow_redirects]": "never"})
        return auth, {"path.intent": made.raise_for_status().json()["id"]}
    if vendor == "hubspot":
        auth = f"Bearer {HUBSPOT_TOKEN}"
        made = httpx.post(url + "/crm/v3/objects/contacts", headers={"authorization": auth},
                          json={"properties": {"email": "fuzz@example.com"}})
        if made.status_code == 409:
            return auth, {"path.contactId": made.json()["message"].rsplit(" ", 1)[-1]}
        return auth, {"path.contactId": made.raise_for_status().json()["id"]}
    if vendor == "shippo":  # a label bought: a transaction and its track
        auth = f"ShippoToken {SHIPPO_TOKEN}"
        parcel = {"length": "30", "width": "20", "height": "10", "distance_unit": "cm", "weight": "1200",
                  "mass_unit": "g"}
        address = {"name": "Fuzz", "street1": "Rua Augusta 10", "city": "Lisboa", "zip": "1100-053", "country": "PT"}
        shipment = httpx.post(url + "/shipments", headers={"authorization": auth}, json={
            "address_from": address, "address_to": address, "parcels": [parcel]}).raise_for_status().json()
        rate = shipment["rates"][0]
        label = httpx.post(url + "/transactions", headers={"authorization": auth},
                           json={"rate": rate["object_id"]}).raise_for_status().json()
        carrier = next(c[1] for c in CARRIERS if c[0] == rate["provider"])  # tracks name carriers by token
        return auth, {"path.TransactionId": label["object_id"], "path.carrier": carrier,
                      "path.TrackingNumber": label["tracking_number"]}
    made = httpx.post(url + "/wp-json/wc/v3/orders", headers={"authorization": WOO_AUTH}, json={
        "billing": {"email": "fuzz@example.com"}, "line_items": [{"product_id": 101, "quantity": 1}]})
    return WOO_AUTH, {"path.id": str(made.raise_for_status().json()["id"])}


def fuzz(vendor: str, url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    contract = ROOT / "contracts" / "vendors" / f"{vendor}.yaml"
    auth, params = existing(vendor, url)
    config = tmp_path / "schemathesis.toml"
    config.write_text("[generation]\nallow-x00 = false\n\n[parameters]\n"
                      + "".join(f'"{k}" = "{v}"\n' for k, v in params.items()))
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", str(contract),
           "--url", url, "--checks", CHECKS, "--mode", "positive", "--max-examples", str(EXAMPLES),
           "--seed", "20261205", "--phases", "examples,fuzzing", "--workers", "1", "--suppress-health-check", "all",
           "--request-timeout", "20", "--header", f"Authorization: {auth}"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzz.vendor_hooks", "VENDOR_CONTRACT": str(contract),
           "PYTHONPATH": str(ROOT), "NO_COLOR": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)


@pytest.mark.parametrize("vendor", ["stripe", "hubspot", "woocommerce", "shippo"])
def test_the_sandbox_answers_only_what_the_vendor_contract_allows(vendor: str, sandboxes, tmp_path: Path):
    url = sandboxes.urls[vendor]
    httpx.post(url + "/_sandbox/reset").raise_for_status()
    if vendor == "hubspot":  # HubSpot's real 100-calls-per-10-s limit would turn fuzzing into (correct) 429s
        httpx.put(url + "/_sandbox/settings", json={"burst_limit": 1_000_000}).raise_for_status()
    try:
        result = fuzz(vendor, url, tmp_path)
    finally:
        httpx.post(url + "/_sandbox/reset").raise_for_status()
    assert result.returncode == 0, result.stdout[-12000:] + result.stderr[-4000:]


def test_a_sandbox_that_drifts_fails_the_fuzzing(sandboxes, tmp_path: Path):
    """The check can fail: a HubSpot sandbox whose search answers a field HubSpot does not send is caught."""
    url = sandboxes.urls["hubspot"]
    httpx.post(url + "/_sandbox/reset").raise_for_status()
    httpx.put(url + "/_sandbox/faults", json=[{"path": "/crm/v3/objects/contacts/search",
                                              "drift": {"set": {"surprise": 1}}}]).raise_for_status()
    try:
        result = fuzz("hubspot", url, tmp_path)
    finally:
        httpx.post(url + "/_sandbox/reset").raise_for_status()
    assert result.returncode != 0
    assert "undeclared_field at /surprise" in result.stdout
