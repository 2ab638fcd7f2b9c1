"""Build the gateway's ASGI application from settings: compile contracts, wire the shell, return the edge."""

from __future__ import annotations

import os
from pathlib import Path

from gateway.edge import Edge
from gateway.runtime import Runtime
from gateway.settings import Settings, load_settings
from gateway.shell import build_shell

CONFIG_ENV = "GATEWAY_CONFIG"


def create_app(settings: Settings) -> Edge:
    """The ASGI app. Raises ContractError (every problem listed) if any contract cannot be served."""
    runtime = Runtime.build(settings)
    return Edge(runtime, build_shell(runtime))


def create_app_from_env() -> Edge:
    """Factory for `uvicorn --factory` and worker processes: the config file path comes from $GATEWAY_CONFIG."""
    path = os.environ.get(CONFIG_ENV)
    return create_app(load_settings(Path(path) if path else None))
