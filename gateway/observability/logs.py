"""Structured logs: one line per event, JSON (orjson) or console, to stdout/stderr/a file, recent lines in memory.

Three kinds of line, all carrying `request_id` when they belong to a request:

    access          one per contract request (observability/access.py): route template, status, duration, client,
                    API/version/operation, vendor, attempts, breaker state, rate-limit decision, idempotency...
    vendor_attempt  one per vendor attempt (adapters/client.py): vendor, operation, method, path, status or
                    error, milliseconds, the vendor's own request id
    log             everything written with the stdlib `logging` module (warnings, retries, errors), turned into
                    the same JSON by `JsonHandler`

Masking. Access and vendor-attempt lines are built from a fixed set of fields that never hold a header, a body or
a credential. Every other line passes through `mask()`: a field whose name looks like a credential (authorization,
cookie, *token*, *secret*, *password*, api keys) or that a contract marks `x-sensitive: true` is replaced by
"***", and credentials in free text (Bearer tokens, JWTs, vendor keys such as sk_test_...) are cut out.

Lines are written with os.write(), whole lines even when several worker processes append to the same file
(O_APPEND) or pipe (at most PIPE_BUF bytes per write). Lines emitted on the event loop are collected during one loop
step and written together at its end (one system call for many requests' lines); others are written at once.
The last `recent_lines` lines stay in memory so an operator can ask "what happened to request X?" without a log
pipeline (`gateway trace`, /admin/requests/{id}).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import re
import select
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from gateway.settings import LoggingSettings

LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40}
LEVEL_NAMES = {10: "debug", 20: "info", 30: "warning", 40: "error", 50: "critical"}
MASK = "***"
# Field names that are credentials wherever they appear (compared lower-case; substrings for the generic ones).
MASKED_NAMES = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api_key",
                          "apikey", "password", "client_secret", "secret", "token", "access_token",
                          "refresh_token", "id_token", "secret_key", "consumer_key", "consumer_secret",
                          "stripe-signature", "webhook-signature"})
MASKED_PARTS = ("secret", "password", "token", "authorization", "cookie", "api_key", "apikey", "signature")
# Credentials in free text: bearer tokens, JWTs, vendor keys (Stripe sk_/rk_/whsec_, HubSpot pat-, ours cgk_...).
_SECRET_TEXT = re.compile(
    r"(?i)(bearer|basic)\s+[A-Za-z0-9._~+/=-]{8,}"
    r"|eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"
    r"|\b(?:sk|rk|pk)_(?:test|live)_[A-Za-z0-9]{6,}|\bwhsec_[A-Za-z0-9+/=]{6,}|\bpat-[a-z0-9]+-[A-Za-z0-9-]{4,}"
    r"|\bcgk_[A-Za-z0-9_]{6,}|\b(?:ck|cs)_[A-Za-z0-9]{8,}")

# Field names contracts mark `x-sensitive: true` (every runtime adds its own; see Runtime).
SENSITIVE: set[str] = set()


def sensitive_fields(documents: Iterable[Any]) -> set[str]:
    """Names of the properties any contract marks `x-sensitive: true` (masked in every log line)."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict):
                for name, schema in props.items():
                    if isinstance(schema, dict) and schema.get("x-sensitive") is True:
                        found.add(name.lower())
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for doc in documents:
        walk(doc)
    return found


def is_masked_name(name: str) -> bool:
    low = name.lower()
    return low in MASKED_NAMES or low in SENSITIVE or any(part in low for part in MASKED_PARTS)


def mask_text(text: str) -> str:
    return _SECRET_TEXT.sub(MASK, text)


def mask(value: Any) -> Any:
    """A copy of `value` with credentials and sensitive fields replaced by '***'."""
    if isinstance(value, dict):
        return {k: (MASK if isinstance(k, str) and is_masked_name(k) else mask(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask(v) for v in value]
    if isinstance(value, str):
        return mask_text(value)
    return value


_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))


class _Clock:
    """ISO-8601 UTC timestamps with milliseconds; the seconds part is formatted once per second."""

    __slots__ = ("second", "prefix")

    def __init__(self) -> None:
        self.second = -1
        self.prefix = ""

    def now(self) -> str:
        t = time.time()
        second = int(t)
        if second != self.second:
            self.second = second
            self.prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return self.prefix + _MILLIS[int((t - second) * 1000)]


class EventLog:
    """Where the gateway's log lines go. `emit` takes fields known to be safe; `event` masks them first."""

    def __init__(self, settings: LoggingSettings, base_dir: Path = Path(".")) -> None:
        self.settings = settings
        self.level = LEVELS[settings.level]
        self.access = settings.access and self.level <= LEVELS["INFO"]  # checked once per request
        self.json = settings.format == "json"
        self.recent: deque[bytes] = deque(maxlen=settings.recent_lines or None)
        self.keep = settings.recent_lines > 0
        self.clock = _Clock()
        self.fd: int | None
        self._own_fd = False
        out = settings.output
        if out == "stdout":
            self.fd = sys.__stdout__.fileno() if sys.__stdout__ else None
        elif out == "stderr":
            self.fd = sys.__stderr__.fileno() if sys.__stderr__ else None
        elif out == "none":
            self.fd = None
        else:
            path = Path(out) if Path(out).is_absolute() else base_dir / out
            path.parent.mkdir(parents=True, exist_ok=True)
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            self._own_fd = True
        self.path = None if out in ("stdout", "stderr", "none") else out
        # Lines emitted on the event loop are written once per loop step, together (one system call for the
        # access and vendor lines of every request that step finished); atexit writes what a last step left.
        self.batch: list[bytes] | None = None
        self.lock = threading.Lock()
        atexit.register(self.flush)

    def emit(self, level: int, event: str, fields: dict[str, Any]) -> None:
        """Write one line. `fields` must already be safe to log (no credential, header or body)."""
        fields["ts"] = self.clock.now()
        fields["level"] = LEVEL_NAMES.get(level, "info")
        fields["event"] = event
        line = orjson.dumps(fields, option=orjson.OPT_APPEND_NEWLINE)
        if self.keep:
            self.recent.append(line)
        if self.fd is not None:
            data = line if self.json else console_line(fields)
            with self.lock:  # other threads log too; tests and benchmarks run several loops in one process
                if self.batch is not None:  # a batch is pending: join it (lines keep their order)
                    self.batch.append(data)
                    return
                try:
                    loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
                    self.batch = [data]
                except RuntimeError:  # another thread, or no loop running: written now
                    loop = None
            if loop is None:
                self._write(data)
            else:
                loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write the lines batched during this loop step: whole lines, at most PIPE_BUF bytes per write, so lines
        of several workers sharing a pipe never interleave."""
        with self.lock:
            batch, self.batch = self.batch, None
        if not batch:
            return
        chunk: list[bytes] = []
        size = 0
        for data in batch:
            if chunk and size + len(data) > select.PIPE_BUF:
                self._write(b"".join(chunk))
                chunk, size = [], 0
            chunk.append(data)
            size += len(data)
        self._write(chunk[0] if len(chunk) == 1 else b"".join(chunk))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view and self.fd is not None:
                view = view[os.write(self.fd, view):]  # a partial write (a socket, a full pipe): the rest follows
        except OSError:
            pass  # a full disk or a closed pipe must not fail requests

    def event(self, level: int, event: str, fields: dict[str, Any]) -> None:
        """Write one line of arbitrary fields, masked."""
        if level >= self.level:
            self.emit(level, event, mask(fields))

    def lines_for(self, request_id: str) -> list[dict[str, Any]]:
        """The recent lines of one request, oldest first."""
        needle = orjson.dumps(request_id)
        return [orjson.loads(line) for line in list(self.recent) if needle in line]

    def close(self) -> None:
        self.flush()
        atexit.unregister(self.flush)
        if self._own_fd and self.fd is not None:
            os.close(self.fd)
            self.fd = None


_ORDER = ("ts", "level", "event", "request_id", "msg")


def console_line(fields: dict[str, Any]) -> bytes:
    """`ts level event key=value ...`: the same fields, for a person at a terminal."""
    head = f"{fields['ts']} {fields['level'].upper():7} {fields['event']:14}"
    rest = " ".join(f"{k}={v if isinstance(v, (str, int, float)) else orjson.dumps(v).decode()}"
                    for k, v in fields.items() if k not in _ORDER[:3] and v is not None)
    return f"{head} {rest}\n".encode()


# Attributes every LogRecord has; anything else came from `extra=` and is logged as a field.
_RECORD_ATTRS = frozenset(logging.LogRecord("x", 0, "x", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonHandler(logging.Handler):
    """Turns stdlib log records into masked lines of the current EventLog."""

    def __init__(self) -> None:
        super().__init__()
        self.target: EventLog | None = None

    def emit(self, record: logging.LogRecord) -> None:
        target = self.target
        if target is None or record.levelno < target.level:
            return
        try:
            fields: dict[str, Any] = {"logger": record.name, "msg": record.getMessage()}
            for key, value in record.__dict__.items():
                if key not in _RECORD_ATTRS and not key.startswith("_"):
                    fields[key] = value
            if record.exc_info:
                fields["exc"] = self.formatter.formatException(record.exc_info) if self.formatter else \
                    logging.Formatter().formatException(record.exc_info)
            target.emit(record.levelno, "log", mask(fields))
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


HANDLER = JsonHandler()


def install(events: EventLog) -> None:
    """Route the stdlib loggers of this process (gateway, adapters, uvicorn errors) into `events`."""
    HANDLER.target = events
    root = logging.getLogger()
    if HANDLER not in root.handlers:
        for handler in list(root.handlers):
            if isinstance(handler, logging.StreamHandler) and getattr(handler, "stream", None) in (
                    sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__):
                root.removeHandler(handler)  # basicConfig's plain-text handler: replaced by ours
        root.addHandler(HANDLER)
    for name in ("gateway", "adapters"):
        logging.getLogger(name).setLevel(events.level)
