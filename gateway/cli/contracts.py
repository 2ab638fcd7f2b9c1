"""`gateway check` and `gateway diff`: contracts validated, and compared between versions."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

from .common import add_config, settings_of


def cmd_check(args: argparse.Namespace) -> int:
    from gateway.contracts.report import count_line, summarize
    from gateway.runtime import check_all

    overrides = {"contracts": [str(Path(p).resolve()) for p in args.paths]} if args.paths else {}
    settings = settings_of(args, **overrides)
    contracts, operations, problems, warnings = check_all(settings)
    for line in summarize(problems + warnings):
        print(line)
    if problems:
        print(count_line(problems), file=sys.stderr)
        return 1
    print(f"ok: {len(contracts)} contracts, {len(operations)} operations"
          + (f" ({len(warnings)} warnings)" if warnings else ""))
    return 0


def _contracts_at(ref: str, folder: Path, into: Path) -> Path:
    """Extract `folder` as it was at git revision `ref` into `into`; SystemExit with git's reason on failure."""
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=folder, capture_output=True, text=True)
    if top.returncode != 0:
        raise SystemExit(f"--base needs a git checkout: {top.stderr.strip()}")
    root = Path(top.stdout.strip())
    rel = folder.resolve().relative_to(root)
    archive = subprocess.run(["git", "archive", "--format=tar", ref, str(rel)], cwd=root, capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(f"cannot read {rel} at {ref}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / rel


def cmd_diff(args: argparse.Namespace) -> int:
    import json
    import tempfile

    from gateway.contracts.diff import diff_paths

    if args.vendor:
        return _vendor_diff(args)
    with tempfile.TemporaryDirectory() as tmp:
        if args.base:
            new = [Path(args.paths[0])] if args.paths else [Path("contracts")]
            old = [_contracts_at(args.base, new[0], Path(tmp))]
        elif len(args.paths) == 2:
            old, new = [Path(args.paths[0])], [Path(args.paths[1])]
        else:
            print("usage: gateway diff OLD NEW  |  gateway diff --base GIT_REF [CONTRACTS_DIR]", file=sys.stderr)
            return 2
        report, errors = diff_paths(old, new)
    if errors:
        print("cannot compare, contracts do not load:", *errors, sep="\n  ", file=sys.stderr)
        return 2
    if args.format == "json":
        print(json.dumps({"breaking": len(report.breaking), "changes": [c.as_dict() for c in report.changes]},
                         indent=2))
    else:
        for change in report.changes:
            print(change)
        print(f"{len(report.changes)} changes, {len(report.breaking)} breaking", file=sys.stderr)
    return 1 if report.breaking else 0


def _vendor_diff(args: argparse.Namespace) -> int:
    """`gateway diff --vendor NAME OLD NEW`: a vendor release's changes and which of our operations they touch."""
    import json

    from gateway.runtime import check_all
    from gateway.vendorcontracts.contract import VendorContractError
    from gateway.vendorcontracts.impact import public_routes, vendor_impact

    if len(args.paths) != 2:
        print("usage: gateway diff --vendor NAME OLD NEW  (two versions of a vendor contract)", file=sys.stderr)
        return 2
    settings = settings_of(args)
    names = {n for n, v in settings.vendors.items() if args.vendor in (n, v.adapter)}
    operations = check_all(settings)[1]
    try:
        impacts, errors = vendor_impact(args.vendor, Path(args.paths[0]), Path(args.paths[1]),
                                        public_routes(operations, args.vendor, names))
    except VendorContractError as exc:
        errors = [str(exc)]
    if errors:
        print("cannot compare, vendor contracts do not load:", *errors, sep="\n  ", file=sys.stderr)
        return 2
    breaking = [i for i in impacts if i.change.breaking]
    if args.format == "json":
        print(json.dumps({"breaking": len(breaking), "changes": [i.as_dict() for i in impacts]}, indent=2))
    else:
        for impact in impacts:
            print(impact.change)
            print(f"    vendor operations: {', '.join(impact.vendor_operations) or '-'}; adapter: "
                  f"{', '.join(impact.adapter_operations) or '-'}")
            for public in impact.public_operations:
                print(f"    affects {public}")
        affected = sorted({p for i in breaking for p in i.public_operations})
        print(f"{len(impacts)} changes, {len(breaking)} breaking; public operations affected by breaking changes: "
              f"{len(affected)}", file=sys.stderr)
    return 1 if breaking else 0


def register(sub: Any) -> None:
    p = sub.add_parser("check", help="validate contracts (and routes against gateway.yaml); exit 1 on problems")
    p.add_argument("paths", nargs="*", help="contract files or folders (default: those in the config)")
    add_config(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("diff", help="breaking and non-breaking changes between contract versions; exit 1 if breaking")
    p.add_argument("paths", nargs="*", help="OLD NEW (files or folders), or with --base: the contracts folder")
    p.add_argument("--base", help="compare the contracts folder with its state at this git revision")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--vendor", help="OLD and NEW are versions of this vendor's contract (contracts/vendors/): list "
                                    "which of our public operations each change affects")
    add_config(p)
    p.set_defaults(func=cmd_diff)
