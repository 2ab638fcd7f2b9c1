"""A contract as partners see it: one self-contained document, refs to other files imported, internals removed.

Served at /contracts/{api}/{version}/openapi.json for the docs portal, client generators and schemathesis.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

from .load import Contract, pointer_parts


def public_document(contract: Contract) -> dict[str, Any]:
    root = contract.path.resolve()
    existing = contract.data.get("components") or {}
    extra: dict[str, dict[str, Any]] = {}  # section -> name -> imported node
    imported: dict[tuple[Path, str], str] = {}

    def local_ref(file: Path, pointer: str) -> str:
        if file == root:
            return "#" + pointer
        key = (file, pointer)
        if key not in imported:
            parts = pointer_parts(pointer)
            section = parts[1] if len(parts) >= 3 and parts[0] == "components" else "schemas"
            base = re.sub(r"[^A-Za-z0-9_.-]", "_", "_".join([file.stem, *parts[-1:]]))
            name, n = base, 1
            while name in extra.get(section, {}) or name in (existing.get(section) or {}):
                n += 1
                name = f"{base}{n}"
            imported[key] = f"#/components/{section}/{name}"
            _, _, node = contract.resolver.resolve("#" + pointer, file)
            extra.setdefault(section, {})[name] = True  # reserve the name before recursing (cycles)
            extra[section][name] = rewrite(node, file)
        return imported[key]

    def rewrite(node: Any, file: Path) -> Any:
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if k == "x-gateway":
                    continue
                if k.startswith("x-"):  # extensions are opaque: a `$ref` inside one is not followed
                    out[k] = copy.deepcopy(v)
                    continue
                if k == "$ref" and isinstance(v, str):
                    target_file, pointer = contract.resolver.target(v, file)
                    out[k] = local_ref(target_file, pointer)
                else:
                    out[k] = rewrite(v, file)
            return out
        if isinstance(node, list):
            return [rewrite(v, file) for v in node]
        return copy.copy(node)

    doc = rewrite(contract.data, root)
    if extra:
        components = doc.setdefault("components", {})
        for section, entries in extra.items():
            components.setdefault(section, {}).update(entries)
    return doc
