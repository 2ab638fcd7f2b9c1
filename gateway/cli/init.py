"""`gateway init OPENAPI_FILE_OR_URL --upstream URL`: serve a third-party API from its own document in one step.

Writes `contracts/<api>.yaml|json` (the document, with one `x-gateway: {api, route: upstream.forward}` block at its
root: every operation is forwarded to the upstream) and a minimal `gateway.yaml` (when there is none), then checks
the result and says what to run next. A Swagger 2.0 document is refused with the conversion hint; a document split
over several files is written as one (its references to other files imported).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

VENDOR = "upstream"
_API_NAME = re.compile(r"^[a-z][a-z0-9-]{0,40}$")


def _fetch(source: str, into: Path) -> Path:
    """The document at `source` (a path, or an http(s) URL downloaded into `into`)."""
    if not source.startswith(("http://", "https://")):
        return Path(source)
    import httpx

    try:
        response = httpx.get(source, timeout=30, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise SystemExit(f"cannot download {source}: {exc}") from None
    if response.status_code != 200:
        raise SystemExit(f"cannot download {source}: HTTP {response.status_code}")
    text = response.text
    suffix = ".json" if text.lstrip().startswith("{") else ".yaml"
    path = into / f"downloaded{suffix}"
    path.write_text(text, encoding="utf-8")
    return path


def api_name(data: dict[str, Any], fallback: str) -> str:
    """x-gateway.api if the document has one, else its title (or file name) as a slug (`Redocly Cafe`: redocly-cafe)."""
    given = (data.get("x-gateway") or {}).get("api") if isinstance(data.get("x-gateway"), dict) else None
    if isinstance(given, str) and _API_NAME.match(given):
        return given
    title = str((data.get("info") or {}).get("title") or fallback)
    slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40].strip("-")
    if not slug or not slug[0].isalpha():
        slug = ("api-" + slug)[:40].strip("-")
    return slug or "api"


def _has_file_refs(node: Any) -> bool:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            return True
        return any(_has_file_refs(v) for k, v in node.items() if not str(k).startswith("x-"))
    return isinstance(node, list) and any(_has_file_refs(v) for v in node)


def _with_block(path: Path, data: dict[str, Any], block: dict[str, str]) -> str:
    """The text of the document at `path` with the block at its root, in the file's own format."""
    merged = {**(data.get("x-gateway") or {}), **block} if isinstance(data.get("x-gateway"), dict) else block
    if path.suffix == ".json":
        return json.dumps({**data, "x-gateway": merged}, indent=2, ensure_ascii=False) + "\n"
    if "x-gateway" in data:
        return yaml.safe_dump({**data, "x-gateway": merged}, sort_keys=False, allow_unicode=True)
    # The text as written (comments, order) and the block appended: a root key like any other.
    text = path.read_text(encoding="utf-8").rstrip("\n") + "\n"
    return text + "x-gateway:\n" + "".join(f"  {k}: {v}\n" for k, v in merged.items())


def _files_of(path: Path) -> list[Path]:
    """Every file a document is made of (its root first), as the gateway resolves them."""
    from gateway.contracts.load import load_contracts

    contracts, _ = load_contracts([path])
    return [path.resolve(), *(f for f in contracts[0].resolver.documents if f != path.resolve())] if contracts \
        else [path.resolve()]


def _write(source: Path, data: dict[str, Any], api: str, contracts: Path, force: bool) -> tuple[Path, str]:
    """Write the document under `contracts`; (its root file, the `contracts:` entry of gateway.yaml)."""
    block = {"api": api, "route": f"{VENDOR}.forward"}
    if not _has_file_refs(data):
        out = contracts / f"{api}{'.json' if source.suffix == '.json' else '.yaml'}"
        if out.exists() and not force:
            raise SystemExit(f"{out} exists: pass --force to replace it")
        contracts.mkdir(parents=True, exist_ok=True)
        out.write_text(_with_block(source, data, block), encoding="utf-8")
        return out, "contracts"
    # Several files: copied side by side (relative references keep working) into contracts/<api>/.
    files = _files_of(source)
    base = Path(os.path.commonpath([f.parent for f in files]))
    folder = contracts / api
    if folder.exists() and not force:
        raise SystemExit(f"{folder} exists: pass --force to replace it")
    for file in files:
        out = folder / file.relative_to(base)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(file.read_bytes())
    root = folder / source.resolve().relative_to(base)
    root.write_text(_with_block(source.resolve(), data, block), encoding="utf-8")
    return root, str(root.relative_to(contracts.parent))


def cmd_init(args: argparse.Namespace) -> int:
    from gateway.contracts.load import read_document
    from gateway.contracts.spec import version_problem

    target = Path(args.dir)
    with tempfile.TemporaryDirectory() as tmp:
        source = _fetch(args.source, Path(tmp))
        if not source.is_file():
            print(f"no such file: {source}", file=sys.stderr)
            return 1
        data, problems = read_document(source.resolve())
        if data is None or problems:
            print(*(str(p) for p in problems), sep="\n", file=sys.stderr)
            return 1
        refused = version_problem(str(args.source), data)
        if refused is not None:
            print(f"{args.source}: {refused.reason}", file=sys.stderr)
            return 1
        api = args.api or api_name(data, source.stem)
        out, entry = _write(source, data, api, target / "contracts", args.force)
    config = target / "gateway.yaml"
    print(f"wrote {out}")
    if config.exists():
        print(f"{config} exists and was left as it is; it needs the contract and a vendor for the route:\n"
              f"  contracts: [..., {entry}]\n"
              f"  vendors:\n    {VENDOR}: {{adapter: http, base_url: {args.upstream}}}")
    else:
        config.write_text(_config(args.upstream, entry))
        print(f"wrote {config}")
    return _check_and_advise(config, data)


def _config(upstream: str, entry: str) -> str:
    return ("# Written by `gateway init`: the contracts in contracts/, every operation forwarded to the upstream.\n"
            f"contracts: [{entry}]\n"
            "server: {host: 127.0.0.1, port: 8080}\n"
            "vendors:\n"
            f"  {VENDOR}: {{adapter: http, base_url: {json.dumps(upstream)}}}\n"
            "# Callers' credentials, if the document asks for them: API keys (`gateway api-key`), which also serve\n"
            "# HTTP Basic, or your own token issuer. docs/contracts.md says how.\n"
            "auth:\n"
            "  api_keys: []\n")


def _check_and_advise(config: Path, data: dict[str, Any]) -> int:
    from gateway.contracts.report import count_line, summarize
    from gateway.runtime import check_all
    from gateway.settings import SettingsError, load_settings

    try:
        settings = load_settings(config)
    except SettingsError as exc:
        print(f"configuration error:\n{exc}", file=sys.stderr)
        return 1
    _, operations, problems, warnings = check_all(settings)
    for line in summarize(problems + warnings):
        print(line)
    if problems:
        print(count_line(problems), file=sys.stderr)
        return 1
    schemes = sorted((data.get("components") or {}).get("securitySchemes") or {})
    print(f"ok: {len(operations)} operations, each forwarded to the upstream")
    if schemes:
        print(f"the document asks callers for credentials ({', '.join(schemes)}): see docs/contracts.md")
    print(f"next: gateway serve --config {config}")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("init", help="serve a third-party OpenAPI document: write contracts/ and gateway.yaml")
    p.add_argument("source", metavar="OPENAPI_FILE_OR_URL")
    p.add_argument("--upstream", required=True, help="base URL the operations are forwarded to")
    p.add_argument("--dir", default=".", help="where to write contracts/ and gateway.yaml (default: here)")
    p.add_argument("--api", help="the API's name (default: from x-gateway.api or info.title)")
    p.add_argument("--force", action="store_true", help="replace an existing contract file of that name")
    p.set_defaults(func=cmd_init)
