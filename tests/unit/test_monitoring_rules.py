"""`gateway slo rules` and `gateway slo dashboard` produce what Prometheus and Grafana accept, and the burn-rate
alerts fire when the SRE workbook says they should.

Validated with promtool (from Debian's `prometheus` package: the .deb is downloaded with `apt-get download` and only
promtool is unpacked, so nothing is installed or started; ~2 s). Where that is impossible the files are checked
against a schema of Prometheus rule files instead, and the test says which check ran.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import jsonschema
import yaml

from gateway.cli import main
from gateway.monitoring.promrules import dashboard, rule_groups, rules_document
from gateway.monitoring.slo import objectives
from gateway.observability import metrics
from gateway.runtime import check
from tests.conftest import ROOT, UNREACHABLE, demo_settings

SANDBOXES = UNREACHABLE
CACHE = Path(tempfile.gettempdir()) / "cg-promtool"
GET_ORDER = {"api": "orders", "version": "v2", "operation": "getOrder"}

RULES_SCHEMA = {  # Prometheus rule files (https://prometheus.io/docs/prometheus/latest/configuration/recording_rules/)
    "type": "object", "required": ["groups"], "additionalProperties": False,
    "properties": {"groups": {"type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["name", "rules"], "additionalProperties": False,
        "properties": {"name": {"type": "string"}, "interval": {"type": "string", "pattern": "^[0-9]+[smhd]$"},
                       "rules": {"type": "array", "items": {"oneOf": [
                           {"type": "object", "required": ["record", "expr"], "additionalProperties": False,
                            "properties": {"record": {"type": "string", "pattern": "^[a-zA-Z_:][a-zA-Z0-9_:]*$"},
                                           "expr": {"type": "string"}, "labels": {"$ref": "#/$defs/labels"}}},
                           {"type": "object", "required": ["alert", "expr"], "additionalProperties": False,
                            "properties": {"alert": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"},
                                           "expr": {"type": "string"}, "for": {"type": "string"},
                                           "labels": {"$ref": "#/$defs/labels"},
                                           "annotations": {"$ref": "#/$defs/labels"}}}]}}}}}},
    "$defs": {"labels": {"type": "object", "additionalProperties": {"type": "string"},
                         "propertyNames": {"pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"}}},
}
DASHBOARD_SCHEMA = {  # what Grafana needs of a dashboard to import it (a subset of its dashboard JSON model)
    "type": "object", "required": ["title", "uid", "schemaVersion", "panels", "templating"],
    "properties": {"title": {"type": "string"}, "uid": {"type": "string", "maxLength": 40},
                   "schemaVersion": {"type": "integer", "minimum": 36},
                   "templating": {"type": "object", "required": ["list"]},
                   "panels": {"type": "array", "minItems": 1, "items": {
                       "type": "object", "required": ["id", "type", "title", "gridPos", "targets", "datasource"],
                       "properties": {"id": {"type": "integer"}, "type": {"enum": ["stat", "timeseries"]},
                                      "gridPos": {"type": "object", "required": ["h", "w", "x", "y"],
                                                  "properties": {k: {"type": "integer", "minimum": 0}
                                                                 for k in "hwxy"}},
                                      "targets": {"type": "array", "minItems": 1, "items": {
                                          "type": "object", "required": ["refId", "expr"]}}}}}},
}


def promtool() -> str | None:
    """promtool on PATH, or unpacked from Debian's prometheus package (downloaded, not installed)."""
    if found := shutil.which("promtool"):
        return found
    binary = CACHE / "usr" / "bin" / "promtool"
    if binary.exists():
        return str(binary)
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        return None
    CACHE.mkdir(parents=True, exist_ok=True)
    got = subprocess.run(["apt-get", "download", "-q", "prometheus"], cwd=CACHE, capture_output=True, timeout=180)
    debs = sorted(CACHE.glob("prometheus_*.deb"))
    if got.returncode != 0 or not debs:
        return None
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(debs[-1])], capture_output=True, timeout=60)
    subprocess.run(["tar", "-x", "./usr/bin/promtool"], input=tar.stdout, cwd=CACHE, timeout=60, check=True)
    for deb in debs:
        deb.unlink()
    return str(binary) if binary.exists() else None


def demo_objectives():
    _, operations, problems = check(demo_settings(SANDBOXES))
    assert problems == []
    return objectives(operations)


def metric_names() -> set[str]:
    names = set()
    for metric in metrics.REGISTRY.collect():
        names |= {metric.name, metric.name + "_total", metric.name + "_bucket", metric.name + "_count"}
    return names


def schema_check_rules(doc: dict) -> None:
    """The fallback: the file's shape, balanced expressions, and only metrics the gateway exports."""
    jsonschema.validate(doc, RULES_SCHEMA)
    known, recorded = metric_names(), {r["record"] for g in doc["groups"] for r in g["rules"] if "record" in r}
    for group in doc["groups"]:
        for rule in group["rules"]:
            expr = rule["expr"]
            assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), expr
            for name in re.findall(r"\b(gateway[a-z_:]*)\{", expr):
                assert name in known or name in recorded, f"{name} is neither exported nor recorded"


def test_generated_rules_are_valid_and_the_burn_rate_alert_fires_as_the_sre_workbook_says(tmp_path):
    """One rule file from the demo contracts; then, in promtool's own rule tests, half of getOrder's answers become
    5xx at minute 60: ten minutes later both paging pairs fire (1h/5m and 6h/30m), and not before."""
    objs = demo_objectives()
    path = tmp_path / "slo-rules.yaml"
    assert main(["slo", "rules", "--config", str(ROOT / "gateway.yaml"), "-o", str(path)]) == 0
    text = path.read_text()
    assert text == rules_document(objs)
    doc = yaml.safe_load(text)
    assert {r.get("alert") for g in doc["groups"] for r in g["rules"]} == {None, "GatewaySLOBurnRate"}
    tool = promtool()
    if tool is None:
        schema_check_rules(doc)
        print("promtool could not be had: the rules were checked against the rule-file schema instead")
        return
    checked = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and "SUCCESS: 56 rules found" in checked.stdout + checked.stderr, \
        checked.stdout + checked.stderr
    labels = {**GET_ORDER, "slo": "availability", "severity": "page", "gateway_operation": "orders.v2.getOrder"}
    series = "gateway_requests_total{{api=\"orders\",version=\"v2\",operation=\"getOrder\",status_class=\"{}\"," \
             "client=\"demo-partner\"}}"
    unit = {"rule_files": [str(path)], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [{"series": series.format("2xx"), "values": "0+100x120"},
                         {"series": series.format("5xx"), "values": "0x60 100+100x60"}],
        "alert_rule_test": [
            {"eval_time": "55m", "alertname": "GatewaySLOBurnRate", "exp_alerts": []},
            {"eval_time": "70m", "alertname": "GatewaySLOBurnRate", "exp_alerts": [
                {"exp_labels": {**labels, "window": "1h/5m"}, "exp_annotations": annotations(objs, "1h", "5m")},
                {"exp_labels": {**labels, "window": "6h/30m"}, "exp_annotations": annotations(objs, "6h", "30m")},
            ]}]}]}
    (tmp_path / "burn-test.yaml").write_text(yaml.safe_dump(unit, sort_keys=False))
    tested = subprocess.run([tool, "test", "rules", str(tmp_path / "burn-test.yaml")], capture_output=True,
                            text=True, timeout=60)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def annotations(objs, long: str, short: str) -> dict:
    """The alert's annotations (no value in them: when promtool evaluates a group depends on its file's path)."""
    rule = next(r for g in rule_groups(objs) for r in g["rules"] if r.get("alert") and r["labels"]["window"] ==
                f"{long}/{short}" and r["labels"]["gateway_operation"] == "orders.v2.getOrder"
                and r["labels"]["slo"] == "availability")
    return rule["annotations"]


def test_generated_dashboard_is_a_grafana_dashboard_whose_queries_prometheus_parses(tmp_path):
    objs = demo_objectives()
    out = tmp_path / "dashboard.json"
    assert main(["slo", "dashboard", "--config", str(ROOT / "gateway.yaml"), "-o", str(out)]) == 0
    board = json.loads(out.read_text())
    assert board == json.loads(json.dumps(dashboard(objs)))
    jsonschema.validate(board, DASHBOARD_SCHEMA)
    assert len(board["panels"]) == 3 * len(objs) and len({p["id"] for p in board["panels"]}) == len(board["panels"])
    exprs = [t["expr"] for p in board["panels"] for t in p["targets"]]
    rules = {"groups": [{"name": "dashboard-queries", "rules": [
        {"record": f"dashboard_query_{i}", "expr": e} for i, e in enumerate(exprs)]}]}
    tool = promtool()
    if tool is None:
        schema_check_rules({"groups": [*rule_groups(objs), *rules["groups"]]})
        return
    path = tmp_path / "queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    checked = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
