"""What is declared for monitoring is checked before the gateway serves: every mistake at once, with its file and
JSON pointer; and business calendars answer "when may held work run" correctly across weekends, closures and DST."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import yaml

from gateway.monitoring.calendar import BusinessCalendar
from gateway.monitoring.models import CalendarSpec
from gateway.runtime import check
from tests.conftest import ROOT, UNREACHABLE, VENDORS, demo_settings
from tests.jobsupport import config_file, contracts_with

SANDBOXES = UNREACHABLE


def problems_for(tmp_path, patches, rules=None, paths=None):
    contracts = contracts_with(tmp_path, patches)
    overrides = {"contracts": [str(contracts)]}
    if rules is not None:
        (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
        overrides["monitoring.reconcile"] = [str(tmp_path / "rules.yaml")]
    if paths is not None:
        (tmp_path / "paths.yaml").write_text(yaml.safe_dump(paths))
        overrides["monitoring.synthetic"] = [str(tmp_path / "paths.yaml")]
    _, operations, problems = check(demo_settings(SANDBOXES, **overrides))
    assert operations == []  # nothing is served while anything is wrong
    return sorted(str(p) for p in problems)


def test_the_demo_declarations_are_valid():
    """The shipped rules, golden path, objectives and calendars pass the start-up checks."""
    _, operations, problems = check(demo_settings(SANDBOXES))
    assert problems == [] and operations


def test_impossible_or_unmeasurable_objectives_are_refused_where_they_are_written(tmp_path):
    found = problems_for(tmp_path, {
        "orders.v2/getOrder": {"slo": {"availability": 100, "latency_ms": {"p": 95, "under": 300}}},
        "orders.v2/listOrders": {"slo": {"freshness": {"within_s": 60}}},
        "orders.v2/createOrder": {"slo": {"freshness": {"p": 99, "within_s": 45}}},
    })
    where = "orders.v2.yaml#/paths/~1orders~1{order_id}/get/x-gateway/slo"
    assert any(p.endswith(f"{where}/availability: an objective of 100 % leaves no error budget: every bad event "
                          "would break it, so no alert can come before it is broken; use e.g. 99.9") for p in found)
    assert any(f"{where}/latency_ms/under: 300 ms is not a bucket bound" in p and "use one of 1, 2.5, 5, 10, 25, "
               "50, 100, 250, 500, 1000" in p for p in found), found
    assert any("/paths/~1orders/get/x-gateway/slo/freshness: freshness applies to asynchronous operations" in p
               for p in found)
    assert any("/paths/~1orders/post/x-gateway/slo/freshness/within_s: 45 s is not a bucket bound" in p
               for p in found)
    # Shapes are the contract lint's (they stop the start-up before anything is compiled).
    (tmp_path / "shapes").mkdir()
    shapes = problems_for(tmp_path / "shapes", {"orders.v2/cancelOrder": {"slo": {"availability": 150}},
                                                "orders.v2/updateOrder": {"slo": {"window_days": 7}}})
    assert any("cancel/post/x-gateway/slo/availability: x-gateway: Input should be less than or equal to 100" in p
               for p in shapes), shapes
    assert any("~1orders~1{order_id}/patch/x-gateway/slo: x-gateway: Value error, declare at least one objective"
               in p for p in shapes), shapes


def test_rules_and_golden_paths_naming_what_does_not_exist_are_refused(tmp_path):
    rules = {"rules": {
        "wrong-op": {"description": "x", "left": {"source": "woocommerce.reconcile_order", "key": "id"},
                     "right": {"source": "stripe.list_payments", "key": "order_id"}},
        "wrong-vendor": {"description": "x", "left": {"source": "shopify.list_orders", "key": "id"},
                         "right": {"lookup": "hubspot.find_customers", "key": "email"}, "both_ways": True},
        "bad-shape": {"description": "x", "left": {"lookup": "hubspot.find_customers", "key": "id"},
                      "right": {"source": "stripe.list_payments", "lookup": "hubspot.find_customers", "key": "x"},
                      "every": "sometimes", "calendar": "nowhere"},
    }}
    paths = {"paths": {"p": {"description": "x", "steps": [
        {"name": "a", "operation": "orders.v9.createOrder"},
        {"name": "b", "operation": "orders.v2.getOrder", "params": {}},
    ]}}}
    found = problems_for(tmp_path, {"orders.v2/createOrder": {"volume": {"recorded": "count_everything"},
                                                              "calendar": "payments-desk"}},
                         rules=rules, paths=paths)
    text = "\n".join(found)
    assert "rules.yaml#/rules/wrong-op/left/source: adapter 'woocommerce' has no operation 'reconcile_order' " \
           "(it has: " in text
    assert f"rules.yaml#/rules/wrong-vendor/left/source: unknown vendor 'shopify' (vendors: {', '.join(VENDORS)})" \
        in text
    assert "rules.yaml#/rules/wrong-vendor/both_ways: both_ways needs a right side that lists" in text
    assert "rules.yaml#/rules/bad-shape/right: Value error, give exactly one of source" in text
    assert "rules.yaml#/rules/bad-shape/every: Value error, 'sometimes' is not a duration" in text
    assert "paths.yaml#/paths/p/steps/0/operation: unknown operation 'orders.v9.createOrder' (did you mean " \
           "orders.v1.createOrder, orders.v2.createOrder?)" in text
    assert "paths.yaml#/paths/p/steps/1/params: orders.v2.getOrder needs the path parameter 'order_id'" in text
    assert "/paths/~1orders/post/x-gateway/volume/recorded: adapter 'woocommerce' has no operation " \
           "'count_everything'" in text
    assert "/paths/~1orders/post/x-gateway/calendar: calendar 'payments-desk' is not declared at this contract's " \
           "root (x-gateway.calendars: none)" in text


def test_gateway_check_prints_the_located_problems_and_fails(tmp_path):
    """The command line, as a person meets it: one line per problem, exit status 1, no traceback."""
    (tmp_path / "rules.yaml").write_text("rules:\n  r:\n    description: x\n    left: {source: stripe.nope, key: id}\n"
                                         "    right: {source: stripe.list_payments, key: id}\n")
    cfg = config_file(tmp_path, {"monitoring.reconcile": [str(tmp_path / "rules.yaml")],
                                 "monitoring.synthetic": [str(tmp_path / "golden")]})
    run = subprocess.run([sys.executable, "-m", "gateway", "check", "--config", str(cfg)], capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 1 and "Traceback" not in run.stderr + run.stdout
    assert "rules.yaml#/rules/r/left/source: adapter 'stripe' has no operation 'nope'" in run.stdout + run.stderr
    assert "gateway.yaml#/monitoring/synthetic/0: " in run.stdout + run.stderr and "golden does not exist" in \
        run.stdout + run.stderr  # a typo in a path does not silently turn golden paths off


def ts(zone: str, *when: int) -> float:
    return datetime(*when, tzinfo=ZoneInfo(zone)).timestamp()


def test_business_calendars_find_the_next_opening():
    """Weekends, evenings, holidays, the month-end close and a DST change, in the calendar's own time zone."""
    desk = BusinessCalendar("desk", CalendarSpec(timezone="Europe/Lisbon", hours=["08:00-12:00", "13:00-18:00"],
                                                 closed=["2026-12-25"], month_end_close_days=2))
    lisbon = "Europe/Lisbon"
    assert desk.is_open(ts(lisbon, 2026, 12, 2, 9, 30))  # a Wednesday morning
    assert desk.next_open(ts(lisbon, 2026, 12, 2, 12, 15)) == ts(lisbon, 2026, 12, 2, 13, 0)  # lunch
    assert desk.next_open(ts(lisbon, 2026, 12, 4, 18, 0)) == ts(lisbon, 2026, 12, 7, 8, 0)  # Friday 18:00 -> Monday
    assert desk.next_open(ts(lisbon, 2026, 12, 24, 19, 0)) == ts(lisbon, 2026, 12, 28, 8, 0)  # Christmas, weekend
    assert desk.next_open(ts(lisbon, 2026, 11, 27, 19, 0)) == ts(lisbon, 2026, 12, 1, 8, 0)  # 29-30 Nov: close
    assert desk.next_open(ts(lisbon, 2027, 3, 26, 20, 0)) == ts(lisbon, 2027, 3, 29, 8, 0)  # over the DST change
    assert datetime.fromtimestamp(desk.next_open(ts(lisbon, 2027, 3, 26, 20, 0)), UTC).hour == 7  # WEST is UTC+1
    always = BusinessCalendar("always", CalendarSpec(days=["mon", "tue", "wed", "thu", "fri", "sat", "sun"]))
    assert always.next_open(1_800_000_000.5) == 1_800_000_000.5
