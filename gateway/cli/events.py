"""`gateway asyncapi`, `gateway events tail` and `gateway events replay` (docs/events.md)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from .common import add_config, settings_of


def cmd_asyncapi(args: argparse.Namespace) -> int:
    import json

    from gateway.contracts.report import summarize
    from gateway.events.asyncapi import document
    from gateway.events.catalog import Catalog
    from gateway.runtime import check_all

    settings = settings_of(args)
    contracts, _, problems, _ = check_all(settings)
    if problems:
        for line in summarize(problems):
            print(line, file=sys.stderr)
        return 1
    catalog = Catalog(contracts, settings.events)
    for problem in catalog.problems:
        print(f"warning: {problem}", file=sys.stderr)
    text = json.dumps(document(catalog, settings.events.url), indent=2)
    if args.output:
        with open(args.output, "w") as f:
            f.write(text + "\n")
        print(f"wrote {args.output}: {len(catalog.by_subject)} event types", file=sys.stderr)
    else:
        print(text)
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    from gateway.events.consume import connect, parse_time, replay, tail, type_filter

    settings = settings_of(args).events
    subject = args.subject or type_filter(settings.subject_prefix, args.type, args.api)
    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if getattr(args, "until", None) else None
    except ValueError as exc:
        print(f"bad time: {exc} (use ISO 8601, e.g. 2026-05-01T12:00:00Z)", file=sys.stderr)
        return 2

    async def run() -> int:
        try:
            nc = await connect(settings.url)
        except Exception as exc:  # noqa: BLE001 - unreachable NATS: one line, no traceback
            print(f"cannot reach NATS at {settings.url}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        js = nc.jetstream()
        count = 0
        try:
            if args.action == "replay":
                assert since is not None
                found: Any = replay(js, subject, args.consumer, since, until, idle_s=args.idle)
            else:
                found = tail(js, subject, since, limit=args.limit, idle_s=args.idle)
            async for got in found:
                sys.stdout.buffer.write(got.line() + b"\n")
                sys.stdout.flush()
                count += 1
        except Exception as exc:  # noqa: BLE001 - e.g. no stream holds this subject
            print(f"{args.action} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        finally:
            await nc.close()
        print(f"{count} events", file=sys.stderr)
        return 0

    try:
        return asyncio.run(run())
    except KeyboardInterrupt:
        return 130


def register(sub: Any) -> None:
    p = sub.add_parser("asyncapi", help="the AsyncAPI 3.0 document of the contracts' events")
    add_config(p)
    p.add_argument("--output", "-o", help="write it to this file (default: stdout)")
    p.set_defaults(func=cmd_asyncapi)

    p = sub.add_parser("events", help="read the event backbone: tail, replay")
    add_config(p)
    actions = p.add_subparsers(dest="action", required=True)
    config_too = argparse.ArgumentParser(add_help=False)
    add_config(config_too, default=argparse.SUPPRESS)
    for name in ("tail", "replay"):
        q = actions.add_parser(name, parents=[config_too])
        q.add_argument("--type", help="an event type, e.g. order.created (default: every type)")
        q.add_argument("--api", help="only this API's events")
        q.add_argument("--subject", help="a NATS subject filter instead of --type/--api")
        if name == "tail":
            q.add_argument("--since", help="start at this time (ISO 8601; default: new events only)")
            q.add_argument("--limit", type=int, help="stop after this many events")
            q.add_argument("--idle", type=float, help="stop after this many seconds without an event")
        else:
            q.add_argument("--consumer", required=True, help="the durable consumer to replay through")
            q.add_argument("--since", required=True, help="start of the window (ISO 8601)")
            q.add_argument("--until", help="end of the window (ISO 8601; default: up to the newest event)")
            q.add_argument("--idle", type=float, default=1.0, help="end when nothing arrives for this long (s)")
    p.set_defaults(func=cmd_events)
