"""gateway/ and adapters/ type-check: mypy with the configuration in pyproject.toml ([tool.mypy]), on every `make test`.

The cache under .mypy_cache makes a run after a small change take about a second (a cold run about ten)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_ERROR = re.compile(r"^\S+\.py:\d+(?::\d+)?: error: ", re.MULTILINE)


def test_gateway_and_adapters_type_check():
    """No mypy error in the configured files (`files` in [tool.mypy]; strict overrides on the request path)."""
    out = subprocess.run([str(Path(sys.executable).parent / "mypy"), "--config-file", str(ROOT / "pyproject.toml"),
                          "--cache-dir", str(ROOT / ".mypy_cache"), "--no-color-output", "--no-error-summary"],
                         cwd=ROOT, capture_output=True, text=True, timeout=240)
    errors = _ERROR.findall(out.stdout)
    assert out.returncode == 0 and not errors, (
        f"mypy found {len(errors)} error(s):\n{out.stdout}{out.stderr}")
