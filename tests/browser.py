"""Headless Debian chromium for the tests that must see a page as a person would (docs portal, operator page).

Found at /usr/bin/chromium; on a machine without it, installed with apt-get when we are root (CI's machine is);
otherwise the test fails saying how to install it. Never skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--window-size=1280,1600"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True, timeout=900)
        if found := shutil.which("chromium"):
            return found
    pytest.fail("chromium is required for browser tests: `apt-get install chromium` (Debian's package)")


def render(url: str, screenshot: str | None = None, wait_ms: int = 8000) -> str:
    """The DOM of `url` after its scripts ran for up to `wait_ms` of virtual time; optionally a PNG screenshot."""
    binary = chromium()
    with tempfile.TemporaryDirectory() as profile:
        base = [binary, *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={wait_ms}"]
        dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=120)
        if screenshot:
            ARTIFACTS.mkdir(exist_ok=True)
            subprocess.run([*base, f"--screenshot={ARTIFACTS / screenshot}", url], capture_output=True, timeout=120)
    return dom.stdout


def console_of(url: str, wait_ms: int = 5000) -> tuple[str, list[str]]:
    """(DOM, console messages) of `url` after its scripts ran: CSP refusals ("... violates the following Content
    Security Policy directive ...") and script errors are among the messages."""
    binary = chromium()
    with tempfile.TemporaryDirectory() as profile:
        run = subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={wait_ms}",
                              "--enable-logging=stderr", "--v=0", "--dump-dom", url],
                             capture_output=True, text=True, timeout=120)
    return run.stdout, [line for line in run.stderr.splitlines() if ":CONSOLE" in line]
