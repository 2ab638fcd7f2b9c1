"""Orders v2 is mapped onto the v1 model the commerce adapter speaks, and back, without losing a cent."""

from __future__ import annotations

import pytest

from adapters.base import AdapterCall, AdapterResult
from gateway.mappings import load_mapping
from gateway.mappings.orders_v2 import from_canonical, to_canonical, to_decimal, to_minor

V1_ORDER = {"id": "ord_7", "status": "processing", "currency": "EUR", "total": "39.98", "external_ref": "A-1",
            "items": [{"sku": "SKU-123", "quantity": 2, "unit_price": "19.99", "name": "Mug"}],
            "customer": {"email": "a@example.com"}, "created_at": "2026-11-22T10:00:00Z"}


@pytest.mark.parametrize("decimal, currency, minor", [
    ("19.99", "EUR", 1999), ("0.10", "USD", 10), ("1500", "JPY", 1500), ("1.234", "KWD", 1234), ("0", "EUR", 0),
    ("1.2345", "CLF", 12345), ("2.5000", "UYW", 25000),  # the 4-decimal funds codes (gateway/currencies.py)
])
def test_money_round_trips_exactly(decimal, currency, minor):
    """Decimal strings and minor units convert both ways with no float rounding."""
    assert to_minor(decimal, currency) == minor
    assert to_minor(to_decimal(minor, currency), currency) == minor


def test_v1_answer_becomes_v2():
    """Money becomes {amount, currency}, processing becomes confirmed, external_ref disappears."""
    result = from_canonical("getOrder", AdapterResult(200, dict(V1_ORDER)))
    assert result.body["total"] == {"amount": 3998, "currency": "EUR"}
    assert result.body["items"][0]["unit_amount"] == 1999 and "unit_price" not in result.body["items"][0]
    assert result.body["status"] == "confirmed"
    assert "external_ref" not in result.body


def test_list_maps_every_order_and_the_status_filter():
    """The status filter is translated on the way in, every listed order on the way out."""
    call = to_canonical("listOrders", AdapterCall("listOrders", {"status": ["confirmed", "held", "pending"]}))
    assert call.params["status"] == ["processing", "on_hold", "pending"]
    page = from_canonical("listOrders", AdapterResult(200, {"data": [dict(V1_ORDER)], "next_cursor": None}))
    assert page.body["data"][0]["status"] == "confirmed"


def test_v2_unit_amounts_become_v1_decimal_prices_in_the_order_currency():
    """A line's unit_amount in minor units becomes the v1 decimal unit_price of the order's currency."""
    body = {"currency": "JPY", "items": [{"sku": "SKU-1", "quantity": 1, "unit_amount": 500},
                                         {"sku": "SKU-2", "quantity": 2}]}
    mapped = to_canonical("createOrder", AdapterCall("createOrder", {}, body))
    assert mapped.body["items"] == [{"sku": "SKU-1", "quantity": 1, "unit_price": "500"},
                                    {"sku": "SKU-2", "quantity": 2}]


def test_problems_pass_through_unchanged():
    """An error answer is not reshaped."""
    result = AdapterResult(404, {"detail": "x"})
    assert from_canonical("getOrder", result) is result


def test_unknown_mapping_is_refused():
    """A contract naming a mapping that does not exist cannot load it."""
    with pytest.raises(LookupError):
        load_mapping("orders_v9")
