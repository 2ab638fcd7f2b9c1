"""Contract problems as a person reads them: one line per distinct cause, with a count and the first places.

A 468-operation document with one unsupported scheme at its root used to print the same line 468 times. Here
problems with the same file and reason are one line: the first pointer, then `(N places: ...)` naming the first few.
"""

from __future__ import annotations

from .load import ContractProblem

FIRST = 3


def summarize(problems: list[ContractProblem], first: int = FIRST) -> list[str]:
    """One line per (file, reason, severity), in the order the causes were first found; errors before warnings."""
    groups: dict[tuple[str, str, bool], list[str]] = {}
    for problem in problems:
        pointers = groups.setdefault((problem.file, problem.reason, problem.warning), [])
        if problem.pointer not in pointers:
            pointers.append(problem.pointer)
    lines = []
    for (file, reason, warning), pointers in sorted(groups.items(), key=lambda g: g[0][2]):
        line = f"{file}#{pointers[0]}: {'warning: ' if warning else ''}{reason}"
        if len(pointers) > 1:
            shown = ", ".join(f"#{p}" for p in pointers[1:first + 1])
            more = f", and {len(pointers) - first - 1} more" if len(pointers) > first + 1 else ""
            line += f"  ({len(pointers)} places; also {shown}{more})"
        lines.append(line)
    return lines


def count_line(problems: list[ContractProblem]) -> str:
    """`12 problems (3 distinct causes)`."""
    causes = len({(p.file, p.reason) for p in problems})
    plural = "s" if len(problems) != 1 else ""
    return f"{len(problems)} problem{plural} found" + (f" ({causes} distinct causes)" if causes != len(problems)
                                                       else "")
