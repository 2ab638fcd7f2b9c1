"""Public OpenAPI documents nobody here wrote, served as a new user would: one `x-gateway` block at the root.

For every document in tests/data/corpus (SOURCES.yaml: 3.0, 3.1, multi-file, large, webhooks-only, date-versioned,
Swagger 2.0): `gateway check` gives the recorded verdict; the gateway starts on it; schemathesis sends requests the
served document says are valid (positive mode), which must be accepted and reach the echo upstream, and requests
it says are invalid (negative mode), which must be refused with a 4xx problem; never a 5xx. Nothing is fetched.

Depth: every operation of the small documents; a fixed sample of the large ones' operations (chosen for the shapes
that broke before: deepObject with anyOf, bracketed arrays, oneOf-heavy JSON bodies), CORPUS_EXAMPLES (3) per
operation. Under `make fuzz-deep` (CORPUS_DEEP=1) every operation of every document, FUZZ_EXAMPLES each.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.app import create_app
from gateway.contracts.operations import base_path
from gateway.runtime import check_all
from gateway.settings import load_settings
from tests.conftest import ROOT, ServerThread
from tests.corpus.documents import Document, prepare, sources
from tests.echo import echo_app

DOCUMENTS = sources()
DEEP = os.environ.get("CORPUS_DEEP") == "1"
# A few examples per operation in `make test` (the corpus is about shapes, not depth); FUZZ_EXAMPLES when deep.
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10")) if DEEP else int(os.environ.get("CORPUS_EXAMPLES", "3"))
# The large documents' operations fuzzed in `make test`: query parameters of the shapes that were refused before
# (deepObject with anyOf object|integer, `expand` arrays) and JSON bodies with oneOf/anyOf. Not their form bodies:
# schemathesis writes an array of objects in a form as repeated bare keys (`tax_id_data=type&tax_id_data=value`),
# which no encoding describes; bracket notation is tested in tests/integration/test_real_world_requests.py.
SAMPLE = {
    "stripe-2022-04-12": ["GetCustomers", "GetCharges", "GetInvoices", "GetSubscriptions", "GetPaymentIntents"],
    "discord": ["get_my_user", "list_guild_members", "get_guild", "list_my_guilds", "create_application_command",
                "update_application_emoji"],
}


@pytest.fixture(scope="module")
def upstream():
    server = ServerThread(echo_app, lifespan="off").start()
    yield server.url
    server.stop()


def settings_for(entry: Path, upstream_url: str, tmp: Path) -> Any:
    return load_settings(None, {"contracts": [str(entry)], "response_validation": "report",
                                "vendors": {"upstream": {"adapter": "http", "base_url": upstream_url}},
                                "contracts_cache": str(tmp / "cache"),
                                "observability": {"logging": {"output": "none"}},
                                "jobs": {"sqlite_path": str(tmp / "jobs.db")}})


def public(folder: Path) -> None:
    """The document (every file of it) without security requirements, for the fuzzing runs (auth has tests of its
    own): the fuzzer sends no credentials."""
    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if not (k == "security" and isinstance(v, list))}
        return [strip(v) for v in node] if isinstance(node, list) else node

    for file in [*folder.rglob("*.json"), *folder.rglob("*.yaml")]:
        text = file.read_text()
        data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
        file.write_text(json.dumps(strip(data)) if file.suffix == ".json" else yaml.safe_dump(strip(data),
                                                                                               sort_keys=False))


@pytest.mark.parametrize("doc", DOCUMENTS, ids=[d.name for d in DOCUMENTS])
def test_check_verdict_and_start_up(doc: Document, tmp_path: Path, upstream: str):
    """`gateway check` gives the recorded verdict; a servable document starts and answers, a refused one is told
    why with located reasons (and no port opens)."""
    entry = prepare(doc, tmp_path)
    settings = settings_for(entry, upstream, tmp_path)
    _, operations, problems, _ = check_all(settings)
    if doc.verdict == "refused":
        assert problems and all(p.pointer for p in problems), problems
        result = subprocess.run([sys.executable, "-m", "gateway", "check", str(entry)], capture_output=True,
                                text=True, timeout=60, cwd=tmp_path)
        assert result.returncode == 1 and "Traceback" not in result.stdout + result.stderr
        assert "Swagger 2.0" in result.stdout and "swagger2openapi" in result.stdout
        return
    assert problems == [], [str(p) for p in problems]
    server = ServerThread(create_app(settings)).start()
    try:
        assert httpx.get(server.url + "/healthz", timeout=10).status_code == 200
        ready = httpx.get(server.url + "/readyz", timeout=10)
        # A webhooks-only document has no operation to serve: the gateway starts, and says it is not ready.
        assert ready.status_code == (200 if operations else 503), ready.text
        served = httpx.get(f"{server.url}/docs", timeout=10)
        assert served.status_code == 200
    finally:
        server.stop()


def _sample(doc: Document) -> list[str]:
    if DEEP or doc.name not in SAMPLE:
        return []
    return [arg for op in SAMPLE[doc.name] for arg in ("--include-operation-id", op)]


FUZZED = [d for d in DOCUMENTS if d.verdict == "ok" and not d.name.startswith("stripe-2022-04-07")]


@pytest.mark.fuzz
@pytest.mark.parametrize("doc", FUZZED, ids=[d.name for d in FUZZED])
def test_valid_requests_accepted_invalid_refused_never_5xx(doc: Document, tmp_path: Path, upstream: str):
    """schemathesis against the served document: valid requests reach the upstream, invalid ones get a 4xx."""
    entry = prepare(doc, tmp_path)
    public(tmp_path / doc.name)
    settings = settings_for(entry, upstream, tmp_path)
    app = create_app(settings)
    server = ServerThread(app).start()
    try:
        contract = app.runtime.contracts[0]
        if not app.runtime.operations:
            return  # webhooks only: nothing to request; start-up is tested above
        api, version = app.runtime.operations[0].api, app.runtime.operations[0].version
        # No negative run on paths with form or multipart bodies: their fields are text, so the integer 5 a fuzzer
        # means as "the wrong type" arrives as the string "5", a valid string, and is rightly accepted.
        text_bodies = sorted({op.path for op in app.runtime.operations if op.body is not None and any(
            kind in ("form", "multipart") for kind, _, _ in op.body.media.values())})
        exclude = ["--exclude-path-regex", "^(" + "|".join(re.escape(p) for p in text_bodies) + ")$"] \
            if text_bodies else []
        url = f"{server.url}/contracts/{api}/{version}/openapi.json"
        modes = [("positive", "not_a_server_error,positive_data_acceptance"),
                 ("negative", "not_a_server_error,negative_data_rejection")]
        if doc.large and not DEEP:
            modes = modes[:1]  # their sample is about shapes that were refused; refusals are fuzzed when deep
        for mode, checks in modes:
            cmd = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "run", url,
                   "--url", server.url + base_path(contract.data), "--checks", checks, "--mode", mode,
                   "--max-examples", str(EXAMPLES), "--seed", "20261204", "--phases", "examples,fuzzing",
                   "--workers", "2", "--suppress-health-check", "all", "--request-timeout", "20",
                   "--report", "junit", "--report-dir", str(tmp_path / mode), *_sample(doc),
                   *(exclude if mode == "negative" else [])]
            env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.corpus.hooks", "NO_COLOR": "1",
                   "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH"))))}
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
            # Operations without inputs: no request to them can be invalid, so nothing is generated.
            nothing_invalid = mode == "negative" and "No test cases were generated" in result.stdout \
                and "FAILURES" not in result.stdout
            assert result.returncode == 0 or nothing_invalid, \
                f"{mode}:\n" + result.stdout[-12000:] + result.stderr[-4000:]
    finally:
        server.stop()


CONFIG = Path(__file__).with_name("schemathesis.toml")
