"""Read contract files, resolve every `$ref` (local and relative-file), and validate them as OpenAPI documents.

Every problem is collected, not just the first: a contract author fixes a file in one pass. A problem names the
file, the JSON pointer inside it, and the reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag

import yaml

from .problems import ContractError as ContractError  # re-exported: `from gateway.contracts.load import ContractError`
from .problems import ContractProblem, pointer_join, pointer_parts

CONTRACT_SUFFIXES = (".yaml", ".yml", ".json")


class _StrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """SafeLoader that refuses duplicate mapping keys instead of silently keeping the last one (on libyaml's C
    parser when PyYAML has it: ~5x faster on large contracts, bench/micro.py)."""

    duplicate_keys: list[tuple[str, int]]


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            loader.duplicate_keys.append((str(key), key_node.start_mark.line + 1))
        seen.add(key)
    return yaml.constructor.SafeConstructor.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# OpenAPI documents are JSON: an unquoted `2019-05-17` (an example, a date) is the string, not a Python date that
# could not be served back as JSON.
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _StrictLoader.yaml_implicit_resolvers.items()}


def _stringify_keys(node: Any) -> Any:
    # YAML turns `200:` into an int key; OpenAPI means the string "200".
    if isinstance(node, dict):
        return {str(k): _stringify_keys(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_stringify_keys(v) for v in node]
    return node


def read_document(path: Path) -> tuple[Any, list[ContractProblem]]:
    """Parse one YAML or JSON file; problems instead of exceptions."""
    name = display(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, [ContractProblem(name, "", f"cannot read file: {exc.strerror}")]
    except UnicodeDecodeError:
        return None, [ContractProblem(name, "", "file is not valid UTF-8")]
    if path.suffix == ".json":
        try:
            return json.loads(text), []
        except json.JSONDecodeError as exc:
            return None, [ContractProblem(name, "", f"invalid JSON at line {exc.lineno}: {exc.msg}")]
    loader = _StrictLoader(text)
    loader.duplicate_keys = []
    try:
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        return None, [ContractProblem(name, "", f"invalid YAML: {exc}")]
    finally:
        loader.dispose()
    problems = [ContractProblem(name, "", f"duplicate key {k!r} at line {line}") for k, line in loader.duplicate_keys]
    if data is None and not problems:
        problems.append(ContractProblem(name, "", "the file is empty"))
    return _stringify_keys(data), problems


class RefResolver:
    """Resolves `$ref`s across files, reading each file once. Keys are (absolute file, JSON pointer).

    Everything is resolved in memory and memoised: a large document has hundreds of thousands of `$ref` uses, and
    turning each into a filesystem path again (Path.resolve) was most of a 74 s start-up.
    """

    def __init__(self) -> None:
        self.documents: dict[Path, Any] = {}
        self.problems: list[ContractProblem] = []
        self._targets: dict[tuple[str, Path], tuple[Path, str]] = {}
        self._nodes: dict[tuple[Path, str], Any] = {}
        self._absolute: dict[Path, Path] = {}

    def absolute(self, path: Path) -> Path:
        """`path.resolve()`, memoised (the filesystem is asked once per distinct path)."""
        found = self._absolute.get(path)
        if found is None:
            found = self._absolute[path] = path.resolve()
        return found

    def document(self, path: Path) -> Any:
        path = self.absolute(path)
        if path not in self.documents:
            data, problems = read_document(path)
            self.problems.extend(problems)
            self.documents[path] = data
        return self.documents[path]

    def target(self, ref: str, base: Path) -> tuple[Path, str]:
        """Where `ref`, written in file `base`, points: (file, pointer). Raises LookupError with a reason."""
        if not isinstance(ref, str):
            raise LookupError("$ref must be a string")
        key = (ref, base)
        found = self._targets.get(key)
        if found is not None:
            return found
        location, fragment = urldefrag(ref)
        if location.startswith(("http://", "https://")):
            raise LookupError(f"remote $ref {ref!r} is not supported: bundle it into a local file")
        file = self.absolute(base.parent / unquote(location)) if location else self.absolute(base)
        pointer = unquote(fragment)
        if pointer and not pointer.startswith("/"):
            raise LookupError(f"$ref fragment {fragment!r} is not a JSON pointer")
        self._targets[key] = (file, pointer)
        return file, pointer

    def node_at(self, file: Path, pointer: str) -> Any:
        """The node at `pointer` in `file` (absolute); LookupError naming the first missing part."""
        key = (file, pointer)
        if key in self._nodes:
            return self._nodes[key]
        if file not in self.documents and not file.exists():
            raise LookupError(f"file {file.name} does not exist")
        node = self.document(file)
        if node is None:
            raise LookupError(f"file {file.name} could not be parsed")
        for part in pointer_parts(pointer):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise LookupError(f"points to nothing (no {part!r})")
        self._nodes[key] = node
        return node

    def resolve(self, ref: str, base: Path) -> tuple[Path, str, Any]:
        file, pointer = self.target(ref, base)
        try:
            return file, pointer, self.node_at(file, pointer)
        except LookupError as exc:
            raise LookupError(f"$ref {ref!r}: {exc}") from None

    def deref(self, node: Any, base: Path, pointer: str) -> tuple[Any, Path, str]:
        """Follow `$ref` chains on a non-schema object (parameter, response...). Returns (node, file, pointer)."""
        seen = set()
        while isinstance(node, dict) and "$ref" in node:
            key = (base, pointer)
            if key in seen:
                raise LookupError(f"$ref cycle at {pointer}")
            seen.add(key)
            base, pointer, node = self.resolve(node["$ref"], base)
        return node, base, pointer


# Maps whose keys are names chosen by the author (property names, component names...), not keywords: a key `$ref`
# in them is a name (a SCIM schema has a property called `$ref`), not a reference.
NAME_MAPS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas", "schemas",
                       "responses", "parameters", "examples", "requestBodies", "headers", "securitySchemes",
                       "links", "callbacks", "pathItems", "paths", "webhooks", "content", "encoding", "mapping",
                       "variables", "scopes"})
# Values that are data, not OpenAPI objects: a "$ref" key inside them is literal.
_DATA_KEYS = frozenset({"example", "examples", "const", "enum", "default"})


def iter_refs(node: Any, pointer: str = "") -> Iterator[tuple[str, Any]]:
    """Every (pointer of the object holding `$ref`, ref value) under `node`."""
    for path, ref in _refs(node, (), False):
        yield pointer_join(pointer, *path), ref


def _refs(node: Any, path: tuple[Any, ...], names: bool) -> Iterator[tuple[tuple[Any, ...], Any]]:
    if isinstance(node, dict):
        if not names and "$ref" in node:
            yield path, node["$ref"]
        for k, v in node.items():
            # Specification extensions (`x-codeSamples: {$ref: get.cs}`) are opaque to OpenAPI: not followed.
            if not names and (k == "$ref" or k in _DATA_KEYS and path or k.startswith("x-")):
                continue
            if isinstance(v, (dict, list)):
                yield from _refs(v, (*path, k), not names and k in NAME_MAPS)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            if isinstance(v, (dict, list)):
                yield from _refs(v, (*path, i), False)


@dataclass
class Contract:
    """One parsed OpenAPI document and the resolver that knows its referenced files."""

    path: Path
    data: dict[str, Any]
    resolver: RefResolver
    valid: bool = True  # False when the document breaks the OpenAPI schema (lint then checks what it safely can)
    openapi_version: str = field(init=False)

    def __post_init__(self) -> None:
        self.openapi_version = "3.1" if str(self.data.get("openapi", "")).startswith("3.1") else "3.0"

    @property
    def name(self) -> str:
        return display(self.path)


def find_contract_files(paths: list[Path]) -> tuple[list[Path], list[ContractProblem]]:
    """Files given directly, plus top-level contract files of given folders (subfolders hold shared fragments)."""
    files: list[Path] = []
    problems: list[ContractProblem] = []
    for p in paths:
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix in CONTRACT_SUFFIXES)
            if not found:
                problems.append(ContractProblem(display(p), "", "folder holds no contract files"))
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            problems.append(ContractProblem(display(p), "", "no such file or folder"))
    return files, problems


def load_contracts(paths: list[Path], verify: bool = True) -> tuple[list[Contract], list[ContractProblem]]:
    """Parse, resolve refs and validate every contract under `paths`. Returns contracts and all problems.

    `verify=False` only parses (the compile cache vouches for the rest: contracts/cache.py)."""
    from .spec import spec_problems, version_problem

    files, problems = find_contract_files(paths)
    contracts = []
    for file in files:
        resolver = RefResolver()
        data = resolver.document(file)
        problems.extend(resolver.problems)
        resolver.problems.clear()
        name = display(file)
        if data is None:
            continue
        refused = version_problem(name, data)
        if refused is not None:
            problems.append(refused)
            continue
        if not verify:
            contracts.append(Contract(file, data, resolver))
            continue
        ref_problems = _check_refs(file, data, resolver)
        problems.extend(ref_problems)
        spec = spec_problems(name, data)
        problems.extend(spec)
        if ref_problems:
            continue  # nothing further can be checked reliably over broken references
        # Linted even when the schema check found problems, so that one run reports everything.
        contracts.append(Contract(file, data, resolver, valid=not spec))
    return contracts, problems


def _check_refs(file: Path, data: Any, resolver: RefResolver) -> list[ContractProblem]:
    """Resolve every `$ref` reachable from `data`, following into referenced files; report the broken ones."""
    problems: list[ContractProblem] = []
    pending = [(file.resolve(), data)]
    visited = {file.resolve()}
    while pending:
        current, doc = pending.pop()
        for where, ref in iter_refs(doc):
            try:
                target, _, _ = resolver.resolve(ref, current)
            except LookupError as exc:
                problems.append(ContractProblem(display(current), pointer_join(where, "$ref"), str(exc)))
                continue
            if target not in visited:
                visited.add(target)
                pending.append((target, resolver.documents[target]))
    problems.extend(resolver.problems)
    resolver.problems.clear()
    return problems


def display(path: Path) -> str:
    """A path as people want to read it: relative to the working directory when it is inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
