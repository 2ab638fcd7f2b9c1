"""Re-extract a vendor contract excerpt from the vendor's published OpenAPI document.

    .venv/bin/python -m gateway.vendorcontracts.extract spec3.json --vendor stripe \\
        --source https://github.com/stripe/openapi/blob/<commit>/openapi/spec3.json --commit <commit> \\
        --licence "MIT (Stripe, Inc.)" --operation PostPaymentIntents --operation GetPaymentIntentsIntent ... \\
        > contracts/vendors/stripe.yaml

Keeps the named operations (by operationId, or as "METHOD /path"), their path-level parameters, and every
component they reach through `$ref`, transitively (schemas, responses, parameters, request bodies, headers);
everything else is left out. The excerpt records where it came from (`x-excerpt`: source, commit, licence, the
operations) so the next release can be re-extracted and compared with `gateway diff`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from gateway.contracts.load import read_document

METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def _refs(node: Any) -> list[str]:
    found: list[str] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str):
                found.append(ref)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def extract(upstream: dict[str, Any], operations: list[str], meta: dict[str, Any]) -> dict[str, Any]:
    """The excerpt of `upstream` with exactly `operations`; KeyError names an operation it does not have."""
    wanted = set(operations)
    paths: dict[str, Any] = {}
    for path, item in (upstream.get("paths") or {}).items():
        for method in METHODS:
            op = item.get(method) if isinstance(item, dict) else None
            if not isinstance(op, dict):
                continue
            names = {str(op.get("operationId")), f"{method.upper()} {path}"}
            if names & wanted:
                wanted -= names
                kept = paths.setdefault(path, {k: v for k, v in item.items() if k not in METHODS})
                kept[method] = op
    if wanted:
        raise KeyError(f"not in the upstream document: {', '.join(sorted(wanted))}")
    components: dict[str, dict[str, Any]] = {}
    queue = _refs(paths)
    seen: set[str] = set()
    while queue:
        ref = queue.pop()
        if ref in seen:
            continue
        seen.add(ref)
        if not ref.startswith("#/components/"):
            raise ValueError(f"only references into #/components/ can be extracted, not {ref!r}")
        kind, _, name = ref[len("#/components/"):].partition("/")
        name = name.replace("~1", "/").replace("~0", "~")
        target = ((upstream.get("components") or {}).get(kind) or {}).get(name)
        if target is None:
            raise KeyError(f"{ref} does not resolve in the upstream document")
        components.setdefault(kind, {})[name] = target
        queue.extend(_refs(target))
    info = dict(upstream.get("info") or {})
    out: dict[str, Any] = {"openapi": upstream.get("openapi", "3.0.0"),
                           "info": {"title": f"{info.get('title', meta['vendor'])} (excerpt)",
                                    "version": str(info.get("version", ""))},
                           "x-excerpt": {**meta, "method": "extracted", "operations": list(operations)}}
    if upstream.get("servers"):
        out["servers"] = upstream["servers"]
    out["paths"] = paths
    out["components"] = {kind: dict(sorted(items.items())) for kind, items in sorted(components.items())}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.vendorcontracts.extract", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("upstream", help="the vendor's published OpenAPI document (JSON or YAML)")
    parser.add_argument("--vendor", required=True)
    parser.add_argument("--source", required=True, help="where the upstream document was published")
    parser.add_argument("--commit", help="the upstream commit or release it was taken from")
    parser.add_argument("--licence", required=True, help="the upstream document's licence")
    parser.add_argument("--operation", action="append", default=[], help="an operationId or 'METHOD /path'")
    parser.add_argument("--operations", help="a file with one operation a line (# comments allowed)")
    args = parser.parse_args(argv)
    operations = list(args.operation)
    if args.operations:
        operations += [line.split("#", 1)[0].strip() for line in Path(args.operations).read_text().splitlines()
                       if line.split("#", 1)[0].strip()]
    data, problems = read_document(Path(args.upstream))
    if problems or not isinstance(data, dict):
        print("; ".join(str(p) for p in problems) or "not an OpenAPI document", file=sys.stderr)
        return 1
    meta = {"vendor": args.vendor, "source": args.source, "licence": args.licence}
    if args.commit:
        meta["source_commit"] = args.commit
    try:
        excerpt = extract(data, operations, meta)
    except (KeyError, ValueError) as exc:
        print(str(exc).strip("'\""), file=sys.stderr)
        return 1
    sys.stdout.write(f"# Extracted from {args.source} ({args.licence}) by gateway/vendorcontracts/extract.py.\n")
    sys.stdout.write(yaml.safe_dump(excerpt, sort_keys=False, allow_unicode=True, width=120))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
