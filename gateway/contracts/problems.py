"""What is wrong with a contract (file, JSON pointer, reason), and JSON pointers: used by every contract module."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, order=True)
class ContractProblem:
    """One reason a contract cannot be served."""

    file: str
    pointer: str
    reason: str
    warning: bool = False  # served anyway: said at start-up and by `gateway check`, does not stop either

    def __str__(self) -> str:
        return f"{self.file}#{self.pointer}: {'warning: ' if self.warning else ''}{self.reason}"


class ContractError(Exception):
    """Contracts that cannot be served; `problems` lists all of them."""

    def __init__(self, problems: list[ContractProblem]) -> None:
        self.problems = sorted(set(problems))
        super().__init__("\n".join(str(p) for p in self.problems))


def pointer_join(base: str, *parts: Any) -> str:
    out = base
    for part in parts:
        out += "/" + str(part).replace("~", "~0").replace("/", "~1")
    return out


def pointer_parts(pointer: str) -> list[str]:
    if pointer in ("", "/"):
        return []
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer.lstrip("/").split("/")]
