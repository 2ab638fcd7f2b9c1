"""Helpers for the asynchronous-work tests: contracts with fast retry schedules, config files, polling."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import yaml

from gateway.settings import apply_overrides
from tests.conftest import ROOT, TEST_KEYS
from tests.services import stop_process

ORDER = {"currency": "EUR", "customer": {"email": "ana@example.com", "first_name": "Ana", "last_name": "Lima"},
         "items": [{"sku": "SKU-123", "quantity": 2}],
         "shipping_address": {"line1": "Rua Augusta 10", "city": "Lisboa", "postal_code": "1100-053",
                              "country": "PT"}}
PAYMENT = {"order_id": "ord_7", "amount": 2500, "currency": "EUR", "capture_method": "automatic",
           "payment_method": "pm_card_visa"}
ASYNC = {"prefer": "respond-async"}
FAST = {"backoff_base_s": 0.05, "backoff_cap_s": 0.3}


def contracts_with(tmp: Path, patches: dict[str, dict[str, Any]]) -> Path:
    """A copy of contracts/ where each `file/operationId` in `patches` (e.g. `orders.v2/createOrder`) gets its
    `x-gateway` keys replaced or merged.

    A key set to None is removed (e.g. `limits: None`, so a test can submit hundreds of jobs quickly).
    """
    target = tmp / "contracts"
    shutil.copytree(ROOT / "contracts", target)
    for path in target.glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        changed = False
        for item in (doc.get("paths") or {}).values():
            for op in item.values():
                name = f"{path.stem}/{op.get('operationId')}" if isinstance(op, dict) else None
                if name in patches:
                    ext = op.setdefault("x-gateway", {})
                    for key, value in patches[name].items():
                        if value is None:
                            ext.pop(key, None)
                        elif isinstance(value, dict) and isinstance(ext.get(key), dict):
                            ext[key] = {**ext[key], **value}
                        else:
                            ext[key] = value
                    changed = True
        if changed:
            path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return target


def anchor_vendor_files(raw: dict[str, Any]) -> dict[str, Any]:
    """A copy of gateway.yaml written elsewhere still finds each declarative vendor's mapping and contract (paths in
    gateway.yaml are relative to the file, as `contracts` is)."""
    for name, vendor in (raw.get("vendors") or {}).items():
        if vendor.get("adapter") != "declarative":
            continue
        if not Path(vendor["mapping"]).is_absolute():
            vendor["mapping"] = str(ROOT / vendor["mapping"])
        contract = vendor.setdefault("contract", {})
        contract["file"] = str(ROOT / contract["file"]) if contract.get("file") else \
            str(ROOT / "contracts" / "vendors" / f"{name}.yaml")
    return raw


def config_file(tmp: Path, overrides: dict[str, Any]) -> Path:
    """gateway.yaml with dotted-key overrides, written to `tmp` (for `gateway worker` / `gateway dlq` processes)."""
    raw = yaml.safe_load((ROOT / "gateway.yaml").read_text())
    apply_overrides(raw, {"contracts": [str(ROOT / "contracts")], "auth.builtin.keys_dir": str(TEST_KEYS),
                          "monitoring.reconcile": [str(ROOT / "reconcile")],
                          "monitoring.synthetic": [str(ROOT / "synthetic")], **overrides})
    anchor_vendor_files(raw)
    path = tmp / f"gateway-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 30.0, every_s: float = 0.05) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(every_s)


def settle(client: httpx.Client, location: str, timeout_s: float = 30.0) -> dict[str, Any]:
    """Follow a status resource until the operation is finished (succeeded or dead)."""
    def done() -> dict[str, Any] | None:
        doc = client.get(location).json()
        return doc if doc.get("state") in ("succeeded", "dead") else None

    return wait_for(f"{location} to finish", done, timeout_s)


def sandbox_stats(url: str) -> dict[str, Any]:
    return httpx.get(url + "/_sandbox/stats").json()


def fault(url: str, *rules: dict[str, Any]) -> None:
    httpx.put(url + "/_sandbox/faults", json=list(rules)).raise_for_status()


def clear_faults(url: str) -> None:
    httpx.delete(url + "/_sandbox/faults").raise_for_status()


def jobs_in(dsn: str) -> dict[str, tuple[str, int]]:
    with psycopg.connect(dsn) as conn:
        return {r[0]: (r[1], r[2]) for r in conn.execute("SELECT id, state, attempts FROM cg_jobs")}


class Worker:
    """A `gateway worker` process; its log is kept to show which jobs it ran."""

    def __init__(self, config: Path, concurrency: int = 4, wait: bool = True) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway", "worker", "--config", str(config), "--concurrency", str(concurrency)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "GATEWAY_LOG_LEVEL": "INFO"})
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        if not self.ready.wait(60):
            self.proc.kill()
            raise AssertionError("gateway worker did not start:\n" + "".join(self.lines))

    @property
    def owner(self) -> str:
        """The worker's lease owner id (from its start-up line)."""
        return next(line.split()[1] for line in self.lines if line.startswith("worker "))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith("worker ") and " running " in line:
                self.ready.set()

    def ran(self) -> int:
        """Jobs this worker finished, from its JSON log lines (one per attempt, with the outcome)."""
        events = [json.loads(line) for line in self.lines if line.startswith("{")]
        return sum(e.get("outcome") == "succeeded" and "job_id" in e for e in events)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        stop_process(self.proc, reader=self.reader)
