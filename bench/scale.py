"""Scale-out: the full chain with every piece of shared state in Redis, on 1..N worker processes.

Run: .venv/bin/python bench/scale.py [--workers 1,2] [--seconds 10] [--transport h1]
For each worker count: throughput of GET and POST (the same chain as bench/run.py, Redis limiter and idempotency
store), first with the workers confined to CPU 0 (what more processes buy without more cores), then spread over
every CPU (sharing them with nginx and wrk, as the machine has nothing else to give). Then a correctness check:
a quota of exactly 500 requests per day for the client, hammered through all workers at once by wrk: exactly 500
must pass, whatever worker served them (the limiter's state is in Redis, decided atomically there).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import uuid
from pathlib import Path

from lib import GATEWAY_CPU, VENV_BIN, Result, nginx_upstream, pinned, process, wrk
from run import GATEWAY_PORT, gateway_config, peers_dir, peers_python, tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--transport", default="h1")
    args = parser.parse_args()
    peers = peers_dir()
    python = peers_python(peers)
    body = (peers / "body.json").read_bytes()
    all_cpus = ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    rows: list[tuple[int, str, Result]] = []
    with tempfile.TemporaryDirectory() as name, nginx_upstream() as upstream:
        tmp = Path(name)
        creds = tokens(peers, python, tmp / "keys")
        headers = {"Authorization": f"Bearer {creds['TOKEN']}"}
        config = gateway_config(tmp, peers, upstream, creds["JWT_KEY_FILE"], "redis", args.transport)

        def serve(workers: int, cpus: str, cfg: Path = config):  # noqa: ANN202 - a context manager
            cmd = pinned(cpus, [str(VENV_BIN / "gateway"), "serve", "--config", str(cfg), "--workers",
                                str(workers)])
            return process(cmd, GATEWAY_PORT, env={"GATEWAY_LOG_LEVEL": "WARNING"}, log=tmp / "gateway.log")

        base = f"http://127.0.0.1:{GATEWAY_PORT}/v1"
        for workers in (int(w) for w in args.workers.split(",")):
            for cpus in dict.fromkeys((GATEWAY_CPU, all_cpus)):
                print(f"{workers} worker(s) on CPU {cpus}", file=sys.stderr, flush=True)
                with serve(workers, cpus) as proc:
                    for method, url, data in (("GET", base + "/orders/ord_12345678", None),
                                              ("POST", base + "/orders", body)):
                        result = wrk(f"{workers} worker(s), CPU {cpus}", url, seconds=args.seconds, method=method,
                                     body=data, headers={**headers, "Content-Type": "application/json"},
                                     pid=proc.pid)
                        rows.append((workers, method, result))
        # Correctness across workers: one quota, a fresh bucket name so earlier runs do not count.
        bucket = "q" + uuid.uuid4().hex[:8]
        limited = gateway_config(tmp, peers, upstream, creds["JWT_KEY_FILE"], "redis", args.transport,
                                 limits={bucket: {"quota": "500/day"}})
        workers = max(int(w) for w in args.workers.split(","))
        with serve(workers, all_cpus, limited):
            check = wrk("quota", base + "/orders/ord_12345678", seconds=3, headers=headers, warmup=False)
    print("\n| workers | CPUs | method | req/s | p50 ms | p99 ms | CPU µs/req | errors |")
    print("|---:|---|---|---:|---:|---:|---:|---:|")
    for workers, method, r in rows:
        cpus = r.name.split("CPU ")[1]
        print(f"| {workers} | {cpus} | {method} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.cpu_us:,.0f} | "
              f"{r.errors} |")
    admitted = check.requests - check.errors
    print(f"\nquota of 500/day across {workers} workers: {check.requests} requests, {admitted} admitted, "
          f"{check.errors} refused -> {'OK' if admitted == 500 else 'WRONG'}")


if __name__ == "__main__":
    main()
