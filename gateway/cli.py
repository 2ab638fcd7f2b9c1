"""`gateway` command: serve, check, sandbox, demo."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from gateway.auth.issuer import BuiltinIssuer

DEFAULT_CONFIG = Path("gateway.yaml")


def _config_path(arg: str | None) -> Path | None:
    if arg:
        return Path(arg)
    if os.environ.get("GATEWAY_CONFIG"):
        return Path(os.environ["GATEWAY_CONFIG"])
    return DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None


def _settings(args: argparse.Namespace, **overrides: object) -> Settings:
    try:
        return load_settings(_config_path(args.config), {k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        print(f"configuration error:\n{exc}", file=sys.stderr)
        raise SystemExit(1) from None


def cmd_check(args: argparse.Namespace) -> int:
    from gateway.runtime import check

    overrides = {"contracts": [str(Path(p).resolve()) for p in args.paths]} if args.paths else {}
    settings = _settings(args, **overrides)
    contracts, operations, problems = check(settings)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem{'s' if len(problems) != 1 else ''} found", file=sys.stderr)
        return 1
    print(f"ok: {len(contracts)} contracts, {len(operations)} operations")
    return 0


def _contracts_at(ref: str, folder: Path, into: Path) -> Path:
    """Extract `folder` as it was at git revision `ref` into `into`; SystemExit with git's reason on failure."""
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=folder, capture_output=True, text=True)
    if top.returncode != 0:
        raise SystemExit(f"--base needs a git checkout: {top.stderr.strip()}")
    root = Path(top.stdout.strip())
    rel = folder.resolve().relative_to(root)
    archive = subprocess.run(["git", "archive", "--format=tar", ref, str(rel)], cwd=root, capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(f"cannot read {rel} at {ref}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / rel


def cmd_diff(args: argparse.Namespace) -> int:
    import json
    import tempfile

    from gateway.contracts.diff import diff_paths

    with tempfile.TemporaryDirectory() as tmp:
        if args.base:
            new = [Path(args.paths[0])] if args.paths else [Path("contracts")]
            old = [_contracts_at(args.base, new[0], Path(tmp))]
        elif len(args.paths) == 2:
            old, new = [Path(args.paths[0])], [Path(args.paths[1])]
        else:
            print("usage: gateway diff OLD NEW  |  gateway diff --base GIT_REF [CONTRACTS_DIR]", file=sys.stderr)
            return 2
        report, errors = diff_paths(old, new)
    if errors:
        print("cannot compare, contracts do not load:", *errors, sep="\n  ", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps({"breaking": len(report.breaking), "changes": [c.as_dict() for c in report.changes]},
                         indent=2))
    else:
        for change in report.changes:
            print(change)
        print(f"{len(report.changes)} changes, {len(report.breaking)} breaking", file=sys.stderr)
    return 1 if report.breaking else 0


def cmd_hash_secret(args: argparse.Namespace) -> int:
    """Hash a client secret for auth.builtin.clients.<id>.secret_hash (the secret is read, never echoed)."""
    import getpass

    from gateway.auth.secrets import hash_secret

    secret = sys.stdin.readline().rstrip("\n") if not sys.stdin.isatty() else getpass.getpass("client secret: ")
    if len(secret) < 12:
        print("refusing a secret shorter than 12 characters", file=sys.stderr)
        return 1
    print(hash_secret(secret))
    return 0


def cmd_api_key(args: argparse.Namespace) -> int:
    """Generate an API key: print it once, and the entry for auth.api_keys (which stores only its digest)."""
    import yaml

    from gateway.auth.secrets import hash_api_key, new_api_key

    key = new_api_key()
    print(f"API key (shown once, give it to the partner): {key}", file=sys.stderr)
    entry = {"id": args.id or f"{args.client}-{key[-6:]}", "hash": hash_api_key(key), "client_id": args.client,
             "scopes": args.scopes}
    print(yaml.safe_dump([entry], sort_keys=False).rstrip())
    return 0


def _builtin_issuer(settings: Settings) -> BuiltinIssuer | None:
    """The built-in issuer with this host's signing keys, or None when the configuration does not enable it."""
    from gateway.auth.issuer import BuiltinIssuer
    from gateway.auth.keys import load_signing_keys

    builtin = settings.auth.builtin
    return BuiltinIssuer(builtin, load_signing_keys(builtin, settings.base_dir)) if builtin.enabled else None


def cmd_token(args: argparse.Namespace) -> int:
    """Mint an access token with the built-in issuer's key (operators, scripts, benchmarks)."""
    issuer = _builtin_issuer(_settings(args))
    if issuer is None:
        print("auth.builtin is not enabled in this configuration", file=sys.stderr)
        return 1
    print(issuer.mint(args.client, args.scopes, args.ttl))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run jobs only (no HTTP): for the shared PostgreSQL store, as many of these as you like on any hosts."""
    import asyncio

    from gateway.contracts.load import ContractError
    from gateway.runtime import Runtime

    settings = _settings(args)
    if args.concurrency is not None:
        settings = settings.model_copy(update={"jobs": settings.jobs.model_copy(update={"workers":
                                                                                        args.concurrency})})
    if settings.jobs.workers < 1:
        print("jobs.workers is 0: this worker would run nothing", file=sys.stderr)
        return 1
    try:
        runtime = Runtime.build(settings)  # logs as the gateway does: JSON lines per observability.logging
    except ContractError as exc:
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await runtime.startup()
        print(f"worker {runtime.jobs.runner.owner if runtime.jobs.runner else '-'} running "
              f"({settings.jobs.backend}, {settings.jobs.workers} at a time)", flush=True)
        await stop.wait()
        await runtime.shutdown()

    asyncio.run(run())
    return 0


def _parse_time(value: str | None) -> float | None:
    if value is None:
        return None
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def cmd_dlq(args: argparse.Namespace) -> int:
    """Dead letters: list, show, replay, discard (the same as the admin endpoints)."""
    import asyncio
    import json

    from gateway.jobs.model import DeadLetterFilter
    from gateway.jobs.service import job_store

    settings = _settings(args)
    store = job_store(settings)

    async def run() -> int:
        await store.start()
        try:
            if args.action == "list":
                flt = DeadLetterFilter(vendor=args.vendor, operation=args.operation, since=_parse_time(args.since),
                                       until=_parse_time(args.until), error=args.error, limit=args.limit)
                for job in await store.dead_letters(flt):
                    last = (job.history or [{}])[-1]
                    print(f"{job.id}  {job.name:32} {job.vendor or '-':12} attempts={job.attempts:<3} "
                          f"{last.get('at', '-')}  {last.get('error', (job.problem or {}).get('type', ''))}")
                return 0
            if args.action == "show":
                job = await store.get(args.id)
                if job is None:
                    print(f"no job {args.id}", file=sys.stderr)
                    return 1
                print(json.dumps(dead_letter_view(job), indent=2, default=str))
                return 0
            if args.action == "discard":
                ok = await store.discard(args.id, args.reason)
                print("discarded" if ok else f"{args.id} is not a dead letter")
                return 0 if ok else 1
            if not args.id and args.since is None and args.until is None:
                print("give a dead letter's id, or --since/--until to replay a time range", file=sys.stderr)
                return 2
            ids = [args.id] if args.id else [j.id for j in await store.dead_letters(DeadLetterFilter(
                since=_parse_time(args.since), until=_parse_time(args.until), limit=10_000))]
            failed = 0
            for job_id in ids:
                if args.dry_run:
                    print(f"would replay {job_id}")
                elif await store.replay(job_id):
                    print(f"replayed {job_id}")
                else:
                    failed += 1
                    print(f"{job_id} is not a dead letter (nothing replayed)", file=sys.stderr)
            return 1 if failed else 0
        finally:
            await store.close()

    return asyncio.run(run())


def dead_letter_view(job: object) -> dict:
    from gateway.jobs.admin import dead_letter

    return dead_letter(job)  # type: ignore[arg-type]


def cmd_trace(args: argparse.Namespace) -> int:
    """What happened to one request: its story from a JSON log file or from the running gateway's recent lines."""
    import json

    from gateway.story import lines_from_file, tell

    settings = _settings(args)
    if args.url:
        import httpx

        token = args.token or os.environ.get("GATEWAY_ADMIN_TOKEN") or _operator_token(settings)
        r = httpx.get(f"{args.url.rstrip('/')}/admin/requests/{args.request_id}",
                      headers={"authorization": f"Bearer {token}"}, timeout=10)
        if r.status_code == 404:
            print(f"request {args.request_id}: not among the gateway's recent log lines", file=sys.stderr)
            return 1
        r.raise_for_status()
        lines = r.json()["lines"]
    else:
        output = args.log or settings.observability.logging.output
        if output in ("stdout", "stderr", "none"):
            print("logs go to " + output + " in this configuration: give --log FILE (JSON lines) or --url of the "
                  "running gateway", file=sys.stderr)
            return 2
        path = Path(output) if Path(output).is_absolute() or args.log else settings.base_dir / output
        lines = lines_from_file(path, args.request_id)
    if args.json:
        print(json.dumps(lines, indent=2))
    else:
        print(tell(args.request_id, lines))
    return 0 if lines else 1


def _operator_token(settings: Settings) -> str:
    """A one-minute gateway:admin token from the built-in issuer (this host holds its signing key)."""
    from gateway.admin import ADMIN_SCOPE

    issuer = _builtin_issuer(settings)
    if issuer is None:
        print("give --token (or GATEWAY_ADMIN_TOKEN): the built-in issuer is not enabled", file=sys.stderr)
        raise SystemExit(2)
    return issuer.mint("gateway-cli", [ADMIN_SCOPE], 60)


def _multiprocess_metrics(settings: Settings) -> None:
    """Several workers: prometheus-client's multiprocess mode, set up before any worker imports gateway.metrics."""
    if not settings.observability.metrics.enabled or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    import tempfile

    folder = settings.observability.metrics.multiprocess_dir
    if folder is None:
        folder = Path(tempfile.mkdtemp(prefix="cg-metrics-"))
    elif not folder.is_absolute():
        folder = settings.base_dir / folder
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):  # samples of a previous run would be added to this one's
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _settings(args)
    host = args.host or settings.server.host
    port = args.port if args.port is not None else settings.server.port
    workers = args.workers or settings.server.workers
    if workers > 1:
        _multiprocess_metrics(settings)

    from gateway.app import CONFIG_ENV, create_app, freeze_startup
    from gateway.contracts.load import ContractError
    logging.basicConfig(level=os.environ.get("GATEWAY_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if workers > 1:
        shared = [f"{name}: memory keeps its state per process, so with --workers {workers} {what}; use "
                  f"{name}: redis with redis_url, or one worker"
                  for name, backend, what in (
                      ("limits.backend", settings.limits.backend, f"every limit would allow {workers} times as much"),
                      ("idempotency.backend", settings.idempotency.backend,
                       "a key used on one worker would run again on another"))
                  if backend == "memory"]
        if shared:
            print("the gateway refuses to start:", *shared, sep="\n  ", file=sys.stderr)
            return 1
    try:
        app = create_app(settings)
    except ContractError as exc:
        print("the gateway cannot start; contract problems:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    # proxy_headers off: uvicorn would otherwise believe X-Forwarded-For from 127.0.0.1; the gateway decides
    # which proxies to trust itself (limits.trusted_proxies).
    # http: uvicorn's httptools protocol, each answer sent with one write (gateway/server.py).
    common = dict(host=host, port=port, loop="uvloop", http="gateway.server:HttpProtocol", access_log=False,
                  lifespan="on", log_level="warning", timeout_graceful_shutdown=10, proxy_headers=False)
    if workers == 1:
        freeze_startup()
        uvicorn.run(app, **common)  # type: ignore[arg-type]
    else:
        config = _config_path(args.config)
        if config is not None:
            os.environ[CONFIG_ENV] = str(config.resolve())
        uvicorn.run("gateway.app:create_app_from_env", factory=True, workers=workers, **common)  # type: ignore[arg-type]
    return 0


def cmd_sandbox(args: argparse.Namespace) -> int:
    from adapters.sandbox import serve_sandboxes

    serve_sandboxes(args.host, {"stripe": args.stripe_port, "hubspot": args.hubspot_port,
                                "woocommerce": args.woocommerce_port})
    return 0


def _wait_for_port(host: str, port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex((host, port)) == 0:
                return True
        time.sleep(0.05)
    return False


def cmd_demo(args: argparse.Namespace) -> int:
    """The sandboxes in a child process, then the gateway in front of them."""
    child = subprocess.Popen([sys.executable, "-m", "gateway", "sandbox"])
    try:
        for port in (8101, 8102, 8103):
            if not _wait_for_port("127.0.0.1", port, 15):
                print(f"sandbox did not start on port {port}", file=sys.stderr)
                return 1
        print("sandbox vendors: stripe http://127.0.0.1:8101  hubspot http://127.0.0.1:8102  "
              "woocommerce http://127.0.0.1:8103", flush=True)
        _wire_sandbox_webhooks(_settings(args))
        print("gateway: http://127.0.0.1:8080  (docs: http://127.0.0.1:8080/docs)", flush=True)
        print("a token: curl -s -u demo-partner:demo-partner-secret -d grant_type=client_credentials "
              "http://127.0.0.1:8080/oauth/token", flush=True)
        return cmd_serve(args)
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()


def _wire_sandbox_webhooks(settings: Settings) -> None:
    """The Stripe sandbox reports payments to this gateway's /webhooks/stripe, signed with the configured secret."""
    import httpx

    stripe = settings.webhooks.inbound.get("stripe")
    if stripe is None:
        return
    url = f"http://{settings.server.host}:{settings.server.port}/webhooks/stripe"
    httpx.put("http://127.0.0.1:8101/_sandbox/webhooks", json={
        "url": url, "secret": stripe.secrets[0].get_secret_value(), "scheme": "stripe"}).raise_for_status()
    print(f"stripe sandbox: payment_intent.succeeded events go to {url}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description="contract-first API gateway")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("check", help="validate contracts (and routes against gateway.yaml); exit 1 on problems")
    p.add_argument("paths", nargs="*", help="contract files or folders (default: those in the config)")
    p.add_argument("--config", help="gateway.yaml (default: $GATEWAY_CONFIG or ./gateway.yaml)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("diff", help="breaking and non-breaking changes between contract versions; exit 1 if breaking")
    p.add_argument("paths", nargs="*", help="OLD NEW (files or folders), or with --base: the contracts folder")
    p.add_argument("--base", help="compare the contracts folder with its state at this git revision")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("hash-secret", help="hash a client secret (read from stdin) for gateway.yaml")
    p.set_defaults(func=cmd_hash_secret)

    p = sub.add_parser("api-key", help="generate an API key and the gateway.yaml entry for it")
    p.add_argument("--client", required=True, help="the client id the key authenticates as")
    p.add_argument("--scopes", nargs="*", default=[])
    p.add_argument("--id", help="a name for the key (default: client and a suffix)")
    p.set_defaults(func=cmd_api_key)

    p = sub.add_parser("token", help="mint an access token with the built-in issuer's signing key")
    p.add_argument("--config", help="gateway.yaml (default: $GATEWAY_CONFIG or ./gateway.yaml)")
    p.add_argument("--client", required=True)
    p.add_argument("--scopes", nargs="*", default=[])
    p.add_argument("--ttl", type=int, default=None, help="lifetime in seconds (default: the issuer's)")
    p.set_defaults(func=cmd_token)

    for name, func, text in (("serve", cmd_serve, "serve the gateway"),
                             ("demo", cmd_demo, "serve the sandbox vendors and the gateway in front of them")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--config", help="gateway.yaml (default: $GATEWAY_CONFIG or ./gateway.yaml)")
        p.add_argument("--host")
        p.add_argument("--port", type=int)
        p.add_argument("--workers", type=int)
        p.set_defaults(func=func)

    p = sub.add_parser("worker", help="run asynchronous jobs (no HTTP), e.g. next to gateways on PostgreSQL")
    p.add_argument("--config", help="gateway.yaml (default: $GATEWAY_CONFIG or ./gateway.yaml)")
    p.add_argument("--concurrency", type=int, help="jobs at a time (default: jobs.workers)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("dlq", help="dead letters: list, show, replay, discard")
    p.add_argument("--config", help="gateway.yaml (default: $GATEWAY_CONFIG or ./gateway.yaml)")
    dlq = p.add_subparsers(dest="action", required=True)
    # --config is accepted after the action too (`gateway dlq list --config x.yaml`), as people type it.
    config_too = argparse.ArgumentParser(add_help=False)
    config_too.add_argument("--config", default=argparse.SUPPRESS, help="gateway.yaml")
    q = dlq.add_parser("list", parents=[config_too])
    for name in ("vendor", "operation", "since", "until", "error"):
        q.add_argument(f"--{name}")
    q.add_argument("--limit", type=int, default=100)
    q = dlq.add_parser("show", parents=[config_too])
    q.add_argument("id")
    q = dlq.add_parser("replay", parents=[config_too])
    q.add_argument("id", nargs="?")
    q.add_argument("--since")
    q.add_argument("--until")
    q.add_argument("--dry-run", action="store_true")
    q = dlq.add_parser("discard", parents=[config_too])
    q.add_argument("id")
    q.add_argument("--reason", required=True)
    p.set_defaults(func=cmd_dlq)

    p = sub.add_parser("trace", help="what happened to a request: policies, vendor attempts, outcome, whose fault")
    p.add_argument("request_id")
    p.add_argument("--config", help="gateway.yaml (default: $GATEWAY_CONFIG or ./gateway.yaml)")
    p.add_argument("--log", help="a JSON log file (default: observability.logging.output when it is a file)")
    p.add_argument("--url", help="ask the running gateway instead (its recent in-memory lines), e.g. "
                                 "http://127.0.0.1:8080")
    p.add_argument("--token", help="gateway:admin token for --url (default: $GATEWAY_ADMIN_TOKEN, or minted with "
                                   "the built-in issuer's key)")
    p.add_argument("--json", action="store_true", help="the raw log lines instead of the story")
    p.set_defaults(func=cmd_trace)

    p = sub.add_parser("sandbox", help="serve the sandbox vendors (Stripe, HubSpot, WooCommerce simulators)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--stripe-port", type=int, default=8101)
    p.add_argument("--hubspot-port", type=int, default=8102)
    p.add_argument("--woocommerce-port", type=int, default=8103)
    p.set_defaults(func=cmd_sandbox)

    args = parser.parse_args(argv)
    return int(args.func(args) or 0)
