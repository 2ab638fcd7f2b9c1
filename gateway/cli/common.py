"""What every `gateway` command shares: finding gateway.yaml, loading settings, the built-in issuer, times."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from gateway.auth.issuer import BuiltinIssuer

DEFAULT_CONFIG = Path("gateway.yaml")
CONFIG_HELP = "gateway.yaml (default: $GATEWAY_CONFIG or ./gateway.yaml)"


def add_config(parser: argparse.ArgumentParser, **kwargs: object) -> None:
    parser.add_argument("--config", help=CONFIG_HELP, **kwargs)  # type: ignore[arg-type]


def config_path(arg: str | None) -> Path | None:
    if arg:
        return Path(arg)
    if os.environ.get("GATEWAY_CONFIG"):
        return Path(os.environ["GATEWAY_CONFIG"])
    return DEFAULT_CONFIG if DEFAULT_CONFIG.exists() else None


def settings_of(args: argparse.Namespace, **overrides: object) -> Settings:
    """The settings the command runs with; a configuration error is printed and exits 1 (never a traceback)."""
    try:
        return load_settings(config_path(getattr(args, "config", None)),
                             {k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        print(f"configuration error:\n{exc}", file=sys.stderr)
        raise SystemExit(1) from None


def builtin_issuer(settings: Settings) -> BuiltinIssuer | None:
    """The built-in issuer with this host's signing keys, or None when the configuration does not enable it."""
    from gateway.auth.issuer import BuiltinIssuer
    from gateway.auth.keys import load_signing_keys

    builtin = settings.auth.builtin
    return BuiltinIssuer(builtin, load_signing_keys(builtin, settings.base_dir)) if builtin.enabled else None


def parse_time(value: str | None) -> float | None:
    if value is None:
        return None
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
