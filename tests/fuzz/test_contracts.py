"""schemathesis fuzzes every contract in contracts/ against the running gateway and its sandbox vendors.

Parametrized over the files themselves: a new contract is fuzzed with no change here. Valid and invalid input
(`--mode all`), every check schemathesis has that applies to a stateless run, with a token holding every scope
(the `ignored_auth` check then proves that the same requests without it are refused). Depth: FUZZ_EXAMPLES per operation
(10 in `make test`; `make fuzz-deep` for more). Failures print schemathesis' own report with a reproducing curl.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.contracts.compile import api_identity
from gateway.contracts.load import find_contract_files, load_contracts
from gateway.contracts.operations import base_path
from tests.conftest import ROOT, ServerThread, bearer, demo_settings

CONTRACTS, _ = find_contract_files([ROOT / "contracts"])
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))
CONFIG = Path(__file__).with_name("schemathesis.toml")
# Stateful checks need links between operations, which the contracts do not declare (yet); the rest all run.
EXCLUDED_CHECKS = "use_after_free,ensure_resource_availability"

pytestmark = pytest.mark.fuzz


@pytest.fixture(scope="module")
def gateway(sandboxes):
    # HubSpot's real 100-calls-per-10-s limit would turn deep fuzzing into (correct) 503s: lift it for the fuzzer.
    httpx.post(sandboxes.urls["hubspot"] + "/_sandbox/reset").raise_for_status()
    httpx.put(sandboxes.urls["hubspot"] + "/_sandbox/settings", json={"burst_limit": 1_000_000}).raise_for_status()
    # Likewise the fuzzing client's own rate limits: every contract is fuzzed by one client against one gateway, and
    # its shared `writes` bucket ran dry by the last contract (a correct 429 where schemathesis expects the 400 of
    # a missing header). Rate limits have tests of their own.
    unlimited = {"rate": "1000000/second", "burst": 1_000_000}
    app = create_app(demo_settings(sandboxes.urls, **{"limits.plans.partner-plus": {
        "requests": unlimited, "writes": unlimited, "daily": {"quota": "1000000000/day"}}}))
    server = ServerThread(app).start()
    yield server.url, bearer(app)["authorization"]
    server.stop()
    httpx.post(sandboxes.urls["hubspot"] + "/_sandbox/reset").raise_for_status()


@pytest.mark.parametrize("contract", CONTRACTS, ids=[c.name for c in CONTRACTS])
def test_contract_survives_fuzzing(contract: Path, gateway: tuple[str, str], tmp_path: Path):
    """Generated valid and invalid requests never get a 5xx the contract does not allow, nor an undeclared answer."""
    gateway_url, authorization = gateway
    [loaded], problems = load_contracts([contract])
    assert not problems
    api, version = api_identity(loaded)
    schema_url = f"{gateway_url}/contracts/{api}/{version}/openapi.json"
    cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run", schema_url,
           "--url", gateway_url + base_path(loaded.data),
           "--checks", "all", "--exclude-checks", EXCLUDED_CHECKS,
           "--mode", "all", "--max-examples", str(EXAMPLES), "--seed", "20261123",
           "--phases", "examples,coverage,fuzzing", "--workers", "1",
           "--suppress-health-check", "all", "--request-timeout", "20",
           "--header", f"Authorization: {authorization}",
           "--report", "junit", "--report-dir", str(tmp_path)]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "", "NO_COLOR": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-12000:] + result.stderr[-4000:]
