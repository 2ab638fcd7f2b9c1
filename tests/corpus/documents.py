"""The corpus: public OpenAPI documents nobody here wrote, pinned under tests/data/corpus (SOURCES.yaml says where
each comes from, at which commit, under which licence). Nothing is fetched: `prepare()` copies one into a folder
(gunzipping the large ones) and adds the one block a user adds to serve a third-party document:
`x-gateway: {api, route: upstream.forward}` at its root."""

from __future__ import annotations

import gzip
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"


@dataclass(frozen=True)
class Document:
    name: str  # folder under tests/data/corpus
    entry: str  # the root file inside it
    verdict: str  # ok | refused (what `gateway check` must say)
    shape: str  # what it exercises
    large: bool = False  # fuzzed on a sample of operations in `make test`, fully under `make fuzz-deep`


def sources() -> list[Document]:
    listed = yaml.safe_load((CORPUS / "SOURCES.yaml").read_text())
    return [Document(d["name"], d["entry"], d["verdict"], d["shape"], d.get("large", False))
            for d in listed["documents"]]


def prepare(doc: Document, into: Path, vendor: str = "upstream") -> Path:
    """A servable copy of `doc` in `into`: its files, decompressed, with the default route added at the root."""
    source = CORPUS / doc.name
    target = into / doc.name
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.gz"))
    for packed in source.rglob("*.gz"):
        out = target / packed.relative_to(source).with_suffix("")
        out.write_bytes(gzip.decompress(packed.read_bytes()))
    entry = target / doc.entry
    api = "".join(c for c in doc.name.lower() if c.isalnum() or c == "-").strip("-")[:40] or "api"
    if not api[0].isalpha():
        api = "a" + api
    block = {"api": api, "route": f"{vendor}.forward"}
    if entry.suffix == ".json":
        data = json.loads(entry.read_text())
        if isinstance(data, dict) and "openapi" in data:
            data["x-gateway"] = block
            entry.write_text(json.dumps(data))
    elif doc.verdict == "ok":
        entry.write_text(entry.read_text() + "\nx-gateway:\n" + "".join(f"  {k}: {v}\n" for k, v in block.items()))
    return entry
