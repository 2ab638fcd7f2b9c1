"""`gateway reconcile`, `gateway slo rules|dashboard`, `gateway exceptions ...`, `gateway synthetic run`.

The commands that touch vendors or the shared state start the gateway's runtime without workers or the
monitoring loop (the adapters and the store only), act, and stop. Exit statuses of `gateway reconcile`: 0 every
rule ran and agreed, 1 mismatches were found (they are in the exception queue), 2 a rule failed (a refusal or a
broken answer), 75 a vendor was unavailable and the run is paused (run the command again to resume it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .common import add_config, parse_time, settings_of

if TYPE_CHECKING:
    from gateway.runtime import Runtime

PAUSED = 75  # EX_TEMPFAIL


def _runtime(args: argparse.Namespace) -> Runtime:
    from gateway.contracts.load import ContractError
    from gateway.runtime import Runtime, check

    settings = settings_of(args)
    contracts, operations, problems = check(settings)
    if problems:
        print("the configuration cannot be served:", file=sys.stderr)
        for problem in ContractError(problems).problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(1)
    return Runtime(settings, contracts, operations, run_workers=False, install_logs=False)


def _with_runtime(args: argparse.Namespace, work: Callable[[Runtime], Awaitable[int]], app: bool = False) -> int:
    runtime = _runtime(args)
    if not runtime.settings.monitoring.enabled:
        print("monitoring.enabled is false in this configuration", file=sys.stderr)
        return 1
    if app:  # golden paths call the gateway's own ASGI application
        from gateway.http.edge import Edge
        from gateway.shell import build_shell

        runtime.monitoring.synthetic.app = Edge(runtime, build_shell(runtime))

    async def run() -> int:
        await runtime.startup()
        try:
            return await work(runtime)
        finally:
            await runtime.monitoring.idle()
            await runtime.shutdown()

    return asyncio.run(run())


def _time(value: str | None, name: str) -> float | None:
    try:
        return parse_time(value)
    except ValueError:
        print(f"--{name}: not an ISO 8601 date-time: {value}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_reconcile(args: argparse.Namespace) -> int:
    since, until = _time(args.since, "since"), _time(args.until, "until")
    if since is not None and until is not None and since >= until:
        print("--since must be before --until", file=sys.stderr)
        return 2

    async def work(runtime: Runtime) -> int:
        rules = args.rule or sorted(runtime.monitoring.decl.rules)
        unknown = [r for r in rules if r not in runtime.monitoring.decl.rules]
        if unknown:
            print(f"no reconciliation rule {', '.join(unknown)} (declared: "
                  f"{', '.join(sorted(runtime.monitoring.decl.rules)) or 'none'})", file=sys.stderr)
            return 2
        worst = 0
        for name in rules:
            summary = await runtime.monitoring.reconciler.run(name, since, until)
            status = summary["status"]
            if args.json:
                print(json.dumps(summary))
            elif status in ("ok", "mismatches"):
                print(f"{name}: {status}, {summary['mismatches']} mismatch(es) in {summary['window'][0]} .. "
                      f"{summary['window'][1]} (judged {summary['judged']['left']} against "
                      f"{summary['judged']['right']}, {summary['judged']['in_flight']} still in flight)")
                totals = summary["totals"]
                print("  totals: " + "; ".join(f"{side}: " + ", ".join(f"{k} {v:g}" for k, v in totals[side].items())
                                              for side in ("left", "right")))
                for item_id in dict.fromkeys(summary["exceptions"]):
                    print(f"  {item_id}")
            else:
                print(f"{name}: {status}: {summary.get('vendor', '')} {summary.get('reason', '')}".rstrip())
            worst = max(worst, {"ok": 0, "mismatches": 1, "failed": 2, "busy": 2, "paused": PAUSED}[status])
        return worst

    return _with_runtime(args, work)


def cmd_slo(args: argparse.Namespace) -> int:
    from gateway.monitoring.promrules import dashboard, rules_document
    from gateway.monitoring.slo import objectives
    from gateway.runtime import check

    settings = settings_of(args)
    _, operations, problems = check(settings)
    if problems:
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    objs = objectives(operations)
    if not objs:
        print("no operation declares an SLO (x-gateway.slo)", file=sys.stderr)
        return 1
    text = rules_document(objs) if args.what == "rules" else json.dumps(dashboard(objs), indent=2) + "\n"
    if args.output:
        Path(args.output).write_text(text)
        print(f"wrote {args.output} ({len(objs)} objectives)", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def cmd_exceptions(args: argparse.Namespace) -> int:
    from gateway.monitoring.exceptions import NotFoundError, StateConflict

    async def work(runtime: Runtime) -> int:
        queue = runtime.monitoring.queue
        try:
            if args.action == "list":
                for item in await queue.list(args.kind, args.state, args.limit):
                    print(f"{item['id']:28} {item['kind']:14} {item['state']:9} {item['created_at'] or '-':24} "
                          f"{item['title']}")
                return 0
            if args.action == "show":
                print(json.dumps(await queue.get(args.id), indent=2, default=str))
                return 0
            if args.action == "resolve":
                item = await queue.resolve(args.id, args.reason, args.by)
                print(f"{item['id']} resolved: {args.reason}")
                return 0
            outcome = await queue.requeue(args.id, args.by)
            await runtime.monitoring.idle()  # a re-run rule or path finishes before the command returns
            after = await queue.get(args.id)
            print(f"{args.id} requeued: {json.dumps({k: v for k, v in outcome.items() if k != 'requeued'})}; "
                  f"now {after['state']}")
            return 0
        except NotFoundError:
            print(f"no exception {args.id}", file=sys.stderr)
            return 1
        except StateConflict as exc:
            print(str(exc), file=sys.stderr)
            return 1

    return _with_runtime(args, work)


def cmd_synthetic(args: argparse.Namespace) -> int:
    async def work(runtime: Runtime) -> int:
        paths = args.path or sorted(runtime.monitoring.decl.paths)
        unknown = [p for p in paths if p not in runtime.monitoring.decl.paths]
        if unknown:
            print(f"no golden path {', '.join(unknown)}", file=sys.stderr)
            return 2
        failed = 0
        for name in paths:
            summary = await runtime.monitoring.run_path(name)
            failed += summary["status"] != "ok"
            print(f"{name}: {summary['status']} (run {summary['run']})")
            for step in summary["steps"]:
                print(f"  {step['step']:16} {step['status']} {step['ms']:>8} ms  {step['request_id']}  "
                      f"{'; '.join(step.get('problems', []))}")
        return 1 if failed else 0

    return _with_runtime(args, work, app=True)


def register(sub: Any) -> None:
    config_too = argparse.ArgumentParser(add_help=False)
    add_config(config_too, default=argparse.SUPPRESS)

    p = sub.add_parser("reconcile", help="compare systems now: every reconciliation rule, or --rule NAME")
    add_config(p)
    p.add_argument("--rule", action="append", help="a rule's name (repeatable); default: every rule")
    p.add_argument("--since", help="window start, ISO 8601 (default: the rule's window before --until)")
    p.add_argument("--until", help="window end, ISO 8601 (default: now)")
    p.add_argument("--json", action="store_true", help="one JSON summary per rule")
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser("slo", help="Prometheus rules or a Grafana dashboard generated from the contracts' SLOs")
    add_config(p)
    p.add_argument("what", choices=["rules", "dashboard"])
    p.add_argument("-o", "--output", help="write to this file (default: standard output)")
    p.set_defaults(func=cmd_slo)

    p = sub.add_parser("exceptions", help="the exception queue: list, show, resolve, requeue")
    add_config(p)
    actions = p.add_subparsers(dest="action", required=True)
    q = actions.add_parser("list", parents=[config_too])
    q.add_argument("--kind", choices=["dead_letter", "reconciliation", "synthetic"])
    q.add_argument("--state", default="open", choices=["open", "requeued", "resolved"])
    q.add_argument("--limit", type=int, default=100)
    q = actions.add_parser("show", parents=[config_too])
    q.add_argument("id")
    q = actions.add_parser("resolve", parents=[config_too])
    q.add_argument("id")
    q.add_argument("--reason", required=True)
    q.add_argument("--by", default="cli")
    q = actions.add_parser("requeue", parents=[config_too])
    q.add_argument("id")
    q.add_argument("--by", default="cli")
    p.set_defaults(func=cmd_exceptions)

    p = sub.add_parser("synthetic", help="run golden paths now through this configuration's gateway")
    add_config(p)
    actions = p.add_subparsers(dest="action", required=True)
    q = actions.add_parser("run", parents=[config_too])
    q.add_argument("path", nargs="*", help="a golden path's name (default: every path)")
    p.set_defaults(func=cmd_synthetic)
