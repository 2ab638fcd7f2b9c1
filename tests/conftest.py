"""Shared fixtures: real servers on loopback sockets (sandbox vendors, upstream services, the gateway itself)."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"


class ServerThread:
    """An ASGI app served by uvicorn on an ephemeral loopback port, in a background thread with its own loop."""

    def __init__(self, app: Any, lifespan: str = "on", timeout_keep_alive: float = 5) -> None:
        import uvicorn

        from gateway.http.listen import bind

        [self.sock] = bind("127.0.0.1", 0)  # an ephemeral port, bound as `gateway serve` binds
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan=lifespan, loop="uvloop",
                                http="gateway.http.server:HttpProtocol", timeout_graceful_shutdown=2,
                                proxy_headers=False, timeout_keep_alive=timeout_keep_alive)  # type: ignore[arg-type]
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        from gateway.http.listen import new_event_loop

        try:  # uvloop accepting by the batch, as `gateway serve` runs it
            with asyncio.Runner(loop_factory=new_event_loop) as runner:
                runner.run(self.server.serve(sockets=[self.sock]))
        except BaseException as exc:  # surfaced by start()
            self.error = exc

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = 200
        while not self.server.started and self.thread.is_alive() and deadline:
            self.thread.join(0.05)
            deadline -= 1
        if not self.server.started:
            raise RuntimeError(f"server did not start: {self.error!r}")
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="session")
def sandboxes() -> Iterator[Any]:
    """The three vendor sandboxes on ephemeral ports, shared by the whole run (tests reset what they use)."""
    from sandboxes.base import SandboxThread

    thread = SandboxThread().start()
    yield thread


# Signing keys of the built-in issuer for this test run (the demo config would create them under var/).
TEST_KEYS = Path(tempfile.mkdtemp(prefix="cg-test-keys-"))
# The demo's vendors, from gateway.yaml: tests that name every vendor read this, so a new vendor needs no test edit.
VENDORS = sorted(yaml.safe_load((ROOT / "gateway.yaml").read_text())["vendors"])
UNREACHABLE = {name: "http://127.0.0.1:9" for name in VENDORS}  # base URLs for checks that never call a vendor
ALL_SCOPES = ["orders:read", "orders:write", "customers:read", "customers:write", "payments:read", "payments:write",
              "shipping:read", "shipping:write"]


def demo_settings(sandbox_urls: dict[str, str], **overrides: Any) -> Settings:
    """gateway.yaml (the demo configuration) with vendors pointed at the given sandbox URLs."""
    values: dict[str, Any] = {f"vendors.{name}.base_url": url for name, url in sandbox_urls.items()}
    values["auth.builtin.keys_dir"] = str(TEST_KEYS)
    values["jobs.sqlite_path"] = str(Path(tempfile.mkdtemp(prefix="cg-jobs-")) / "jobs.db")
    values.update(overrides)
    return load_settings(ROOT / "gateway.yaml", values)


def bearer(app: Any, client: str = "demo-partner", scopes: list[str] | None = None) -> dict[str, str]:
    """An Authorization header with a token the app's built-in issuer signed."""
    token = app.runtime.auth.issuer.mint(client, ALL_SCOPES if scopes is None else scopes)
    return {"authorization": f"Bearer {token}"}


@pytest.fixture
def serve_gateway() -> Iterator[Callable[[Settings], ServerThread]]:
    """Start the gateway for given settings over a real socket; stopped after the test."""
    from gateway.app import create_app

    started: list[ServerThread] = []

    def start(settings: Settings) -> ServerThread:
        server = ServerThread(create_app(settings)).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def demo_gateway(sandboxes: Any) -> Iterator[Callable[..., tuple[Any, Any]]]:
    """`run(**overrides) -> (app, client)`: the demo config in front of freshly reset sandboxes, over a real socket.

    The client carries a token with every demo scope. `prepare(app)`, if given, runs before the server starts.
    Afterwards the servers stop and the sandboxes' faults are cleared.
    """
    import httpx

    from gateway.app import create_app

    servers: list[ServerThread] = []
    clients: list[httpx.Client] = []
    for url in sandboxes.urls.values():
        httpx.post(url + "/_sandbox/reset").raise_for_status()

    def run(prepare: Callable[[Any], None] | None = None, **overrides: Any) -> tuple[Any, Any]:
        app = create_app(demo_settings(sandboxes.urls, **overrides))
        if prepare is not None:
            prepare(app)
        server = ServerThread(app).start()
        servers.append(server)
        clients.append(httpx.Client(base_url=server.url, timeout=30, headers=bearer(app)))
        return app, clients[-1]

    yield run
    for client in clients:
        client.close()
    for server in servers:
        server.stop()
    for url in sandboxes.urls.values():
        httpx.delete(url + "/_sandbox/faults").raise_for_status()


@pytest.fixture
def serve_app() -> Iterator[Callable[[Any], ServerThread]]:
    """Start any ASGI app (an upstream service for the http adapter) over a real socket."""
    started: list[ServerThread] = []

    def start(app: Any) -> ServerThread:
        server = ServerThread(app, lifespan="off").start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A real Redis (found or started; see tests/services.py). Tests use their own key prefixes."""
    from tests.services import redis_url as find

    return find()


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """A real PostgreSQL (found or started; see tests/services.py). Tests create their own databases or schemas."""
    from tests.services import postgres_dsn as find

    return find()


@pytest.fixture
def private_redis() -> Iterator[Any]:
    """A Redis of this test's own, which it may stop and start again to simulate an outage."""
    from tests.services import RedisProcess

    server = RedisProcess().start()
    yield server
    server.stop()
