"""`gateway worker` and `gateway dlq`: run asynchronous jobs without HTTP, and operate on dead letters."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from .common import add_config, parse_time, settings_of


def cmd_worker(args: argparse.Namespace) -> int:
    """Run jobs only (no HTTP): for the shared PostgreSQL store, as many of these as you like on any hosts."""
    import asyncio

    from gateway.contracts.load import ContractError
    from gateway.runtime import Runtime

    settings = settings_of(args)
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


def cmd_dlq(args: argparse.Namespace) -> int:
    """Dead letters: list, show, replay, discard (the same as the admin endpoints)."""
    import asyncio
    import json
    import logging

    from gateway.admin.dlq import dead_letter
    from gateway.jobs.model import DeadLetterFilter, StoreDown
    from gateway.jobs.service import job_store

    settings = settings_of(args)
    # An operator at a terminal waits longer than a request does; an unreachable store is said once, below.
    store = job_store(settings, timeout_s=10.0)
    logging.disable(logging.CRITICAL)

    async def run() -> int:
        await store.start()
        try:
            return await act()
        except StoreDown as exc:
            print(f"the job store cannot be reached: {exc}", file=sys.stderr)
            return 1
        finally:
            await store.close()

    async def act() -> int:
        if args.action == "list":
            flt = DeadLetterFilter(vendor=args.vendor, operation=args.operation, since=parse_time(args.since),
                                   until=parse_time(args.until), error=args.error, limit=args.limit)
            for job in await store.dead_letters(flt):
                last = (job.history or [{}])[-1]
                print(f"{job.id}  {job.name:32} {job.vendor or '-':12} attempts={job.attempts:<3} "
                      f"{last.get('at', '-')}  {last.get('error', (job.problem or {}).get('type', ''))}")
            return 0
        if args.action == "show":
            found = await store.get(args.id)
            if found is None:
                print(f"no job {args.id}", file=sys.stderr)
                return 1
            print(json.dumps(dead_letter(found), indent=2, default=str))
            return 0
        if args.action == "discard":
            ok = await store.discard(args.id, args.reason)
            print("discarded" if ok else f"{args.id} is not a dead letter")
            return 0 if ok else 1
        if not args.id and args.since is None and args.until is None:
            print("give a dead letter's id, or --since/--until to replay a time range", file=sys.stderr)
            return 2
        ids = [args.id] if args.id else [j.id for j in await store.dead_letters(DeadLetterFilter(
            since=parse_time(args.since), until=parse_time(args.until), limit=10_000))]
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

    return asyncio.run(run())


def register(sub: Any) -> None:
    p = sub.add_parser("worker", help="run asynchronous jobs (no HTTP), e.g. next to gateways on PostgreSQL")
    add_config(p)
    p.add_argument("--concurrency", type=int, help="jobs at a time (default: jobs.workers)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("dlq", help="dead letters: list, show, replay, discard")
    add_config(p)
    dlq = p.add_subparsers(dest="action", required=True)
    # --config is accepted after the action too (`gateway dlq list --config x.yaml`), as people type it.
    config_too = argparse.ArgumentParser(add_help=False)
    add_config(config_too, default=argparse.SUPPRESS)
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
