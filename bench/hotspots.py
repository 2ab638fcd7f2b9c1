"""Summarise a py-spy profile (`--format raw`, collapsed stacks): where the gateway's CPU goes.

Run: .venv/bin/python bench/hotspots.py bench/results/profile/gateway-memory-1.txt [--top 30] [--match gateway/]
Prints the functions with the most samples inclusive (on the stack) and exclusive (on top of the stack), as a
share of all samples; --match keeps only frames whose file contains the text (e.g. to see the gateway's own code).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    file = m.group("file")
    for marker in ("site-packages/", "lib/python3.11/", "/work/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{m.group('func')} ({file})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--match", default="")
    parser.add_argument("--by-file", action="store_true", help="exclusive samples summed per source file")
    args = parser.parse_args()
    inclusive: Counter[str] = Counter()
    exclusive: Counter[str] = Counter()
    total = 0
    for line in args.profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [frame_name(f) for f in stack.split(";")]
        for name in set(frames):
            if args.match in name:
                inclusive[name] += n
        if args.match in frames[-1]:
            exclusive[frames[-1]] += n
    print(f"{total} samples")
    if args.by_file:
        files: Counter[str] = Counter()
        for name, n in exclusive.items():
            files[name.rsplit("(", 1)[-1].rstrip(")") if "(" in name else name] += n
        print("\nexclusive, by file:")
        for name, n in files.most_common(args.top):
            print(f"{100 * n / total:6.1f}%  {name}")
        return
    for title, counter in (("inclusive", inclusive), ("exclusive", exclusive)):
        print(f"\n{title}:")
        for name, n in counter.most_common(args.top):
            print(f"{100 * n / total:6.1f}%  {name}")


if __name__ == "__main__":
    main()
