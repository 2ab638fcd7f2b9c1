"""`gateway drift [--since]`: where vendors answered differently from their contracts (contracts/vendors/).

Lists each distinct drift (vendor, vendor operation, kind, JSON pointer) the gateway's processes have seen: when it
was first and last seen and about how often (occurrences are written at most once a minute per drift and process;
the exact counts per kind are in the metric gateway_vendor_drift_total). `--since` keeps what was seen since then.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .common import add_config, parse_time, settings_of

_AGO = re.compile(r"^(\d+)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def since_of(value: str | None, now: float) -> float | None:
    """`--since`: a duration back from now (30m, 2h, 7d) or an ISO 8601 time; None for everything."""
    if value is None:
        return None
    if match := _AGO.match(value.strip()):
        return now - int(match.group(1)) * _UNIT_S[match.group(2)]
    try:
        return parse_time(value)
    except ValueError:
        raise ValueError(f"--since {value!r} is neither a duration (30m, 2h, 7d) nor an ISO 8601 time") from None


def cmd_drift(args: argparse.Namespace) -> int:
    from gateway.runtime import drift_path
    from gateway.vendorcontracts.drift import read_drift

    path = Path(args.db) if args.db else drift_path(settings_of(args))
    try:
        since = since_of(args.since, time.time())
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    rows = read_drift(path, since)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no vendor drift" + (f" since {args.since}" if args.since else ""))
        return 0
    print(_table(rows))
    return 0


def _table(rows: list[dict[str, Any]]) -> str:
    def when(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")

    head = ("first seen (UTC)", "last seen (UTC)", "count", "vendor", "operation", "kind", "pointer", "detail")
    lines = [(when(r["first_seen"]), when(r["last_seen"]), str(r["count"]), r["vendor"], r["operation"], r["kind"],
              r["pointer"] or "/", r["detail"]) for r in rows]
    widths = [max(len(str(x[i])) for x in [head, *lines]) for i in range(len(head) - 1)]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line[:-1], widths, strict=True)) + "  " + line[-1]
                     for line in [head, *lines])


def register(sub: Any) -> None:
    p = sub.add_parser("drift", help="where vendors answered differently from their contracts (contracts/vendors/)")
    add_config(p)
    p.add_argument("--since", help="only drift seen since then: a duration (30m, 2h, 7d) or an ISO 8601 time")
    p.add_argument("--db", help="the drift file (default: var/vendor-drift.sqlite under the configuration's base)")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")
    p.set_defaults(func=cmd_drift)
