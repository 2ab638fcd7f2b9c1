"""Large real and generated documents: `gateway check`, cold and warm start-up, RSS, `gateway diff`, per-request cost.

Run: .venv/bin/python bench/corpus.py [--port 18080] [--repeat 3]   (make bench-corpus)

Documents: Stripe's 417-operation 3.0 document (tests/data/corpus, pinned) against its previous release, and a
generated 500-operation densely linked one (bench/densedoc.py) against its previous release. Each timing is a whole
command, as a user runs it (a fresh process: imports included), best of --repeat. Start-up is measured from launching
`gateway serve` to its port accepting connections; RSS is read from /proc once it does. Per-request cost is routing
plus request validation of one GET with query parameters, in process, on the demo's benchmark contract
(bench/contract.yaml) and on the 500-operation document: it must not grow with the number of operations.
Targets (issue 15): check and cold start <= 5 s, warm start <= 1 s, RSS <= 250 MB, diff <= 10 s and <= 300 MB.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.densedoc import generate, previous_release, with_route  # noqa: E402

GATEWAY = [sys.executable, "-m", "gateway"]
CORPUS = ROOT / "tests" / "data" / "corpus"


def documents(tmp: Path) -> list[tuple[str, Path, Path]]:
    """(label, folder holding the new release + gateway.yaml, the previous release's file)."""
    out = []
    stripe = tmp / "stripe"
    stripe.mkdir()
    for name, target in (("stripe-2022-04-12", "stripe.json"), ("stripe-2022-04-07", "previous.json")):
        data = json.loads(gzip.decompress((CORPUS / name / "openapi.json.gz").read_bytes()))
        data["x-gateway"] = {"api": "stripe", "route": "upstream.forward"}
        (stripe / target).write_text(json.dumps(data))
    out.append(("Stripe 2022-04-12 (417 operations, 3.0)", stripe / "stripe.json", stripe / "previous.json"))
    dense = tmp / "dense"
    dense.mkdir()
    doc = with_route(generate(500))
    (dense / "dense.json").write_text(json.dumps(doc))
    (dense / "previous.json").write_text(json.dumps(previous_release(doc)))
    out.append(("generated, 500 operations densely linked", dense / "dense.json", dense / "previous.json"))
    small = tmp / "small"
    small.mkdir()
    doc = with_route(generate(12))
    (small / "small.json").write_text(json.dumps(doc))
    (small / "previous.json").write_text(json.dumps(previous_release(doc)))
    out.append(("reference: generated, 12 operations (the process itself)", small / "small.json",
                small / "previous.json"))
    return out


def config(entry: Path, port: int) -> Path:
    path = entry.parent / "gateway.yaml"
    path.write_text(yaml.safe_dump({
        "contracts": [entry.name], "server": {"host": "127.0.0.1", "port": port},
        "vendors": {"upstream": {"adapter": "http", "base_url": "http://127.0.0.1:18999"}},
        "contracts_cache": "cache", "observability": {"logging": {"output": "none"}}}))
    return path


def timed(cmd: list[str], cwd: Path) -> tuple[float, int, int]:
    """(seconds, exit code, peak RSS in MB) of one command, from its own rusage (os.wait4)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return elapsed, proc.returncode, usage.ru_maxrss // 1024


def start_up(cfg: Path, port: int) -> tuple[float, int]:
    """Seconds from launching `gateway serve` to the port accepting connections, and RSS (MB) then."""
    start = time.perf_counter()
    proc = subprocess.Popen([*GATEWAY, "serve", "--config", str(cfg)], cwd=cfg.parent, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = start + 120
        while time.perf_counter() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None:
                raise SystemExit(f"gateway serve exited: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
            time.sleep(0.01)
        elapsed = time.perf_counter() - start
        rss = int(next(line.split()[1] for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                       if line.startswith("VmRSS:"))) // 1024
        return elapsed, rss
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def per_request(tmp: Path) -> list[tuple[str, float]]:
    """µs of routing + request validation for one GET: the demo's contract, and the same GET with query
    parameters on generated documents of 20 and of 500 operations (it must not grow with the operations)."""
    from gateway.context import RequestContext
    from gateway.runtime import Runtime
    from gateway.settings import load_settings

    cases = []
    query = b"created[gte]=1700000000&expand[]=customer&limit=5"
    for size in (20, 500):
        (tmp / f"per{size}.json").write_text(json.dumps(with_route(generate(size))))

    def settings_for(contract: Path, name: str) -> Any:
        return load_settings(None, {"contracts": [str(contract)], "contracts_cache": None,
                                    "vendors": {"upstream": {"adapter": "http", "base_url": "http://127.0.0.1:9"}},
                                    "jobs": {"sqlite_path": str(tmp / f"{name}.db")}})

    for label, settings, path, qs in (
            ("demo contract (bench/contract.yaml), GET /v1/orders/{id}",
             settings_for(ROOT / "bench" / "contract.yaml", "demo"), "/v1/orders/ord_12345678", b""),
            ("20 operations, GET /v1/r3?created[gte]=..&expand[]=..&limit=5", settings_for(tmp / "per20.json", "a"),
             "/v1/r3", query),
            ("500 operations, GET /v1/r3?created[gte]=..&expand[]=..&limit=5", settings_for(tmp / "per500.json", "b"),
             "/v1/r3", query)):
        runtime = Runtime(settings, *_checked(settings), run_workers=False, install_logs=False)
        cases.append((label, runtime, path, qs))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    def once(runtime: Any, path: str, query: bytes) -> None:
        op, params = runtime.router.match("GET", path)
        validation = next(p for p in op.policies if p.name == "validation")
        ctx = RequestContext({"headers": [], "query_string": query}, receive, op, "rid", params)
        coroutine = validation.on_request(ctx)
        try:  # a request without a body never waits: driven directly, so no event-loop cost is counted
            coroutine.send(None)
        except StopIteration:
            pass

    results = {label: float("inf") for label, *_ in cases}
    for _ in range(5):  # interleaved, best of 5: a busy machine inflates both alike
        for label, runtime, path, query in cases:
            n = 5000
            start = time.perf_counter()
            for _ in range(n):
                once(runtime, path, query)
            results[label] = min(results[label], (time.perf_counter() - start) / n * 1e6)
    return list(results.items())


def in_process(cfg: Path, repeat: int) -> tuple[float, float]:
    """Seconds to build the runtime (check + compile + policies) in a running interpreter: (cold, warm cache).
    Start-up minus what every process pays whatever its contracts (Python imports, ~1 s, see the reference row)."""
    from gateway.runtime import Runtime
    from gateway.settings import load_settings

    settings = load_settings(cfg, {"jobs": {"sqlite_path": str(cfg.parent / "jobs.db")}})
    cache = cfg.parent / "cache"
    cold = warm = float("inf")
    for _ in range(repeat):
        shutil.rmtree(cache, ignore_errors=True)
        start = time.perf_counter()
        Runtime.build(settings, install_logs=False)
        cold = min(cold, time.perf_counter() - start)
        start = time.perf_counter()
        Runtime.build(settings, install_logs=False)
        warm = min(warm, time.perf_counter() - start)
    return cold, warm


def _checked(settings: Any) -> tuple[Any, Any]:
    from gateway.runtime import check

    contracts, operations, problems = check(settings)
    assert not problems, problems[:3]
    return contracts, operations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cg-bench-corpus-"))
    try:
        rows = []
        for label, entry, previous in documents(tmp):
            cfg = config(entry, args.port)
            cache = entry.parent / "cache"
            checks = []
            for _ in range(args.repeat):
                shutil.rmtree(cache, ignore_errors=True)
                seconds, code, _ = timed([*GATEWAY, "check", "--config", str(cfg)], entry.parent)
                assert code == 0, f"gateway check failed on {label}"
                checks.append(seconds)
            check = min(checks)
            cold = []
            for _ in range(args.repeat):
                shutil.rmtree(cache, ignore_errors=True)
                cold.append(start_up(cfg, args.port))
            warm = [start_up(cfg, args.port) for _ in range(args.repeat)]  # the cache entry is there now
            diffs = [timed([*GATEWAY, "diff", str(previous), str(entry)], entry.parent) for _ in range(args.repeat)]
            rows.append((label, check, min(c[0] for c in cold), min(w[0] for w in warm),
                         max(c[1] for c in cold + warm), min(d[0] for d in diffs), max(d[2] for d in diffs), cfg))
        # In this interpreter only after every child ran: a child forked from a larger parent reports its pages.
        rows = [(*row[:-1], *in_process(row[-1], args.repeat)) for row in rows]
        print("| document | check s | cold start s | warm start s | RSS MB | diff s | diff peak MB "
              "| build cold s | build warm s |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for label, check, cold_s, warm_s, rss, diff_s, diff_mb, build_cold, build_warm in rows:
            print(f"| {label} | {check:.2f} | {cold_s:.2f} | {warm_s:.2f} | {rss} | {diff_s:.2f} | {diff_mb} "
                  f"| {build_cold:.2f} | {build_warm:.2f} |")
        print("\nstart: from launching `gateway serve` to its port accepting (imports included); build: Runtime.build "
              "in a running interpreter (check + compile + policies), without / with the compile cache")
        print("\n| per request: routing + request validation | µs |\n|---|---:|")
        for label, value in per_request(tmp):
            print(f"| {label} | {value:.1f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("GATEWAY_LOG_LEVEL", "WARNING")
    main()
