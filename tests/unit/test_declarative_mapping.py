"""Declarative adapters (issue 18, item 6): the mapping file checked against both contracts, with every problem
located in the mapping file, the public contract and the vendor contract; the converters both ways; the engine's
pointers."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.declarative.engine import MISSING, build, compile_rules, read, write
from adapters.declarative.spec import MappingFileError, Rule, load_mapping
from gateway.runtime import check
from gateway.settings import load_settings
from gateway.vendorcontracts.mapping import mapping_problems
from tests.conftest import ROOT, TEST_KEYS
from tests.jobsupport import config_file

MAPPING = ROOT / "contracts" / "vendors" / "shippo.mapping.yaml"
PUBLIC = "contracts/shipping.v1.yaml"
VENDOR = "contracts/vendors/shippo.yaml"


@pytest.fixture(scope="module")
def compiled():
    settings = load_settings(ROOT / "gateway.yaml", {"auth.builtin.keys_dir": str(TEST_KEYS)})
    _, operations, problems = check(settings)
    assert not problems, problems
    return settings, operations


def problems_of(compiled, tmp_path: Path, change) -> list[str]:
    """The mapping problems of the shipped Shippo mapping after `change(mapping dict)`."""
    raw = yaml.safe_load(MAPPING.read_text())
    change(raw)
    file = tmp_path / "shippo.mapping.yaml"
    file.write_text(yaml.safe_dump(raw, sort_keys=False))
    settings, operations = compiled
    changed = load_settings(ROOT / "gateway.yaml", {"auth.builtin.keys_dir": str(TEST_KEYS),
                                                    "vendors.shippo.mapping": str(file)})
    return [str(p) for p in mapping_problems(changed, operations)]


def only(found: list[str]) -> str:
    assert len(found) == 1, found
    return found[0]


def test_the_shipped_shippo_mapping_holds_against_both_contracts(compiled):
    """The fourth vendor, files only: no problem with its mapping."""
    settings, operations = compiled
    assert mapping_problems(settings, operations) == []
    assert {op.operation_id for op in operations if op.vendor == "shippo"} == {
        "quoteShippingRates", "createShipment", "getShipment", "trackShipment"}


def test_a_wrong_public_pointer_is_refused_with_both_contracts_locations(compiled, tmp_path):
    def change(raw):
        raw["operations"]["quote_rates"]["request"]["/body/address_to/street1"] = {"from": "/body/destination/street"}

    line = only(problems_of(compiled, tmp_path, change))
    assert ("shippo.mapping.yaml#/operations/quote_rates/request/~1body~1address_to~1street1: "
                           "/body/destination/street is not in the public operation's request ('street' is not "
                           "declared)") in line
    assert f"public {PUBLIC}#/components/schemas/Address" in line
    assert f"vendor {VENDOR}#/components/schemas/AddressCreateRequest/properties/street1" in line


def test_a_wrong_vendor_pointer_is_refused_with_both_contracts_locations(compiled, tmp_path):
    def change(raw):
        rules = raw["operations"]["quote_rates"]["request"]
        rules["/body/address_to/street_line"] = rules.pop("/body/address_to/street1")

    found = problems_of(compiled, tmp_path, change)
    wrong = next(p for p in found if "street_line" in p.split(": ", 1)[0])
    assert "/body/address_to/street_line is not in the vendor operation's request ('street_line' is not declared)" \
        in wrong
    assert f"vendor {VENDOR}#/components/schemas/AddressCreateRequest" in wrong
    assert f"public {PUBLIC}#/components/schemas/Address/properties/line1" in wrong
    # and street1, which Shippo requires, is now written by no rule
    assert any("the vendor request field /address_to/street1 is required and no rule writes it" in p for p in found)


def test_a_required_vendor_field_not_supplied_is_refused(compiled, tmp_path):
    def change(raw):
        del raw["operations"]["quote_rates"]["request"]["/body/parcels/0/mass_unit"]

    line = only(problems_of(compiled, tmp_path, change))
    assert ("shippo.mapping.yaml#/operations/quote_rates/request: the vendor request field "
                           "/parcels/0/mass_unit is required and no rule writes it") in line
    assert f"vendor {VENDOR}#/components/schemas/ParcelCreateRequest/required" in line
    assert f"public {PUBLIC}#/paths/~1shipping~1rates/post/requestBody/content/application~1json/schema" in line


def test_a_required_vendor_field_from_an_optional_public_field_needs_a_default(compiled, tmp_path):
    def change(raw):
        raw["operations"]["quote_rates"]["request"]["/body/address_to/street1"] = {"from": "/body/destination/line2"}

    line = only(problems_of(compiled, tmp_path, change))
    assert "the vendor request field /address_to/street1 is required but its source may be absent" in line


def test_a_required_public_field_not_produced_is_refused(compiled, tmp_path):
    def change(raw):
        # the body is shared with create_shipment (a YAML anchor), so both lose it: look at one
        del raw["operations"]["get_shipment"]["response"]["body"]["/rate_id"]

    line = only([p for p in problems_of(compiled, tmp_path, change) if "/get_shipment/" in p])
    assert ("shippo.mapping.yaml#/operations/get_shipment/response/body: the public response field "
                           "/rate_id is required and no rule writes it") in line
    assert f"public {PUBLIC}#/components/schemas/Shipment/required" in line
    assert f"vendor {VENDOR}#/paths/~1transactions~1{{TransactionId}}/get/responses/200/content/application~1json/" \
           "schema" in line


def test_a_type_mismatch_is_refused(compiled, tmp_path):
    """An integer (grams) where Shippo takes a decimal string needs `convert: {to: string}`."""
    def change(raw):
        raw["operations"]["quote_rates"]["request"]["/body/parcels/0/weight"] = {"from": "/body/parcel/weight_grams"}

    line = only(problems_of(compiled, tmp_path, change))
    assert "request/~1body~1parcels~10~1weight: type mismatch: /body/parcel/weight_grams is integer, the target " \
           "takes string" in line
    assert f"public {PUBLIC}#/components/schemas/Parcel/properties/weight_grams" in line
    assert f"vendor {VENDOR}#/components/schemas/ParcelCreateRequest/properties/weight" in line


def test_an_enum_table_with_a_gap_or_a_value_outside_the_target_is_refused(compiled, tmp_path):
    def change(raw):
        table = raw["operations"]["track_shipment"]["response"]["body"]["/status"]["convert"]["enum"]
        del table["DELIVERED"]
        table["RETURNED"] = "sent_back"

    found = problems_of(compiled, tmp_path, change)
    # (the table is shared: the history's items have no default, so the gap shows there)
    assert any("history/fields/~1status/convert/enum: the enum table has no entry for ['DELIVERED'] of /status" in p
               and f"vendor {VENDOR}#/components/schemas/TrackingStatus/properties/status/enum" in p for p in found)
    assert any("the mapping gives ['sent_back'], outside the target's enum" in p
               and f"public {PUBLIC}#/components/schemas/TrackingStatus/enum" in p for p in found)


def test_a_public_answer_field_the_contract_does_not_declare_is_refused(compiled, tmp_path):
    def change(raw):
        raw["operations"]["track_shipment"]["response"]["body"]["/carrier_name"] = {"from": "/carrier"}

    line = only(problems_of(compiled, tmp_path, change))
    assert "/carrier_name is not in the public operation's answer ('carrier_name' is not declared)" in line
    assert f"public {PUBLIC}#/components/schemas/Tracking" in line and f"vendor {VENDOR}#/components/schemas/" \
        "Track/properties/carrier" in line


def test_an_unknown_converter_or_rule_is_refused_where_it_is_written(tmp_path):
    raw = yaml.safe_load(MAPPING.read_text())
    raw["operations"]["quote_rates"]["request"]["/body/parcels/0/weight"]["convert"] = {"round": 2}
    raw["operations"]["get_shipment"]["request"]["/path/TransactionId"] = {"from": "/params/shipment_id",
                                                                           "const": "x"}
    file = tmp_path / "m.yaml"
    file.write_text(yaml.safe_dump(raw))
    with pytest.raises(MappingFileError) as caught:
        load_mapping(file)
    where = dict(caught.value.problems)
    assert "Extra inputs are not permitted" in where[
        "/operations/quote_rates/request/~1body~1parcels~10~1weight/convert/round"]
    assert "exactly one of `from`, `const`, `template`, `each`" in where[
        "/operations/get_shipment/request/~1path~1TransactionId"]
    # start-up and `gateway check` list each of them at its pointer, and refuse to serve
    settings = load_settings(ROOT / "gateway.yaml", {"auth.builtin.keys_dir": str(TEST_KEYS),
                                                     "vendors.shippo.mapping": str(file)})
    _, operations, problems = check(settings)
    assert operations == []
    lines = [str(p) for p in problems]
    assert any(line.endswith("m.yaml#/operations/quote_rates/request/~1body~1parcels~10~1weight/convert/round: "
                             "Extra inputs are not permitted") for line in lines), lines


def test_gateway_check_prints_the_mapping_problems_and_fails(tmp_path):
    """The command line, as a person meets it: located lines, exit status 1, no traceback; serve refuses too."""
    raw = yaml.safe_load(MAPPING.read_text())
    raw["operations"]["quote_rates"]["request"]["/body/address_to/street1"] = {"from": "/body/destination/street"}
    file = tmp_path / "shippo.mapping.yaml"
    file.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = config_file(tmp_path, {"vendors.shippo.mapping": str(file),
                                 "vendors.shippo.contract.file": str(ROOT / VENDOR)})
    run = subprocess.run([sys.executable, "-m", "gateway", "check", "--config", str(cfg)], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    out = run.stdout + run.stderr
    assert run.returncode == 1 and "Traceback" not in out
    assert "shippo.mapping.yaml#/operations/quote_rates/request/~1body~1address_to~1street1: " \
           "/body/destination/street is not in the public operation's request" in out
    assert "shipping.v1.yaml#/components/schemas/Address" in out and "vendors/shippo.yaml#/components/" in out
    from gateway.contracts.load import ContractError
    from gateway.runtime import Runtime

    with pytest.raises(ContractError, match="destination/street"):
        Runtime.build(load_settings(cfg), install_logs=False)


# -- the engine ------------------------------------------------------------------------------------------------------


def rules(spec: dict) -> tuple:
    return compile_rules({target: Rule.model_validate(rule) for target, rule in spec.items()})


def test_money_converts_both_ways_with_the_currencys_exponent():
    """Minor units to a decimal string and back, for 2, 0 and 3 decimal currencies; no silent rounding."""
    out = rules({"/amount": {"from": "/minor", "convert": {"minor_to_decimal": {"currency": "/currency"}}}})
    back = rules({"/minor": {"from": "/amount", "convert": {"decimal_to_minor": {"currency": "/currency"}}}})
    for minor, currency, decimal in ((3998, "EUR", "39.98"), (5, "EUR", "0.05"), (1200, "JPY", "1200"),
                                     (12345, "KWD", "12.345"), (0, "USD", "0.00"), (12345, "CLF", "1.2345"),
                                     (10000, "UYW", "1.0000")):
        assert build(out, {"minor": minor, "currency": currency}) == {"amount": decimal}
        assert build(back, {"amount": decimal, "currency": currency}) == {"minor": minor}
    assert build(back, {"amount": 12.5, "currency": "EUR"}) == {"minor": 1250}  # a JSON number works too
    # 1.0e3 is an integer to JSON Schema, so the public contract lets it through: found by the contract fuzzing
    assert build(out, {"minor": 1.0e3, "currency": "EUR"}) == {"amount": "10.00"}
    fixed = rules({"/a": {"from": "/m", "convert": {"minor_to_decimal": {"exponent": 3}}}})
    assert build(fixed, {"m": 1500}) == {"a": "1.500"}
    for bad in ("12.345", "twelve", "NaN"):
        with pytest.raises(ValueError):  # the @operation guard turns it into 502 upstream-contract-violation
            build(back, {"amount": bad, "currency": "EUR"})
    with pytest.raises(ValueError):
        build(out, {"minor": "12", "currency": "EUR"})
    assert Decimal(build(out, {"minor": 10**15 + 1, "currency": "EUR"})["amount"]) == Decimal("10000000000000.01")


def test_enum_tables_patterns_templates_defaults_and_lists():
    compiled = rules({
        "/status": {"from": "/s", "convert": {"enum": {"SUCCESS": "label_created", "ERROR": "failed"}}},
        "/carrier": {"from": "/p", "convert": {"enum": {"UPS": "ups"}}, "default": "other"},
        "/owner": {"from": "/meta", "convert": {"pattern": "owner=([^;]*)"}},
        "/order": {"from": "/meta", "convert": {"pattern": "order=([^;]*)"}, "default": ""},
        "/meta": {"template": "owner={/who};order={/o/id}"},
        "/weight": {"from": "/g", "convert": {"to": "string"}},
        "/n": {"from": "/digits", "convert": {"to": "integer"}},
        "/eta": {"from": "/eta", "default": None},
        "/fixed/0/x": {"const": True},
        "/items": {"each": "/list", "fields": {"/id": {"from": "/object_id"}}},
    })
    got = build(compiled, {"s": "SUCCESS", "p": "Royal Mail", "meta": "owner=acme;x=1", "who": "acme",
                           "o": {"id": "ord_1"}, "g": 1200, "digits": "42", "list": [{"object_id": "a"},
                                                                                     {"object_id": "b"}]})
    assert got == {"status": "label_created", "carrier": "other", "owner": "acme", "order": "",
                   "meta": "owner=acme;order=ord_1", "weight": "1200", "n": 42, "eta": None,
                   "fixed": [{"x": True}], "items": [{"id": "a"}, {"id": "b"}]}
    with pytest.raises(ValueError, match="not in the enum table"):
        build(compiled, {"s": "LOST"})
    with pytest.raises(ValueError, match="does not match"):  # no default: a value it cannot read is an error
        build(compiled, {"s": "ERROR", "meta": "order=ord_1"})
    with pytest.raises(TypeError):  # `each` over something that is not a list: a broken answer, not a crash
        build(rules({"/items": {"each": "/list", "fields": {"/id": {"from": "/id"}}}}), {"list": "none"})


def test_pointers_read_and_write_through_objects_and_lists():
    root: dict = {}
    write(root, ("parcels", 0, "weight"), "1")
    write(root, ("parcels", 0, "unit"), "g")
    write(root, ("a/b",), 1)
    assert root == {"parcels": [{"weight": "1", "unit": "g"}], "a/b": 1}
    assert read(root, ("parcels", 0, "unit")) == "g"
    assert read(root, ("parcels", 3)) is MISSING and read(root, ("parcels", "x")) is MISSING
    assert read({"a": None}, ("a", "b")) is MISSING


# -- the adapter at the seam (no sockets) ----------------------------------------------------------------------------


def test_a_declarative_adapter_sends_its_idempotency_key_query_and_headers_and_is_retried_safely():
    """A vendor that takes idempotency keys: the caller's key goes in the declared header, so a 503 is retried;
    query values are written as the wire wants them (booleans lower case); credentials fill the static headers."""
    import asyncio

    import orjson

    from adapters.base import AdapterCall
    from adapters.client import VendorClient
    from adapters.declarative.adapter import make_class
    from adapters.declarative.spec import MappingSpec
    from adapters.transport.mock import MockAnswer, MockTransport
    from gateway.settings import VendorSettings

    spec = MappingSpec.model_validate({
        "mapping": 1, "credentials": ["token"], "headers": {"Authorization": "Bearer {credentials.token}"},
        "idempotency_header": "X-Idempotency-Key", "errors": {"message": ["/error/message"]},
        "operations": {"book": {
            "call": "POST /v2/bookings/{account}",
            "request": {"/path/account": {"const": "acc/1"}, "/query/notify": {"const": True},
                        "/header/X-Order": {"from": "/body/order_id"},
                        "/body/amount": {"from": "/body/total/amount",
                                         "convert": {"minor_to_decimal": {"currency": "/body/total/currency"}}}},
            "response": {"status": 201, "body": {"/id": {"from": "/booking"}}}}}})
    answers = [MockAnswer(503, b'{"error": {"message": "busy"}}'), MockAnswer(200, b'{"booking": "b1"}')]
    transport = MockTransport(lambda request: answers.pop(0))
    settings = VendorSettings(adapter="declarative", mapping="x.yaml", base_url="http://vendor.test",
                              credentials={"token": "t0k"}, retries={"backoff_base_s": 0.001, "backoff_cap_s": 0.001})
    cls = make_class("bookings", spec)
    assert cls.check_settings(VendorSettings(adapter="declarative", mapping="x", base_url="http://v.test")) == [
        "credentials.token is required (the mapping file's `credentials`)"]
    adapter = cls("bookings", settings, VendorClient("bookings", settings, transport))
    call = AdapterCall("book", {}, {"order_id": "ord_1", "total": {"amount": 1999, "currency": "EUR"}},
                       idempotency_key="key-1")

    async def run():
        await adapter.startup()
        try:
            return await adapter.handler("book")(call)
        finally:
            await adapter.shutdown()

    result = asyncio.run(run())
    refused_answers = [MockAnswer(422, b'{"error": {"message": "account acc/1 is closed"}}')]
    assert (result.status, result.body) == (201, {"id": "b1"})
    # the 503 was retried: the idempotency key makes it safe, whatever the vendor calls its header
    assert len(transport.requests) == 2
    sent = transport.requests[-1]
    assert sent.path == "/v2/bookings/acc%2F1?notify=true"
    assert sent.headers.get("x-idempotency-key") == "key-1" and sent.headers.get("x-order") == "ord_1"
    assert sent.headers.get("authorization") == "Bearer t0k"
    assert orjson.loads(sent.body) == {"amount": "19.99"}
    # The vendor's error body read by the mapping's `errors`; the status picks the problem (adapters/errors.py).
    from gateway.problems import VendorRejected

    answers.extend(refused_answers)
    with pytest.raises(VendorRejected, match="account acc/1 is closed"):
        asyncio.run(run())
    # Without a key the same POST is not repeatable: the 503 is not retried (one request, the problem answered)
    from gateway.problems import GatewayError

    sent_before = len(transport.requests)
    answers.extend([MockAnswer(503, b'{"error": {"message": "busy"}}'), MockAnswer(200, b'{"booking": "b2"}')])
    call = AdapterCall("book", {}, {"order_id": "ord_1", "total": {"amount": 1999, "currency": "EUR"}})
    with pytest.raises(GatewayError):
        asyncio.run(run())
    assert len(transport.requests) == sent_before + 1


async def test_every_shippo_route_against_its_sandbox_sends_only_what_the_contract_allows_and_sees_no_drift(
        tmp_path):
    """The four routes of the mapping against the Shippo sandbox, the vendor contract enforced on every request and
    every answer checked for drift: none (as tests/unit/test_vendor_contracts.py does for the Python adapters)."""
    from adapters.base import AdapterCall
    from adapters.client import VendorClient
    from adapters.declarative.adapter import make_class
    from adapters.transport.mock import ASGITransport
    from gateway.settings import VendorSettings
    from gateway.vendorcontracts import ContractCheck, DriftLog, load_vendor_contract
    from gateway.vendorcontracts.drift import read_drift
    from sandboxes.shippo import API_TOKEN, create_sandbox

    settings = VendorSettings(adapter="declarative", mapping=str(MAPPING), base_url="http://vendor.test",
                              credentials={"api_token": API_TOKEN}, retries={"max_attempts": 1})
    client = VendorClient("shippo", settings, ASGITransport(create_sandbox()))
    client.contract = ContractCheck(load_vendor_contract("shippo", ROOT / VENDOR), "enforce",
                                    DriftLog(tmp_path / "drift.sqlite"))
    adapter = make_class("shippo", load_mapping(MAPPING))("shippo", settings, client)
    await adapter.startup()
    body = {"order_id": "ord_5", "destination": {"name": "Ana", "line1": "Rua Augusta 10", "line2": "2 Esq",
                                                 "city": "Lisboa", "region": "Lisboa", "postal_code": "1100-053",
                                                 "country": "PT"},
            "parcel": {"weight_grams": 2500, "length_cm": 40, "width_cm": 30, "height_cm": 20},
            "declared_value": {"amount": 120000, "currency": "JPY"}}
    quote = await adapter.handler("quote_rates")(AdapterCall("quoteShippingRates", {}, body))
    rate = quote.body["rates"][0]
    made = await adapter.handler("create_shipment")(AdapterCall("createShipment", {}, {
        "order_id": "ord_5", "rate_id": rate["id"]}, owner="acme"))
    assert made.owner == "acme" and made.body["order_id"] == "ord_5"
    read = await adapter.handler("get_shipment")(AdapterCall("getShipment", {"shipment_id": made.body["id"]}))
    assert read.owner == "acme" and read.body == made.body
    track = await adapter.handler("track_shipment")(AdapterCall("trackShipment", {
        "carrier": rate["carrier"], "tracking_number": made.body["tracking_number"]}))
    assert track.body["status"] == "pre_transit"
    await adapter.shutdown()
    assert read_drift(tmp_path / "drift.sqlite") == []


# -- review fixes (issue 18, after the merge) ------------------------------------------------------------------------


def check_with(tmp_path: Path, change=None, text: bytes | None = None) -> list[str]:
    """`check` (start-up and `gateway check`) with the Shippo mapping changed: its problems, as printed."""
    file = tmp_path / "shippo.mapping.yaml"
    if text is None:
        raw = yaml.safe_load(MAPPING.read_text())
        change(raw)
        text = yaml.safe_dump(raw, sort_keys=False).encode()
    file.write_bytes(text)
    settings = load_settings(ROOT / "gateway.yaml", {"auth.builtin.keys_dir": str(TEST_KEYS),
                                                     "vendors.shippo.mapping": str(file)})
    _, operations, problems = check(settings)
    assert operations == [] and problems
    return [str(p) for p in problems]


def test_a_header_naming_an_undeclared_credential_is_refused_where_it_is_written(tmp_path):
    """It used to pass the check and crash start-up with a KeyError."""
    lines = check_with(tmp_path, lambda raw: raw["headers"].update({"X-Account": "{credentials.account_id}"}))
    assert any("shippo.mapping.yaml#/headers: X-Account: {credentials.account_id} is not declared in "
               "`credentials` (api_token)" in line for line in lines), lines


def test_a_route_named_like_an_attribute_of_the_adapter_is_refused(tmp_path):
    """A route `run` replaced DeclarativeAdapter.run and broke every route."""
    for name in ("run", "headers", "check_settings"):
        def rename(raw, name=name):
            raw["operations"][name] = raw["operations"].pop("track_shipment")

        lines = check_with(tmp_path, rename)
        assert any(f"shippo.mapping.yaml#/operations: {name!r} cannot be a route name" in line
                   for line in lines), lines


def test_a_mapping_file_that_is_not_utf8_is_a_located_error_not_a_traceback(tmp_path):
    raw = MAPPING.read_bytes()
    line_number = raw[:raw.index(b"Demo Shop")].count(b"\n") + 1
    lines = check_with(tmp_path, text=raw.replace(b"Demo Shop", b"D\xe9mo Shop"))
    assert any(f"shippo.mapping.yaml#: not UTF-8 text: byte 0xe9 at line {line_number} cannot be decoded" in line
               for line in lines), lines


def test_a_mapping_edit_is_seen_through_a_warm_compile_cache(tmp_path):
    """The compile cache's key covers the mapping file and the vendor contract: deleting a route from the mapping
    after a cached start is refused by `gateway check` (exit 1, located), and start-up refuses it too (no
    KeyError traceback)."""
    from gateway.contracts.load import ContractError
    from gateway.runtime import Runtime

    file = tmp_path / "shippo.mapping.yaml"
    file.write_bytes(MAPPING.read_bytes())
    cfg = config_file(tmp_path, {"vendors.shippo.mapping": str(file), "contracts_cache": str(tmp_path / "cache"),
                                 "vendors.shippo.contract.file": str(ROOT / VENDOR)})
    _, operations, problems = check(load_settings(cfg))
    assert operations and not problems and list((tmp_path / "cache").iterdir())  # the cache is warm
    raw = yaml.safe_load(file.read_text())
    del raw["operations"]["track_shipment"]
    file.write_text(yaml.safe_dump(raw, sort_keys=False))
    run = subprocess.run([sys.executable, "-m", "gateway", "check", "--config", str(cfg)], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    out = run.stdout + run.stderr
    assert run.returncode == 1 and "Traceback" not in out, out
    assert "x-gateway/route" in out and "track_shipment" in out, out
    with pytest.raises(ContractError, match="track_shipment"):
        Runtime.build(load_settings(cfg), install_logs=False)


def _seam(spec: dict, answers: list) -> tuple:
    """A declarative adapter made from `spec`, in front of a mock vendor answering `answers` in turn."""
    from adapters.client import VendorClient
    from adapters.declarative.adapter import make_class
    from adapters.declarative.spec import MappingSpec
    from adapters.transport.mock import MockTransport
    from gateway.settings import VendorSettings

    transport = MockTransport(lambda request: answers.pop(0))
    settings = VendorSettings(adapter="declarative", mapping="x.yaml", base_url="http://vendor.test",
                              retries={"max_attempts": 1})
    cls = make_class("books", MappingSpec.model_validate({"mapping": 1, "operations": spec}))
    return cls("books", settings, VendorClient("books", settings, transport)), transport


def _call(adapter, route: str, call) -> Any:
    import asyncio

    async def run():
        await adapter.startup()
        try:
            return await adapter.handler(route)(call)
        finally:
            await adapter.shutdown()

    return asyncio.run(run())


def test_a_request_the_mapping_cannot_build_is_never_blamed_on_the_vendor():
    """Before any vendor call: the caller's amount with too many decimals is the caller's 422, located at its field;
    an empty path value is the caller's 422 too (never a call to another vendor endpoint); a rule that cannot run
    is our 500; a null query or header value is left out, never sent as `None`."""
    from adapters.base import AdapterCall
    from adapters.transport.mock import MockAnswer
    from gateway.problems import InternalError, RequestUnprocessable

    spec = {"book": {"call": "POST /books/{shelf}",
                     "request": {"/path/shelf": {"from": "/params/shelf"}, "/query/flag": {"from": "/body/flag"},
                                 "/header/X-Note": {"from": "/body/note"},
                                 "/body/amount": {"from": "/body/total/amount", "convert": {
                                     "decimal_to_minor": {"currency": "/body/total/currency"}}}},
                     "response": {"body": {"/id": {"from": "/id"}}}}}
    adapter, transport = _seam(spec, [MockAnswer(200, b'{"id": "b1"}')])
    body = {"total": {"amount": "12.345", "currency": "EUR"}, "flag": None, "note": None}
    with pytest.raises(RequestUnprocessable) as caught:
        _call(adapter, "book", AdapterCall("book", {"shelf": "s1"}, body))
    assert caught.value.status == 422 and caught.value.violations[0].location == "body"
    assert caught.value.violations[0].pointer == "/total/amount"
    assert "more decimals than its currency" in caught.value.violations[0].message
    with pytest.raises(RequestUnprocessable, match="1 violation"):
        _call(adapter, "book", AdapterCall("book", {"shelf": ""}, {**body, "total": {"amount": "1",
                                                                                     "currency": "EUR"}}))
    assert transport.requests == []  # the vendor was never called
    with pytest.raises(InternalError):  # the mapping's own bug (no value for a path parameter)
        _call(adapter, "book", AdapterCall("book", {}, {**body, "total": {"amount": "1", "currency": "EUR"}}))
    assert transport.requests == []
    done = _call(adapter, "book", AdapterCall("book", {"shelf": "s1"}, {**body, "total": {"amount": "1.5",
                                                                                         "currency": "EUR"}}))
    assert done.body == {"id": "b1"}
    sent = transport.requests[-1]
    assert sent.path == "/books/s1" and "x-note" not in sent.headers  # no ?flag=None, no "None" header


def test_a_template_is_sure_only_when_its_placeholders_are_and_a_missing_one_is_never_blank(compiled, tmp_path):
    """A required Shippo field from a template of an optional public field needs a default; at run time a
    template whose placeholder has no value gives no value (its default, if any), never "" (an empty path segment
    would call another vendor endpoint)."""
    def change(raw):
        raw["operations"]["quote_rates"]["request"]["/body/address_to/street1"] = {
            "template": "{/body/destination/line2}"}

    line = only(problems_of(compiled, tmp_path, change))
    assert "request/~1body~1address_to~1street1: the vendor request field /address_to/street1 is required but its " \
           "source may be absent" in line
    assert build(rules({"/m": {"template": "order={/o}"}}), {}) == {}
    assert build(rules({"/m": {"template": "order={/o}"}}), {"o": None}) == {}
    assert build(rules({"/m": {"template": "order={/o}", "default": "none"}}), {}) == {"m": "none"}
    assert build(rules({"/m": {"template": "{/a}-{/b}"}}), {"a": True, "b": 2}) == {"m": "true-2"}


def test_a_request_list_is_checked_item_by_item(compiled, tmp_path):
    """A request `each`: its item rules are checked against the vendor list's items (a field Shippo's parcel does
    not have is refused), and the item's required fields must be written."""
    def change(raw):
        rules = raw["operations"]["quote_rates"]["request"]
        for target in [t for t in rules if t.startswith("/body/parcels/")]:
            del rules[target]
        rules["/body/parcels"] = {"each": "/body/destination/name", "fields": {"/weight_kilos": {"from": "/x"}}}

    found = problems_of(compiled, tmp_path, change)
    assert any("request/~1body~1parcels/fields/~1weight_kilos: /weight_kilos is not in the vendor request's list "
               "items" in line and f"vendor {VENDOR}#/components/schemas/ParcelCreateRequest" in line
               for line in found), found
    assert any("request/~1body~1parcels/fields: the vendor request item field /mass_unit is required and no rule "
               "writes it" in line for line in found), found
    assert any("`each` needs a list, /body/destination/name is not one" in line for line in found), found


@pytest.mark.parametrize(("change", "where", "says"), [
    (lambda raw: raw["operations"]["track_shipment"]["response"]["body"]["/status"].update(default="weird"),
     "response/body/~1status/default", "the mapping gives ['weird'], outside the target's enum"),
    (lambda raw: raw["operations"]["track_shipment"]["response"]["body"].update(
        {"/status": {"from": "/tracking_status/status_details", "default": "unknown"}}),
     "response/body/~1status", "/tracking_status/status_details may be any value; the target's enum takes only"),
    (lambda raw: raw["operations"]["quote_rates"]["request"].update(
        {"/body/parcels/0/weight": {"from": "/body/parcel", "convert": {"to": "string"}}}),
     "request/~1body~1parcels~10~1weight", "/body/parcel is object"),
    (lambda raw: raw["operations"]["quote_rates"]["request"]["/body/extra/insurance/amount"].update(
        convert={"minor_to_decimal": {"currency": "/body/parcel/weight_grams"}}),
     "request/~1body~1extra~1insurance~1amount/convert/minor_to_decimal/currency",
     "/body/parcel/weight_grams is integer: a currency code is a string"),
    (lambda raw: raw["operations"]["quote_rates"]["request"]["/body/extra/insurance/amount"].update(
        convert={"minor_to_decimal": {"currency": "/body/destination/region"}}),
     "request/~1body~1extra~1insurance~1amount/convert/minor_to_decimal/currency",
     "/body/destination/region may be absent where /body/declared_value/amount is there"),
], ids=["default-outside-enum", "open-string-into-enum", "to-string-from-object", "currency-not-a-string",
        "currency-may-be-absent"])
def test_enum_and_converter_gaps_are_refused_where_they_are_written(compiled, tmp_path, change, where, says):
    line = only(problems_of(compiled, tmp_path, change))
    assert "shippo.mapping.yaml#/operations/" in line and f"/{where}: " in line and says in line, line


async def test_the_owner_in_shippo_metadata_reads_back_whole_and_one_too_long_is_refused_before_buying(tmp_path):
    """`order=<id>;owner=<owner>`: an owner with `;` and `=` (a claim value, an external client id) reads back
    whole, so ownership holds; Shippo keeps 100 characters, so an owner of up to 71 fits with the longest order id,
    and a longer one is refused by the vendor contract's check before the request is sent (no label bought)."""
    from adapters.base import AdapterCall
    from adapters.client import VendorClient
    from adapters.declarative.adapter import make_class
    from adapters.transport.mock import ASGITransport
    from gateway.problems import GatewayError
    from gateway.settings import VendorSettings
    from gateway.vendorcontracts import ContractCheck, DriftLog, load_vendor_contract
    from sandboxes.shippo import API_TOKEN, create_sandbox

    sandbox = create_sandbox()
    settings = VendorSettings(adapter="declarative", mapping=str(MAPPING), base_url="http://vendor.test",
                              credentials={"api_token": API_TOKEN}, retries={"max_attempts": 1})
    client = VendorClient("shippo", settings, ASGITransport(sandbox))
    client.contract = ContractCheck(load_vendor_contract("shippo", ROOT / VENDOR), "enforce",
                                    DriftLog(tmp_path / "drift.sqlite"))
    adapter = make_class("shippo", load_mapping(MAPPING))("shippo", settings, client)
    await adapter.startup()
    body = {"order_id": "ord_999999999999", "destination": {"name": "Ana", "line1": "Rua Augusta 10",
                                                              "city": "Lisboa", "postal_code": "1100-053",
                                                              "country": "PT"},
            "parcel": {"weight_grams": 2500, "length_cm": 40, "width_cm": 30, "height_cm": 20}}
    rate = (await adapter.handler("quote_rates")(AdapterCall("quoteShippingRates", {}, body))).body["rates"][0]
    for owner in ("tenant;order=ord_1", "a=b;c", "x" * 71):
        made = await adapter.handler("create_shipment")(AdapterCall("createShipment", {}, {
            "order_id": "ord_999999999999", "rate_id": rate["id"]}, owner=owner))
        assert made.owner == owner and made.body["order_id"] == "ord_999999999999"
        read = await adapter.handler("get_shipment")(AdapterCall("getShipment", {"shipment_id": made.body["id"]}))
        assert read.owner == owner
    bought = sandbox.state.effects["labels_bought"]
    with pytest.raises(GatewayError) as refused:
        await adapter.handler("create_shipment")(AdapterCall("createShipment", {}, {
            "order_id": "ord_999999999999", "rate_id": rate["id"]}, owner="x" * 72))
    # our mapping's limit, not the caller's fault nor the vendor's: a 500 that says where, never a label bought
    assert refused.value.status == 500 and "/metadata: value is longer than 100 characters" in refused.value.detail
    assert sandbox.state.effects["labels_bought"] == bought
    await adapter.shutdown()


def test_gateway_check_refuses_an_ownership_reference_it_cannot_enforce(tmp_path):
    """x-gateway.ownership.references: to an operation that does not exist, that is not an owned read, or from a
    field the request body does not have, each located at the reference."""
    from tests.jobsupport import contracts_with

    refs = [{"field": "order_id", "operation": "orders.v2.getOrdr"},
            {"field": "order_id", "operation": "shipping.v1.trackShipment"},
            {"field": "cart_id", "operation": "orders.v2.getOrder"}]
    contracts = contracts_with(tmp_path, {"shipping.v1/createShipment": {"ownership": {"references": refs}}})
    settings = load_settings(ROOT / "gateway.yaml", {"auth.builtin.keys_dir": str(TEST_KEYS),
                                                     "contracts": [str(contracts)], "contracts_cache": None})
    _, operations, problems = check(settings)
    lines = [str(p) for p in problems]
    assert operations == [] and len(lines) == 3, lines
    where = "shipping.v1.yaml#/paths/~1shipments/post/x-gateway/ownership/references"
    assert f"{where}/0: ownership reference: operation orders.v2.getOrdr does not exist" in lines[0]
    assert f"{where}/1: ownership reference: shipping.v1.trackShipment is not an owned read (GET) operation" \
        in lines[1]
    assert f"{where}/2: ownership reference: the request body has no field 'cart_id'" in lines[2]
