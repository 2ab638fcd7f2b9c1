"""Our `gateway diff` beside oasdiff (the reference Go tool) on the same release pairs, when oasdiff is installed.

Run: .venv/bin/python bench/oasdiff_compare.py      (oasdiff on PATH: `go install github.com/oasdiff/oasdiff@v1.39.0`)

Pairs: Stripe 2022-04-07 -> 2022-04-12 (tests/data/corpus) and the generated 500-operation document against its
previous release (bench/densedoc.py). For each: wall time and peak RSS of both tools, the number of breaking changes
each reports, and the operations (method + path) where one says "breaking" and the other does not, which is what
docs/decisions/diff-engine.md explains. Without oasdiff, our side is measured and the comparison is skipped, saying so.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.densedoc import generate, previous_release, with_route  # noqa: E402

CORPUS = ROOT / "tests" / "data" / "corpus"


def run(cmd: list[str]) -> tuple[float, int, str]:
    """(seconds, peak RSS MB, stdout) of one command."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, _, usage = os.wait4(proc.pid, 0)
    return time.perf_counter() - start, usage.ru_maxrss // 1024, out


def pairs(tmp: Path) -> list[tuple[str, Path, Path]]:
    out = []
    for name in ("stripe-2022-04-07", "stripe-2022-04-12"):
        (tmp / f"{name}.json").write_bytes(gzip.decompress((CORPUS / name / "openapi.json.gz").read_bytes()))
    out.append(("Stripe 2022-04-07 -> 2022-04-12", tmp / "stripe-2022-04-07.json", tmp / "stripe-2022-04-12.json"))
    doc = with_route(generate(500))
    (tmp / "dense-new.json").write_text(json.dumps(doc))
    (tmp / "dense-old.json").write_text(json.dumps(previous_release(doc)))
    out.append(("generated 500 operations, previous release", tmp / "dense-old.json", tmp / "dense-new.json"))
    return out


_OP = re.compile(r"^/paths/([^/]+)/([a-z]+)")


def ours(old: Path, new: Path) -> tuple[float, int, set[str], int]:
    seconds, mb, out = run([sys.executable, "-m", "gateway", "diff", "--format", "json", str(old), str(new)])
    report = json.loads(out)
    operations = set()
    for change in report["changes"]:
        m = _OP.match(change["pointer"]) if change["breaking"] else None
        if m:
            operations.add(f"{m.group(2).upper()} {m.group(1).replace('~1', '/').replace('~0', '~')}")
    return seconds, mb, operations, report["breaking"]


def theirs(old: Path, new: Path) -> tuple[float, int, set[str], int]:
    seconds, mb, out = run(["oasdiff", "breaking", str(old), str(new), "--format", "json"])
    found: list[dict[str, Any]] = json.loads(out or "[]")
    operations = {f"{c.get('operation', '').upper()} {c.get('path', '')}" for c in found if c.get("path")}
    return seconds, mb, operations, len(found)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="cg-oasdiff-"))
    have = shutil.which("oasdiff") is not None
    try:
        print("| pair | tool | seconds | peak MB | breaking changes |\n|---|---|---:|---:|---:|")
        for label, old, new in pairs(tmp):
            s, mb, ops, count = ours(old, new)
            print(f"| {label} | gateway diff | {s:.2f} | {mb} | {count} |")
            if not have:
                continue
            s2, mb2, ops2, count2 = theirs(old, new)
            print(f"| {label} | oasdiff | {s2:.2f} | {mb2} | {count2} |")
            only_ours, only_theirs = sorted(ops - ops2), sorted(ops2 - ops)
            print(f"\n{label}: operations breaking only for us: {only_ours or 'none'}; "
                  f"only for oasdiff: {only_theirs or 'none'}\n")
        if not have:
            print("\noasdiff is not on PATH: only our side was measured (docs/decisions/diff-engine.md)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
