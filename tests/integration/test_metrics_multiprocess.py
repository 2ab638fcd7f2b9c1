"""`gateway serve --workers 2`: whichever worker answers a scrape, /metrics counts every worker's requests."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, TEST_KEYS
from tests.jobsupport import anchor_vendor_files
from tests.services import stop_process


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def requests_counted(text: str, operation: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "gateway_requests_total" and s.labels.get("operation") == operation)


def test_two_workers_one_set_of_metrics(sandboxes, redis_url, tmp_path):
    config = anchor_vendor_files(yaml.safe_load((ROOT / "gateway.yaml").read_text()))
    config["contracts"] = [str(ROOT / "contracts")]
    config["monitoring"] = {"reconcile": [str(ROOT / "reconcile")], "synthetic": [str(ROOT / "synthetic")]}
    for name, url in sandboxes.urls.items():
        config["vendors"][name]["base_url"] = url
    config["auth"]["builtin"]["keys_dir"] = str(TEST_KEYS)
    config["redis_url"] = redis_url
    config["limits"]["backend"] = "redis"
    config["idempotency"] = {"backend": "redis"}
    config["jobs"] = {"sqlite_path": str(tmp_path / "jobs.db"), "workers": 0}
    config["observability"] = {"logging": {"output": "none"},
                               "metrics": {"multiprocess_dir": str(tmp_path / "metrics")}}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(config))
    port = free_port()
    token = subprocess.run([sys.executable, "-m", "gateway", "token", "--config", str(path), "--client",
                            "demo-partner", "--scopes", "orders:read"], capture_output=True, text=True,
                           check=True, cwd=ROOT).stdout.strip()
    server = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(path), "--workers", "2",
                               "--port", str(port)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        ready = False
        while not ready and time.monotonic() < deadline and server.poll() is None:
            try:
                ready = httpx.get(base + "/readyz", timeout=1).status_code == 200
            except httpx.TransportError:
                time.sleep(0.1)  # polling: the workers are still starting
        assert ready, server.stdout.read().decode() if server.poll() is not None else "not ready in 60 s"
        for _ in range(20):  # a new connection each time, so both workers get some
            r = httpx.get(base + "/v2/orders/ord_999999", headers={"authorization": f"Bearer {token}"}, timeout=10)
            assert r.status_code == 404
        pids = {f.stem.rsplit("_", 1)[-1] for f in (tmp_path / "metrics").glob("*.db")}
        assert len(pids) >= 2, pids  # both workers write their samples
        for _ in range(6):
            assert requests_counted(httpx.get(base + "/metrics").text, "getOrder") == 20
    finally:
        stop_process(server)
