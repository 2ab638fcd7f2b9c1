"""`gateway trace REQUEST_ID`: what happened to one request, from a JSON log file or the running gateway."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from gateway.settings import Settings

from .common import add_config, builtin_issuer, config_path, settings_of


def cmd_trace(args: argparse.Namespace) -> int:
    """What happened to one request: its story from a JSON log file or from the running gateway's recent lines."""
    import json

    from gateway.observability.story import lines_from_file, tell

    settings = settings_of(args)
    if args.url:
        import httpx

        token = args.token or os.environ.get("GATEWAY_ADMIN_TOKEN") or _operator_token(settings, args.config)
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


def _operator_token(settings: Settings, config: str | None) -> str:
    """A one-minute gateway:admin token from the built-in issuer (this host holds its signing key)."""
    from gateway.admin.access import ADMIN_SCOPE

    if config_path(config) is None:  # run outside the gateway's folder: nothing says which issuer, which key
        print("no gateway.yaml here: pass --config (the gateway's configuration, whose issuer mints an operator "
              "token), or --token (or GATEWAY_ADMIN_TOKEN)", file=sys.stderr)
        raise SystemExit(2)
    issuer = builtin_issuer(settings)
    if issuer is None:
        print("give --token (or GATEWAY_ADMIN_TOKEN): the built-in issuer is not enabled", file=sys.stderr)
        raise SystemExit(2)
    return issuer.mint("gateway-cli", [ADMIN_SCOPE], 60)


def register(sub: Any) -> None:
    p = sub.add_parser("trace", help="what happened to a request: policies, vendor attempts, outcome, whose fault")
    p.add_argument("request_id")
    add_config(p)
    p.add_argument("--log", help="a JSON log file (default: observability.logging.output when it is a file)")
    p.add_argument("--url", help="ask the running gateway instead (its recent in-memory lines), e.g. "
                                 "http://127.0.0.1:8080")
    p.add_argument("--token", help="gateway:admin token for --url (default: $GATEWAY_ADMIN_TOKEN, or minted with "
                                   "the built-in issuer's key)")
    p.add_argument("--json", action="store_true", help="the raw log lines instead of the story")
    p.set_defaults(func=cmd_trace)
