"""New connections while the worker is busy: is a caller that opens a connection per request served, or starved?

Run: .venv/bin/python bench/accept.py [--seconds 15] [--new 400] [--kept 32]   (needs wrk and ab: apt-get install
wrk apache2-utils)

The benchmark's gateway and upstream (bench/run.py: the peers' contract, RS256 tokens, nginx as the vendor), one
worker on CPU 0. `wrk` keeps `--kept` connections alive and busy; from 3 s in, `ab` opens a new connection for each
of its requests, `--new` at once, with the same token. Printed: the kernel's accept queue (connections waiting for
the gateway to accept them, the Recv-Q of the listening socket, sampled each second), what each client got, and
how long one more new connection waits for an answer. docs/overload.md, "Before admission: the accept queue".
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from lib import LOAD_CPU, pinned, process
from run import GATEWAY_CPU, GATEWAY_PORT, VENV_BIN, gateway_config, nginx_upstream, peers_dir, peers_python, tokens

PATH = "/v1/orders/ord_12345678"


def accept_queue() -> int:
    out = subprocess.run(["ss", "-ltnH", f"sport = :{GATEWAY_PORT}"], capture_output=True, text=True).stdout
    return max((int(line.split()[1]) for line in out.splitlines() if line.strip()), default=0)


def figure(pattern: str, text: str) -> str:
    match = re.search(pattern, text, re.MULTILINE)
    return match.group(1) if match else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=15, help="how long ab runs (wrk runs 7 s longer)")
    parser.add_argument("--new", type=int, default=400, help="ab's concurrency: new connections at once")
    parser.add_argument("--kept", type=int, default=32, help="wrk's kept-alive connections")
    args = parser.parse_args()
    for tool in ("wrk", "ab", "ss"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed: apt-get install wrk apache2-utils iproute2")
    peers = peers_dir()
    python = peers_python(peers)
    with tempfile.TemporaryDirectory() as tmp_name, nginx_upstream() as upstream:
        tmp = Path(tmp_name)
        creds = tokens(peers, python, tmp / "keys")
        token = creds["TOKEN"]
        config = gateway_config(tmp, peers, upstream, creds["JWT_KEY_FILE"], "memory")
        cmd = pinned(GATEWAY_CPU, [str(VENV_BIN / "python"), "-m", "gateway", "serve", "--config", str(config)])
        with process(cmd, GATEWAY_PORT, env={"GATEWAY_LOG_LEVEL": "WARNING"}, log=tmp / "gateway.log"):
            url = f"http://127.0.0.1:{GATEWAY_PORT}{PATH}"
            auth = f"Authorization: Bearer {token}"
            wrk_cmd = ["wrk", "-t1", "--latency", f"-c{args.kept}", f"-d{args.seconds + 7}s", "-H", auth, url]
            wrk = subprocess.Popen(pinned(LOAD_CPU, wrk_cmd), stdout=subprocess.PIPE, text=True)
            time.sleep(3)
            ab = subprocess.Popen(pinned(LOAD_CPU, ["ab", "-q", "-c", str(args.new), "-t", str(args.seconds),
                                                    "-n", "10000000", "-H", auth, url]),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            queue: list[int] = []
            sampler_done = threading.Event()

            def sample() -> None:
                while not sampler_done.wait(1.0):
                    queue.append(accept_queue())

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            time.sleep(args.seconds / 2)
            started = time.perf_counter()
            status = httpx.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code
            one_more_ms = (time.perf_counter() - started) * 1000
            ab_out = ab.communicate(timeout=args.seconds + 60)[0]
            sampler_done.set()
            wrk_out = wrk.communicate(timeout=args.seconds + 60)[0]
    complete = int(figure(r"^Complete requests:\s+(\d+)", ab_out).replace("-", "0"))
    non_2xx = int(figure(r"^Non-2xx responses:\s+(\d+)", ab_out).replace("-", "0"))
    wrk_total = float(figure(r"^Requests/sec:\s+([\d.]+)", wrk_out).replace("-", "0"))
    wrk_non_2xx = int(figure(r"Non-2xx or 3xx responses:\s+(\d+)", wrk_out).replace("-", "0"))
    wrk_seconds = args.seconds + 7
    print(f"\n{args.kept} kept-alive connections (wrk) + {args.new} new connections at once (ab, one per request), "
          f"one worker, {args.seconds} s\n")
    ab_ms = [figure(rf"^\s*{p}%\s+(\d+)", ab_out) for p in (50, 99, 100)]
    wrk_ms = [figure(rf"^\s+{p}%\s+([\d.]+)ms", wrk_out) for p in (50, 99)]
    print("| | answered /s | served (2xx) /s | p50 ms | p99 ms | slowest ms |\n|---|---:|---:|---:|---:|---:|")
    print(f"| ab, a new connection per request | {complete / args.seconds:,.0f} | "
          f"{(complete - non_2xx) / args.seconds:,.0f} | {ab_ms[0]} | {ab_ms[1]} | {ab_ms[2]} |")
    print(f"| wrk, kept alive | {wrk_total:,.0f} | {wrk_total - wrk_non_2xx / wrk_seconds:,.0f} | {wrk_ms[0]} | "
          f"{wrk_ms[1]} | - |")
    print(f"\naccept queue (connections the gateway had not yet accepted), each second: {queue}")
    print(f"one more new connection mid-run: {status} after {one_more_ms:.0f} ms")


if __name__ == "__main__":
    main()
