"""Build the gateway's ASGI application from settings: compile contracts, wire the shell, return the edge."""

from __future__ import annotations

import gc
import os
from pathlib import Path

from gateway.http.edge import Edge
from gateway.runtime import Runtime
from gateway.settings import Settings, load_settings
from gateway.shell import build_shell

CONFIG_ENV = "GATEWAY_CONFIG"


def create_app(settings: Settings) -> Edge:
    """The ASGI app. Raises ContractError (every problem listed) if any contract cannot be served."""
    runtime = Runtime.build(settings)
    edge = Edge(runtime, build_shell(runtime))
    runtime.monitoring.synthetic.app = edge  # golden paths run through the whole gateway, in process
    return edge


def create_app_from_env() -> Edge:
    """Factory for `uvicorn --factory` and worker processes: the config file path comes from $GATEWAY_CONFIG."""
    path = os.environ.get(CONFIG_ENV)
    app = create_app(load_settings(Path(path) if path else None))
    freeze_startup()
    return app


def freeze_startup() -> None:
    """Move everything built at start-up (compiled contracts, validators, settings, imported modules) out of the
    garbage collector's sight: it lives as long as the process, and full collections walking it on the request
    path were the benchmark's p99 (docs/performance.md). Then collect the young generation less often."""
    gc.collect()
    gc.freeze()
    # A young-generation collection every 10,000 net allocations rather than 700: a request allocates a few
    # hundred short-lived containers, nearly all freed by reference counting, so most collections found nothing.
    # POST 123 -> 115 CPU µs per request in the benchmark, p99 unchanged (docs/performance.md). The older
    # generations keep their default ratios (every 10 younger collections).
    gc.set_threshold(10_000, 10, 10)
