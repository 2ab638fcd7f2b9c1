"""The gateway benchmark: the full chain against nginx directly and against the peers, in the same run.

Run: make bench   (= .venv/bin/python bench/run.py; --help for options)

Layout on the 2-core machine (bench/lib.py): every system under test alone on CPU 0, one worker; the nginx upstream
(fixed JSON order) and wrk (32 connections) on CPU 1. Each system serves GET /v1/orders/{id} and POST /v1/orders
(the peers' 15-field nested body) and forwards to nginx at /orders/{id} and /orders. The gateway runs its FULL
chain: RS256 JWT (issuer, audience, expiry, scopes), rate limit (a GCRA rate and a daily quota; memory or Redis),
request validation (path pattern, Content-Type, JSON Schema of the body), the http adapter through the vendor's
circuit breaker with the request deadline, response validation (the Order schema, enforced), and whatever the
pipeline records (access log, metrics). The peers (../shared/bench-peers, Connexion 3.3 and a naive FastAPI proxy)
are installed into bench/.peers-venv from their requirements.txt on first use.

Every system is measured --repeat times, rounds interleaved so that noise from other work on the machine lands on
all of them alike; the table shows the median round (and the best req/s). "added p50" is the system's p50 minus
nginx direct's p50 for the same method in the same round.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import yaml
from lib import BENCH, GATEWAY_CPU, LOAD_CPU, ROOT, VENV_BIN, Result, nginx_upstream, pinned, process, wrk

GATEWAY_PORT, PEER_PORT = 9200, 9111
PEERS_VENV = BENCH / ".peers-venv"
# A rate and a quota no benchmark reaches: every request pays for the decision, none is refused.
LIMITS = {"requests": {"rate": "1000000/second"}, "daily": {"quota": "1000000000/day"}}


def peers_dir() -> Path:
    candidates = [Path(os.environ["BENCH_PEERS"])] if os.environ.get("BENCH_PEERS") else []
    candidates += [ROOT.parent / "shared" / "bench-peers", ROOT.parent.parent / "shared" / "bench-peers"]
    for path in candidates:
        if (path / "contract.yaml").exists():
            return path.resolve()
    raise SystemExit("the benchmark peers are not found: set BENCH_PEERS to the bench-peers folder")


def peers_python(peers: Path) -> Path:
    """The peers' own virtualenv (never the product's), created from their pinned requirements on first use."""
    python = PEERS_VENV / "bin" / "python"
    marker = PEERS_VENV / ".installed"
    requirements = peers / "requirements.txt"
    if not marker.exists() or marker.read_text() != requirements.read_text():
        print(f"installing the peers into {PEERS_VENV} (once) ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(PEERS_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r",
                        str(requirements)], check=True)
        marker.write_text(requirements.read_text())
    return python


def tokens(peers: Path, python: Path, keys: Path) -> dict[str, str]:
    out = subprocess.run([str(python), str(peers / "tools" / "mkkeys.py"), str(keys), "RS256"], check=True,
                         capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def gateway_config(tmp: Path, peers: Path, upstream: str, key_file: str, limiter: str,
                   transport: str = "h1", limits: dict[str, Any] | None = None) -> Path:
    """The peers' contract routed to the http adapter, with limits; the peers' issuer trusted through a JWKS."""
    from joserfc.jwk import RSAKey

    contract = yaml.safe_load((peers / "contract.yaml").read_text())
    contract["x-gateway"] = {"api": "bench", "limits": limits or LIMITS}
    for path, upstream_path in (("/orders/{order_id}", "/orders/{order_id}"), ("/orders", "/orders")):
        for op in contract["paths"][path].values():
            op["x-gateway"] = {"route": "upstream.forward", "upstream_path": upstream_path}
    (tmp / "contract.yaml").write_text(yaml.safe_dump(contract, sort_keys=False))
    jwk = RSAKey.import_key(Path(key_file).read_bytes()).as_dict(private=False)
    jwk.update(kid="bench-1", alg="RS256", use="sig")
    config = tmp / f"gateway-{limiter}-{transport}.yaml"
    config.write_text(yaml.safe_dump({
        "contracts": [str(tmp / "contract.yaml")],
        "server": {"host": "127.0.0.1", "port": GATEWAY_PORT},
        "response_validation": "enforce",
        "transport": transport,
        "auth": {"issuers": [{"issuer": "https://idp.bench", "jwks": {"keys": [jwk]}, "audiences": ["bench"],
                              "algorithms": ["RS256"]}]},
        # Closed, with a generous timeout: on a busy machine a slow Redis must show up as 503s in the errors column,
        # never as requests let through unchecked (fail_mode open skips the store for a second after a timeout).
        "limits": {"backend": limiter, "fail_mode": "closed", "redis_timeout_s": 1.0},
        "idempotency": {"backend": limiter},  # redis: every piece of shared state in Redis (several workers)
        "redis_url": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
        "vendors": {"upstream": {"adapter": "http", "base_url": upstream}},
        # BENCH_LOG_OUTPUT=none measures the chain without access lines (what logging costs); default: as shipped
        "observability": {"logging": {"output": os.environ.get("BENCH_LOG_OUTPUT", "stdout")}},
        # BENCH_ADMISSION='{"shed_hold_ms": 150}' (JSON): admission settings to try; default: as shipped
        "request": {"admission": json.loads(os.environ.get("BENCH_ADMISSION", "{}"))},
    }, sort_keys=False))
    return config


def haproxy_config(tmp: Path, upstream: str, key_file: str) -> Path:
    """HAProxy as a peer: RS256 verified natively (jwt_verify) with issuer, audience, expiry and scope checks, the
    /v1 prefix stripped, forwarded to the same nginx upstream. One thread, like the Python systems."""
    host_port = upstream.removeprefix("http://")
    config = tmp / "haproxy.cfg"
    config.write_text(f"""
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
frontend api
  bind 127.0.0.1:{PEER_PORT}
  http-request deny status 401 unless {{ req.hdr(authorization) -m beg "Bearer " }}
  http-request set-var(txn.alg) http_auth_bearer,jwt_header_query('$.alg')
  http-request set-var(txn.iss) http_auth_bearer,jwt_payload_query('$.iss')
  http-request set-var(txn.aud) http_auth_bearer,jwt_payload_query('$.aud')
  http-request set-var(txn.exp) http_auth_bearer,jwt_payload_query('$.exp','int')
  http-request set-var(txn.scope) http_auth_bearer,jwt_payload_query('$.scope')
  http-request deny status 401 unless {{ var(txn.alg) -m str RS256 }}
  http-request deny status 401 unless {{ var(txn.iss) -m str https://idp.bench }}
  http-request deny status 401 unless {{ var(txn.aud) -m str bench }}
  http-request deny status 401 unless {{ http_auth_bearer,jwt_verify(txn.alg,"{key_file}") -m int 1 }}
  http-request set-var(txn.now) date()
  http-request deny status 401 if {{ var(txn.exp),sub(txn.now) -m int lt 0 }}
  http-request deny status 403 if {{ method GET }} ! {{ var(txn.scope) -m sub orders:read }}
  http-request deny status 403 if {{ method POST }} ! {{ var(txn.scope) -m sub orders:write }}
  http-request replace-path ^/v1(/orders.*) \\1
  default_backend upstream
backend upstream
  server nginx {host_port}
""")
    return config


def check(base: str, token: str, body: bytes) -> None:
    """One GET and one POST through the system before it is measured: wrong answers must not look fast."""
    for method, path, data, expected in (("GET", "/v1/orders/ord_12345678", None, 200),
                                         ("POST", "/v1/orders", body, 201)):
        request = urllib.request.Request(base + path, data=data, method=method, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            if response.status != expected:
                raise SystemExit(f"{base}{path}: {method} answered {response.status}, not {expected}")


class System:
    """Something measured: a factory of a context manager that starts it and yields its base URL."""

    def __init__(self, name: str, start: Callable[[], AbstractContextManager[str]], kind: str = "gateway") -> None:
        self.name, self.start, self.kind = name, start, kind  # kind: direct | gateway | peer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per measurement (after 2 s warm-up)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the median round is reported")
    parser.add_argument("--connections", default="32",
                        help="wrk connections, comma-separated: the first is the main table; each further one "
                             "(e.g. --connections 32,512) is an overload run: answers sorted into served and shed, "
                             "each with its own latency (bench/lib.py STAMPED)")
    parser.add_argument("--transports", default="h1",
                        help="vendor transports to run the gateway with, comma-separated (h1, the default one; "
                             "aiohttp)")
    parser.add_argument("--baseline", action="append", default=[], metavar="GIT_REF",
                        help="also run the gateway as it was at this git revision (memory limiter), in the same "
                             "run: before/after figures for an optimisation (repeatable)")
    parser.add_argument("--baseline-transport", default="aiohttp",
                        help="the vendor transport the --baseline revisions run with "
                             "(transport: h1 exists from 3b970db on)")
    parser.add_argument("--single", type=int, default=3, metavar="SECONDS",
                        help="also measure each system with ONE connection for this long, in the first round: "
                             "the latency it adds when nothing queues (0: skip)")
    parser.add_argument("--no-peers", action="store_true", help="only nginx and the gateway")
    parser.add_argument("--only", action="append", help="run only systems whose name contains this (repeatable; "
                                                       "nginx direct always runs), e.g. --only 'memory limiter'")
    parser.add_argument("--methods", default="GET,POST", help="which requests to measure, comma-separated")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    parser.add_argument("--profile", type=Path, help="record py-spy profiles of the gateway into this folder "
                                                     "(pip install py-spy; its numbers are then not clean)")
    args = parser.parse_args()

    peers = peers_dir()
    python = peers_python(peers)
    body = (peers / "body.json").read_bytes()
    rounds: dict[tuple[str, str], list[Result]] = {}
    sweep: dict[tuple[str, str, int], list[Result]] = {}
    base_connections, *overload_connections = (int(c) for c in args.connections.split(","))
    args.base_connections = base_connections
    single: dict[tuple[str, str], Result] = {}
    rss: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp_name, nginx_upstream() as upstream:
        tmp = Path(tmp_name)
        creds = tokens(peers, python, tmp / "keys")
        token, key_file = creds["TOKEN"], creds["JWT_KEY_FILE"]
        gateway_env = {"GATEWAY_LOG_LEVEL": "WARNING"}
        pids: dict[str, int] = {}
        peer_env = {"UPSTREAM": upstream, "JWT_KEY_FILE": key_file, "JWT_ALG": "RS256", "PYTHONPATH": str(peers)}

        @contextmanager
        def gateway(limiter: str, transport: str, source: Path | None = None) -> Iterator[str]:
            config = gateway_config(tmp, peers, upstream, key_file, limiter, transport)
            cmd = pinned(GATEWAY_CPU, [str(VENV_BIN / "python"), "-m", "gateway", "serve", "--config", str(config)])
            env = {**gateway_env, "PYTHONPATH": str(source)} if source else gateway_env
            # `python -m` puts the working directory first on sys.path: run an earlier revision from its own copy.
            with process(cmd, GATEWAY_PORT, env=env, cwd=source, log=tmp / f"gateway-{limiter}-{transport}.log") \
                    as proc:
                pids["gateway"] = proc.pid
                yield f"http://127.0.0.1:{GATEWAY_PORT}"

        @contextmanager
        def peer(module: str) -> Iterator[str]:
            pids.clear()
            cmd = pinned(GATEWAY_CPU, [str(python), "-m", "uvicorn", module, "--port", str(PEER_PORT), "--loop",
                                       "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"])
            with process(cmd, PEER_PORT, env=peer_env, cwd=peers, log=tmp / f"{module}.log") as proc:
                pids["peer"] = proc.pid
                yield f"http://127.0.0.1:{PEER_PORT}"

        @contextmanager
        def haproxy() -> Iterator[str]:
            pids.clear()
            cmd = pinned(GATEWAY_CPU, [shutil.which("haproxy") or "/usr/sbin/haproxy", "-db", "-f",
                                       str(haproxy_config(tmp, upstream, key_file))])
            with process(cmd, PEER_PORT, log=tmp / "haproxy.log") as proc:
                pids["peer"] = proc.pid
                yield f"http://127.0.0.1:{PEER_PORT}"

        @contextmanager
        def direct() -> Iterator[str]:
            yield upstream

        systems = [System("nginx direct", direct, "direct"),
                   *[System(f"gateway ({label} limiter{'' if t == 'h1' else ', ' + t})",
                            lambda limiter=limiter, t=t: gateway(limiter, t))
                     for t in args.transports.split(",") for limiter, label in (("memory", "memory"),
                                                                                ("redis", "Redis"))],
                   *[System(f"gateway @{ref} (memory limiter, {args.baseline_transport})",
                          lambda src=src: gateway("memory", args.baseline_transport, src))
                     for ref, src in ((ref, source_at(ref, tmp)) for ref in args.baseline)],
                   System("naive FastAPI proxy", lambda: peer("peers.naive:app"), "peer"),
                   System("Connexion 3.3", lambda: peer("peers.connexion_app:app"), "peer"),
                   System("FastAPI no-op, no upstream (Python ceiling)", lambda: peer("peers.noop:app"), "peer"),
                   *([System("HAProxy 2.x + RS256 JWT (jwt_verify)", haproxy, "peer")]
                     if shutil.which("haproxy") or Path("/usr/sbin/haproxy").exists() else [])]
        if args.no_peers:
            systems = [s for s in systems if s.kind != "peer"]
        if args.only:
            systems = [s for s in systems if s.kind == "direct" or any(w in s.name for w in args.only)]
        for n in range(args.repeat):
            for system in systems:
                print(f"round {n + 1}/{args.repeat}: {system.name}", file=sys.stderr, flush=True)
                with system.start() as base:
                    get_path, post_path = (("/orders/ord_12345678", "/orders") if system.kind == "direct"
                                           else ("/v1/orders/ord_12345678", "/v1/orders"))
                    if system.kind != "direct":
                        check(base, token, body)
                    headers = {"Authorization": f"Bearer {token}"}
                    requests: dict[str, dict[str, Any]] = {
                        "GET": {"url": base + get_path, "headers": headers},
                        "POST": {"url": base + post_path, "method": "POST", "body": body,
                                 "headers": {**headers, "Content-Type": "application/json"}}}
                    spy = profiler(args, system, pids.get("gateway"), n)
                    pid = pids.get("gateway") or pids.get("peer")
                    for method, request in requests.items():
                        if method not in args.methods.split(","):
                            continue
                        rounds.setdefault((system.name, method), []).append(
                            wrk(system.name, seconds=args.seconds, connections=base_connections, pid=pid,
                                **request))
                        for c in overload_connections:
                            if system.kind != "direct":
                                sweep.setdefault((system.name, method, c), []).append(
                                    wrk(system.name, seconds=args.seconds, connections=c, pid=pid, stamped=True,
                                        **request))
                    if spy is not None:
                        spy.wait()
                    if n == 0 and args.single:
                        for method, request in requests.items():
                            single[(system.name, method)] = wrk(system.name, seconds=args.single, connections=1,
                                                                **request)
                    if system.kind == "gateway":
                        rss[system.name] = max(rss.get(system.name, 0), rss_mb(pids["gateway"]))
                pids.clear()
        if not args.only:
            rss["gateway with the demo contracts (gateway.yaml), after start-up"] = demo_rss(tmp)
    report(rounds, args)
    if sweep:
        report_overload(rounds, sweep, args)
    if single:
        report_single(single, args)
    print("\n| gateway process | RSS MB |\n|---|---:|")
    for name, mb in rss.items():
        print(f"| {name}{', after the load' if name.startswith('gateway (') else ''} | {mb:.0f} |")


def source_at(ref: str, tmp: Path) -> Path:
    """The repository's gateway/ and adapters/ as they were at `ref`, to run with PYTHONPATH (same virtualenv)."""
    out = tmp / f"src-{ref.replace('/', '_')}"
    out.mkdir()
    archive = subprocess.run(["git", "archive", "--format=tar", ref, "gateway", "adapters"], cwd=ROOT,
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def demo_rss(tmp: Path) -> float:
    """RSS of one worker serving the demo contracts (contracts/, gateway.yaml), after a few requests."""
    cmd = pinned(GATEWAY_CPU, [str(VENV_BIN / "gateway"), "serve", "--config", str(ROOT / "gateway.yaml"),
                               "--port", str(GATEWAY_PORT)])
    with process(cmd, GATEWAY_PORT, env={"GATEWAY_LOG_LEVEL": "WARNING"}, cwd=ROOT, log=tmp / "demo.log") as proc:
        for path in ("/health", "/v1/orders/ord_1", "/docs", "/nowhere"):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{GATEWAY_PORT}{path}", timeout=10).close()
            except OSError:
                pass  # 401/404 answers are fine: the request went through the gateway
        return rss_mb(proc.pid)


def profiler(args: argparse.Namespace, system: System, pid: int | None, n: int) -> subprocess.Popen[bytes] | None:
    """py-spy sampling the gateway through both measurements (GET then POST), from the load CPU."""
    if args.profile is None or system.kind != "gateway" or pid is None:
        return None
    args.profile.mkdir(parents=True, exist_ok=True)
    out = args.profile / f"{system.name.split(' (')[0]}-{system.name.split('(')[1].split()[0]}-{n + 1}.txt"
    seconds = 2 * (args.seconds + 2) + 2
    return subprocess.Popen(pinned(LOAD_CPU, [str(VENV_BIN / "py-spy"), "record", "--pid", str(pid), "--duration",
                                              str(seconds), "--rate", "200", "--format", "raw", "--nonblocking",
                                              "--output", str(out)]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _median_round(results: list[Result]) -> Result:
    return sorted(results, key=lambda r: r.rps)[len(results) // 2]


def report(rounds: dict[tuple[str, str], list[Result]], args: argparse.Namespace) -> None:
    print(f"\n{platform.node()}: {os.cpu_count()} CPUs ({_cpu_model()}), Python {platform.python_version()}; "
          f"system under test on CPU {GATEWAY_CPU}, one worker; nginx + wrk -c{args.base_connections} on the other; "
          f"{args.seconds} s per run, median of {args.repeat} rounds\n")
    print("| system | method | req/s | req/s best | p50 ms | p99 ms | added p50 ms | CPU µs/req | × naive | "
          "× Connexion | errors |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for method in ("GET", "POST"):
        direct = rounds.get(("nginx direct", method))
        peers = {name: rounds.get((name, method)) for name in ("naive FastAPI proxy", "Connexion 3.3")}
        for (name, m), results in rounds.items():
            if m != method:
                continue
            med = _median_round(results)
            p50 = statistics.median(r.p50_ms for r in results)
            added = "" if direct is None or name == "nginx direct" else \
                f"{p50 - statistics.median(r.p50_ms for r in direct):.2f}"
            ratios = [f"{med.rps / _median_round(peer).rps:.1f}" if peer and name.startswith("gateway") else ""
                      for peer in peers.values()]
            print(f"| {name} | {method} | {med.rps:,.0f} | {max(r.rps for r in results):,.0f} | {p50:.2f} | "
                  f"{statistics.median(r.p99_ms for r in results):.2f} | {added} | "
                  f"{_cpu(results)} | {' | '.join(ratios)} | "
                  f"{sum(r.errors for r in results)} |")
    print("\nreq/s, latencies and CPU: the median round; × naive / × Connexion: the gateway's median req/s over the "
          "peer's, same method, same run. CPU µs/req: user + system time of the system under test per request.")
    if args.json:
        args.json.write_text(json.dumps({f"{n} {m}": [r.__dict__ for r in rs] for (n, m), rs in rounds.items()},
                                        indent=1))


def report_overload(rounds: dict[tuple[str, str], list[Result]], sweep: dict[tuple[str, str, int], list[Result]],
                    args: argparse.Namespace) -> None:
    """Many more callers than one core serves promptly: what was served, how fast, and how fast the rest heard."""
    print("\n**Overload** (median round): served = 2xx answers, shed = 503; latencies per kind from each request's "
          "own send time (X-Request-ID stamped by wrk, echoed by the gateway; '-' for systems that do not echo it: "
          "wrk's all-answer figures are shown instead)\n")
    print(f"| system | method | connections | served req/s | vs -c{args.base_connections} | served p50 ms | "
          "served p99 ms | shed /s | shed max ms | slowest answer ms | socket errors | CPU % |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (name, method, c), results in sweep.items():
        med = _median_round(results)
        o = med.overload
        base = rounds.get((name, method))
        if o is not None and o.unstamped == 0:
            served_rps = o.served / med.seconds
            cells = [f"{served_rps:,.0f}", f"{o.served_p50_ms:.2f}", f"{o.served_p99_ms:.2f}",
                     f"{o.shed / med.seconds:,.0f}", f"{o.shed_max_ms:.1f}" if o.shed else "",
                     f"{max(o.served_max_ms, o.shed_max_ms):.1f}"]
        else:  # not echoed: every answer counted as served, wrk's latencies
            served_rps = med.rps * (1 - (med.errors - med.socket_errors) / max(med.requests, 1))
            cells = [f"{served_rps:,.0f}", f"{med.p50_ms:.2f}", f"{med.p99_ms:.2f}", "-", "-", "-"]
        ratio = f"{served_rps / _median_round(base).rps:.2f}" if base else ""
        print(f"| {name} | {method} | {c} | {cells[0]} | {ratio} | {cells[1]} | {cells[2]} | {cells[3]} | "
              f"{cells[4]} | {cells[5]} | {sum(r.socket_errors for r in results)} | {_busy(med)} |")


def _busy(r: Result) -> str:
    """The share of its core the system under test used during the run (how much of the core served anyone)."""
    cpu = r.cpu_us * r.requests / 1e6
    return "" if math.isnan(cpu) else f"{100 * cpu / r.seconds:.0f}"  # NaN: a system whose CPU is not measured


def report_single(single: dict[tuple[str, str], Result], args: argparse.Namespace) -> None:
    print(f"\n**One connection** (nothing queues; {args.single} s each, first round): the latency each system adds "
          "to a request by itself\n")
    print("| system | method | req/s | p50 ms | p99 ms | added p50 ms |\n|---|---|---:|---:|---:|---:|")
    for method in ("GET", "POST"):
        direct = single.get(("nginx direct", method))
        for (name, m), r in single.items():
            if m == method:
                added = "" if direct is None or name == "nginx direct" else f"{r.p50_ms - direct.p50_ms:.2f}"
                print(f"| {name} | {method} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {added} |")


def _cpu(results: list[Result]) -> str:
    cpu = statistics.median(r.cpu_us for r in results)
    return "" if cpu != cpu else f"{cpu:,.0f}"  # NaN: not measured (nginx)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


if __name__ == "__main__":
    main()
