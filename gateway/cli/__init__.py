"""The `gateway` command. One module per group of subcommands, each with a `register(subparsers)`:

    contracts.py   check, diff
    init.py        init (serve a third-party OpenAPI document)
    serve.py       serve, demo, sandbox
    jobs.py        worker, dlq
    trace.py       trace
    auth.py        hash-secret, api-key, token
    monitoring.py  reconcile, slo, exceptions, synthetic
    drift.py       drift (vendor answers that differ from the vendor's contract)
    events.py      asyncapi, events tail, events replay
"""

from __future__ import annotations

import argparse

from . import auth, contracts, drift, events, init, jobs, monitoring, serve, trace

GROUPS = (contracts, init, serve, jobs, trace, auth, monitoring, drift, events)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description="contract-first API gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)
