""""What happened to request X?": the story of one request told from the gateway's own log lines.

The lines come from the log file (`gateway trace ID --log FILE`, JSON format) or from the running gateway's
recent lines (`gateway trace ID --url URL`, i.e. GET /admin/requests/{id}). The story names the route, the
policies the request passed and the one that stopped it, every vendor attempt with its status and time, other
log lines about the request (retries, warnings), the outcome, and whose side failed: the caller's, ours or the
vendor's.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

VENDOR_PROBLEMS = ("vendor-", "upstream-")


def lines_from_file(path: Path, request_id: str) -> list[dict[str, Any]]:
    """The JSON log lines of one request in a log file, oldest first (other lines are skipped)."""
    needle = orjson.dumps(request_id)
    found = []
    with path.open("rb") as f:
        for line in f:
            if needle in line:
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(record, dict) and record.get("request_id") == request_id:
                    found.append(record)
    return found


def verdict(access: dict[str, Any], attempts: list[dict[str, Any]]) -> str:
    """Whose side it was: the caller's (them), the gateway's (us) or the vendor's."""
    status = access.get("status") or 0
    problem = access.get("problem") or ""
    stage = access.get("stage")
    # A retry is an attempt after the first of the same vendor call (its `attempt` number above 1); several calls
    # in one request (a search, then a create) are not retries of each other.
    retried = sum(1 for a in attempts if (a.get("attempt") or 1) > 1)
    if status == 499:
        return "them: the caller disconnected before the answer; the gateway abandoned the vendor work"
    if status < 400:
        plural = "y" if retried == 1 else "ies"
        extra = f" after {retried} retr{plural} of failed vendor attempts" if retried > 0 else ""
        calls = len(attempts) - retried
        return f"ok: answered {status}{extra}" + (f" ({calls} vendor calls)" if calls > 1 else "")
    if status < 500:
        if stage and stage not in ("dispatch", "routing"):
            return f"them: the caller's request was refused by the {stage} policy ({problem or status})"
        if stage == "routing":
            return f"them: no operation matches the request ({problem or status})"
        return f"them: the vendor refused the request as the caller sent it ({problem or status})"
    last = attempts[-1] if attempts else None
    vendor_failed = last is not None and (last.get("status") is None or last.get("status", 0) >= 500)
    if problem.startswith(VENDOR_PROBLEMS) or vendor_failed:
        vendor = access.get("vendor") or (last or {}).get("vendor")
        return f"vendor: {vendor} failed ({problem or status}) after {len(attempts)} attempt(s)"
    return f"us: the gateway failed ({problem or status}); see the error lines above"


def tell(request_id: str, lines: Iterable[dict[str, Any]]) -> str:
    """A few lines a person reads top to bottom."""
    lines = list(lines)
    if not lines:
        return f"request {request_id}: no log lines found (too old for the in-memory buffer, or another process)"
    access = next((line for line in reversed(lines) if line.get("event") == "access"), None)
    attempts = [line for line in lines if line.get("event") == "vendor_attempt"]
    out = [f"request {request_id}"]
    if access is None:
        out.append("  (no access line yet: the request is still running, or the process stopped)")
        access = {}
    else:
        op = f"{access.get('api')} {access.get('version')} {access.get('operation')}" if access.get("api") else "-"
        out.append(f"  {lines[0].get('ts')}  {access.get('method')} {access.get('route') or '(no route)'}  "
                   f"[{op}]  client {access.get('client') or '-'}  trace {access.get('trace_id')}")
        out.append("  policies: " + policies_line(access))
    for line in lines:
        event = line.get("event")
        if event == "vendor_attempt":
            result = f"HTTP {line['status']}" if line.get("status") is not None else line.get("error", "error")
            vid = f"  vendor request id {line['vendor_request_id']}" if line.get("vendor_request_id") else ""
            out.append(f"  {line.get('ts')}  vendor {line.get('vendor')} attempt {line.get('attempt')}: "
                       f"{line.get('method')} {line.get('path')} -> {result} in {line.get('ms')} ms{vid}")
        elif event == "log":
            out.append(f"  {line.get('ts')}  {line.get('level')}: {line.get('msg')}")
    if access:
        bits = [f"HTTP {access.get('status')}", f"in {access.get('duration_ms')} ms"]
        if access.get("problem"):
            bits.append(f"problem {access['problem']}")
        if access.get("attempts"):
            bits.append(f"{access['attempts']} vendor attempt(s)")
        if access.get("breaker"):
            bits.append(f"breaker {access['breaker']}")
        if access.get("idempotency"):
            bits.append(f"idempotency {access['idempotency']}")
        if access.get("vendor_request_id"):
            bits.append(f"vendor request id {access['vendor_request_id']}")
        out.append("  outcome: " + ", ".join(bits))
        out.append("  verdict: " + verdict(access, attempts))
    return "\n".join(out)


def policies_line(access: dict[str, Any]) -> str:
    policies = access.get("policies") or []
    stage = access.get("stage")
    notes = {"ratelimit": access.get("ratelimit"), "idempotency": access.get("idempotency"),
             "versioning": "deprecated" if access.get("deprecated") else None}
    words = []
    for name in policies:
        note = f" ({notes[name]})" if notes.get(name) else ""
        if name == stage:
            status = access.get("status") or 0
            words.append(f"{name} {'answered' if status < 400 else 'REFUSED'}{note}")
            break
        words.append(f"{name} passed{note}")
    if stage == "dispatch":
        words.append(f"dispatch to {access.get('vendor')}")
    return ", ".join(words) or "(none)"
