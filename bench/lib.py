"""Benchmark plumbing: an nginx upstream answering a fixed order, processes pinned to CPUs, wrk, parsed results.

Layout on the 2-core machine: the system under test on CPU 0; nginx (upstream) and wrk (load) share CPU 1.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV_BIN = Path(sys.executable).parent
ORDER = (b'{"id":"ord_1234567890","status":"accepted","currency":"EUR","total":{"amount":8997,"currency":"EUR"},'
         b'"items":[{"sku":"SKU-123","quantity":2},{"sku":"SKU-456","quantity":1}],"customer":{"email":'
         b'"ana@example.com","name":"Ana Lima"},"created_at":"2026-11-22T10:00:00Z"}')
GATEWAY_CPU, LOAD_CPU = "0", "1"


def best_us(run: Callable[[int], Any], n: int, rounds: int = 5) -> float:
    """µs per call: the best of `rounds` timings of `run(n)`, which makes n calls (micro-benchmarks)."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        run(n)
        best = min(best, (time.perf_counter() - start) / n * 1e6)
    return best


def require(tool: str, hint: str) -> str:
    found = shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists() else None)
    if not found:
        raise SystemExit(f"{tool} is required for the benchmark: {hint}")
    return found


def wait_port(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout_s} s")


def pinned(cpu: str, cmd: list[str]) -> list[str]:
    return ["taskset", "-c", cpu, *cmd] if shutil.which("taskset") else cmd


@contextmanager
def process(cmd: list[str], port: int, env: dict[str, str] | None = None, cwd: Path | None = None,
            log: Path | None = None) -> Iterator[subprocess.Popen[bytes]]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_port(port)
        yield proc
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)


@contextmanager
def nginx_upstream(port: int = 9101) -> Iterator[str]:
    """nginx answering GET /orders/{id} with 200 and POST /orders with 201, the same fixed order body."""
    nginx = require("nginx", "apt-get install nginx-light")
    with tempfile.TemporaryDirectory() as tmp:
        body = ORDER.decode().replace("'", "\\'")
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(f"""
worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off; keepalive_requests 1000000; keepalive_timeout 120s;
  client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp};
  scgi_temp_path {tmp};
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    default_type application/json;
    location /orders {{
      if ($request_method = POST) {{ return 201 '{body}'; }}
      return 200 '{body}';
    }}
  }}
}}
""")
        with process(pinned(LOAD_CPU, [nginx, "-c", str(conf), "-p", tmp]), port):
            yield f"http://127.0.0.1:{port}"


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_us: float = float("nan")  # CPU time (user + system) the system under test spent per request
    requests: int = 0
    socket_errors: int = 0
    seconds: int = 0
    overload: Overload | None = None

    def row(self) -> str:
        return (f"| {self.name} | {self.rps:,.0f} | {self.p50_ms:.2f} | {self.p99_ms:.2f} | {self.cpu_us:,.0f} | "
                f"{self.errors} |")


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its descendants (e.g. server workers), in seconds."""
    children: dict[int, list[int]] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    total, stack = 0.0, [pid]
    while stack:
        p = stack.pop()
        total += times.get(p, 0.0)
        stack.extend(children.get(p, []))
    return total


# Lua for wrk that stamps each request's X-Request-ID with its send time (the gateway echoes the caller's id) and
# sorts the answers by status: served (2xx), shed (503) and other, each with its own latency distribution. wrk's
# own latency figures mix all answers; under overload what matters is the latency of the requests served and that
# every refusal is fast. Systems that do not echo the id are counted as "unstamped" (wrk's own figures apply).
STAMPED = r"""
local ffi = require("ffi")
ffi.cdef[[ typedef struct { long tv_sec; long tv_nsec; } cg_ts; int clock_gettime(int, cg_ts *); ]]
local ts = ffi.new("cg_ts")
local function now_us() ffi.C.clock_gettime(1, ts); return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3 end
ok, shed, other, unstamped = {}, {}, 0, 0
local threads = {}
function setup(thread) table.insert(threads, thread) end
local headers = {}
function request()
  for k, v in pairs(wrk.headers) do headers[k] = v end
  headers["X-Request-ID"] = string.format("%.0f", now_us())
  return wrk.format(nil, nil, headers)
end
function response(status, headers, body)
  local sent = tonumber(headers["x-request-id"] or headers["X-Request-ID"] or "")
  if sent == nil then unstamped = unstamped + 1; return end
  local ms = (now_us() - sent) / 1000
  if status >= 200 and status < 300 then ok[#ok + 1] = ms elseif status == 503 then shed[#shed + 1] = ms
  else other = other + 1 end
end
local function pct(list, q)
  if #list == 0 then return -1 end
  table.sort(list)
  return list[math.max(1, math.ceil(#list * q))]
end
function done(summary, latency, requests)
  local all_ok, all_shed, n_other, n_unstamped = {}, {}, 0, 0
  for _, t in ipairs(threads) do
    for _, v in ipairs(t:get("ok")) do all_ok[#all_ok + 1] = v end
    for _, v in ipairs(t:get("shed")) do all_shed[#all_shed + 1] = v end
    n_other = n_other + t:get("other"); n_unstamped = n_unstamped + t:get("unstamped")
  end
  io.write(string.format("CG ok=%d ok_p50=%.3f ok_p99=%.3f ok_max=%.3f shed=%d shed_p50=%.3f shed_max=%.3f " ..
    "other=%d unstamped=%d\n", #all_ok, pct(all_ok, 0.5), pct(all_ok, 0.99), pct(all_ok, 1.0), #all_shed,
    pct(all_shed, 0.5), pct(all_shed, 1.0), n_other, n_unstamped))
end
"""


@dataclass
class Overload:
    """The answers of a stamped run sorted by status (None where the system does not echo X-Request-ID)."""

    served: int
    served_p50_ms: float
    served_p99_ms: float
    served_max_ms: float
    shed: int
    shed_p50_ms: float
    shed_max_ms: float
    other: int
    unstamped: int


def server_closed(url: str, timeout_s: float = 10.0) -> None:
    """Wait until the server has closed every connection the warm-up's wrk closed (none left in CLOSE-WAIT).

    The measured run opens its connections at once from the local ports the warm-up just released; one that lands
    on a port whose old connection the server still holds (a busy server closes the hundreds it was serving over
    the next fraction of a second) is answered with an ACK instead of a SYN-ACK and waits for a SYN retransmission:
    1 s or 3 s. That is the benchmark's artifact (real callers do not reuse the ports of connections they closed a
    millisecond ago), and it looked like seconds-long requests and wrk timeouts at 512 connections."""
    port = urlsplit(url).port
    ss = shutil.which("ss")
    if ss is None or port is None:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = subprocess.run([ss, "-Htn", "state", "close-wait", f"( sport = :{port} )"], capture_output=True,
                             text=True).stdout
        if not out.strip():
            return
        time.sleep(0.05)


def wrk(name: str, url: str, *, seconds: int = 10, connections: int = 32, method: str = "GET",
        body: bytes | None = None, headers: dict[str, str] | None = None, pid: int | None = None,
        warmup: bool = True, stamped: bool = False) -> Result:
    """Run wrk pinned to the load CPU and parse req/s, p50, p99 and non-2xx/socket errors.

    With `pid`, also the CPU time that process (and its children) spent per request: unlike req/s, this hardly
    moves when other work competes for the machine, so it is the figure to compare optimisations by.
    `stamped`: time every answer from its own request and sort served / shed (Result.overload)."""
    binary = require("wrk", "apt-get install wrk")
    lines = [f'wrk.method = "{method}"']
    if body is not None:
        lines.append("wrk.body = [==[" + body.decode() + "]==]")
    for k, v in (headers or {}).items():
        lines.append(f'wrk.headers["{k}"] = "{v}"')
    if stamped:
        lines.append(STAMPED)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write("\n".join(lines) + "\n")
    try:
        # A short warm-up so pools, caches and the JIT-less interpreter's first paths are not measured.
        if warmup:
            subprocess.run(pinned(LOAD_CPU, [binary, "-t1", f"-c{connections}", "-d2s", "-s", script.name, url]),
                           capture_output=True, timeout=60)
            server_closed(url)
        cpu_before = cpu_seconds(pid) if pid else 0.0
        out = subprocess.run(pinned(LOAD_CPU, [binary, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
                                               "-s", script.name, url]),
                             capture_output=True, text=True, timeout=seconds + 60).stdout
        cpu = cpu_seconds(pid) - cpu_before if pid else float("nan")
    finally:
        os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    socket_errors = 0
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        socket_errors = sum(int(x) for x in m.groups())
    errors += socket_errors
    requests = int(m.group(1)) if (m := re.search(r"(\d+) requests in", out)) else 0
    result = Result(name, rps, p50, p99, errors, cpu / requests * 1e6 if requests else float("nan"), requests,
                    socket_errors=socket_errors, seconds=seconds)
    if stamped and (m := re.search(r"^CG (.*)$", out, re.M)):
        values = dict(pair.split("=") for pair in m.group(1).split())
        result.overload = Overload(int(values["ok"]), float(values["ok_p50"]), float(values["ok_p99"]),
                                   float(values["ok_max"]), int(values["shed"]), float(values["shed_p50"]),
                                   float(values["shed_max"]), int(values["other"]), int(values["unstamped"]))
    return result
