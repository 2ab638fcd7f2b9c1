"""The CI gate: a contract may not change in a breaking way within a major version."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
BASELINE = ROOT / ".ci" / "contracts-baseline"


def gate(old: Path, new: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "diff", str(old), str(new)], capture_output=True,
                          text=True, timeout=120)


def test_contracts_have_no_breaking_change_against_the_baseline():
    """contracts/ keeps every promise of the recorded baseline (new major versions are free to differ).

    If this fails: put the breaking change in a new major version (contracts/<api>.v<N+1>.yaml), or, when it is
    deliberate (a retired version, a release), accept it with `make contracts-baseline`.
    """
    result = gate(BASELINE, ROOT / "contracts")
    assert result.returncode == 0, result.stdout + result.stderr


def test_gate_fails_on_a_planted_breaking_change(tmp_path):
    """Removing an operation from a copy of the contracts makes the gate exit 1 and name the pointer."""
    changed = tmp_path / "contracts"
    shutil.copytree(ROOT / "contracts", changed)
    orders = changed / "orders.v1.yaml"
    doc = yaml.safe_load(orders.read_text())
    del doc["paths"]["/orders/{order_id}/cancel"]
    orders.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = gate(ROOT / "contracts", changed)
    assert result.returncode == 1
    assert "operation-removed" in result.stdout
    assert "orders.v1.yaml#/paths/~1orders~1{order_id}~1cancel/post" in result.stdout


def test_gate_accepts_a_compatible_change(tmp_path):
    """Adding an optional query parameter is not breaking: exit 0."""
    changed = tmp_path / "contracts"
    shutil.copytree(ROOT / "contracts", changed)
    orders = changed / "orders.v1.yaml"
    doc = yaml.safe_load(orders.read_text())
    doc["paths"]["/orders"]["get"]["parameters"].append(
        {"name": "channel", "in": "query", "schema": {"type": "string"}})
    orders.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert gate(ROOT / "contracts", changed).returncode == 0
