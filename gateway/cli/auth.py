"""`gateway hash-secret`, `gateway api-key`, `gateway token`: credentials for gateway.yaml and for scripts."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .common import add_config, builtin_issuer, settings_of


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


def cmd_token(args: argparse.Namespace) -> int:
    """Mint an access token with the built-in issuer's key (operators, scripts, benchmarks)."""
    issuer = builtin_issuer(settings_of(args))
    if issuer is None:
        print("auth.builtin is not enabled in this configuration", file=sys.stderr)
        return 1
    print(issuer.mint(args.client, args.scopes, args.ttl))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("hash-secret", help="hash a client secret (read from stdin) for gateway.yaml")
    p.set_defaults(func=cmd_hash_secret)

    p = sub.add_parser("api-key", help="generate an API key and the gateway.yaml entry for it")
    p.add_argument("--client", required=True, help="the client id the key authenticates as")
    p.add_argument("--scopes", nargs="*", default=[])
    p.add_argument("--id", help="a name for the key (default: client and a suffix)")
    p.set_defaults(func=cmd_api_key)

    p = sub.add_parser("token", help="mint an access token with the built-in issuer's signing key")
    add_config(p)
    p.add_argument("--client", required=True)
    p.add_argument("--scopes", nargs="*", default=[])
    p.add_argument("--ttl", type=int, default=None, help="lifetime in seconds (default: the issuer's)")
    p.set_defaults(func=cmd_token)
