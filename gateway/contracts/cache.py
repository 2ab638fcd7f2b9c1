"""The compile cache: a restart with unchanged contracts skips the checks and conversions it already did.

An entry is written after a successful `check` (never for contracts with problems) to `contracts_cache` in
gateway.yaml (default `var/cache/contracts`, relative to the config file; `null` turns it off). It holds each
contract's converted schemas (contracts/schema.py) and the warnings, as JSON: nothing in it is executed.

Its name is a digest of everything the result depends on: the gateway's own version and the source of the code that
checks and compiles contracts, the settings, and the bytes of the contract files named in the settings. Every other
file the contracts referenced is listed in the entry with its SHA-256 and checked before the entry is used, so an
edited shared fragment is a miss too. The jsonschema-rs validators are compiled again at each start (~40 ms for
a 417-operation document): they cannot be stored. Failing to read or write the cache is never an error: the
gateway then compiles as if there were none.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import orjson

from gateway.settings import Settings
from gateway.vendorcontracts.check import contract_file

from .load import CONTRACT_SUFFIXES, Contract, ContractProblem

log = logging.getLogger("gateway.contracts")
FORMAT = 1
KEEP = 16  # entries kept (the newest); older ones are removed when a new one is written
# The code whose behaviour a cached result stands for: a change to any of it is a new key.
_SOURCES = ("contracts", "http/params.py", "http/forms.py", "policies/auth.py", "settings.py")


@functools.lru_cache(maxsize=1)
def _code_digest() -> str:
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(str(FORMAT).encode())
    for name in _SOURCES:
        target = root / name
        for file in sorted(target.rglob("*.py")) if target.is_dir() else [target]:
            digest.update(file.name.encode())
            digest.update(file.read_bytes())
    for dist in ("jsonschema-rs", "openapi-spec-validator"):
        try:
            digest.update(version(dist).encode())
        except PackageNotFoundError:
            pass
    return digest.hexdigest()


def _relative(settings: Settings, file: str | None) -> Path | None:
    if not file:
        return None
    path = Path(file)
    return path if path.is_absolute() else settings.base_dir / path


def _file_digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class ContractCache:
    """One cache entry for one configuration; `load()` returns a verified entry or None, `store()` writes one."""

    def __init__(self, settings: Settings) -> None:
        folder = settings.contracts_cache
        self.folder = None if folder is None else (folder if folder.is_absolute() else settings.base_dir / folder)
        self.key = self._key(settings) if self.folder is not None else None

    @staticmethod
    def _key(settings: Settings) -> str | None:
        digest = hashlib.sha256(_code_digest().encode())
        digest.update(settings.model_dump_json(exclude={"contracts_cache"}).encode())
        for path in settings.contract_paths():
            files = sorted(f for f in path.iterdir() if f.suffix in CONTRACT_SUFFIXES) if path.is_dir() else [path]
            for file in files:
                found = _file_digest(file)
                if found is None:
                    return None
                digest.update(str(file.resolve()).encode() + found.encode())
        # A declarative vendor's mapping file and vendor contract are part of what the checks vouched for (its
        # routes are the operations `x-gateway.route` must name, its ownership what the lint accepted): an edit to
        # either is a new key, so the checks run again.
        for name, vendor in sorted(settings.vendors.items()):
            if vendor.adapter != "declarative":
                continue
            for source in (_relative(settings, vendor.mapping), contract_file(vendor, settings.base_dir, name)):
                found = _file_digest(source) if source is not None else None
                digest.update(f"{name}\0{source}\0{found}\0".encode())
        return digest.hexdigest()

    @property
    def path(self) -> Path | None:
        return None if self.folder is None or self.key is None else self.folder / f"{self.key}.json"

    def load(self) -> dict[str, Any] | None:
        path = self.path
        if path is None or not path.is_file():
            return None
        try:
            entry = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        if not isinstance(entry, dict) or entry.get("format") != FORMAT:
            return None
        for file, digest in (entry.get("files") or {}).items():
            if _file_digest(Path(file)) != digest:
                return None  # a referenced fragment changed
        return entry

    def store(self, contracts: list[Contract], schemas: dict[str, Any], warnings: list[ContractProblem]) -> None:
        path = self.path
        if path is None:
            return
        files = {str(f): d for c in contracts for f in c.resolver.documents if (d := _file_digest(f)) is not None}
        entry = {"format": FORMAT, "files": files, "schemas": schemas,
                 "warnings": [[w.file, w.pointer, w.reason] for w in warnings]}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(orjson.dumps(entry))
            os.replace(tmp, path)  # atomic: a concurrent start reads the old entry or the new one, never half
            self._prune(path.parent)
        except OSError as exc:
            log.debug("compile cache not written (%s): compiling at every start", exc)

    @staticmethod
    def _prune(folder: Path) -> None:
        entries = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in entries[KEEP:]:
            old.unlink(missing_ok=True)


def warnings_of(entry: dict[str, Any]) -> list[ContractProblem]:
    return [ContractProblem(f, p, r, warning=True) for f, p, r in entry.get("warnings") or []]
