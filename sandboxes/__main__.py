"""`python -m sandboxes [--host H] [--stripe-port N ...]`: serve every vendor sandbox until interrupted."""

from __future__ import annotations

import argparse

from sandboxes import PORTS
from sandboxes.base import serve_sandboxes


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m sandboxes", description="serve the vendor sandboxes")
    parser.add_argument("--host", default="127.0.0.1")
    for name, port in PORTS.items():
        parser.add_argument(f"--{name}-port", type=int, default=port)
    args = parser.parse_args()
    serve_sandboxes(args.host, {name: getattr(args, f"{name}_port") for name in PORTS})


if __name__ == "__main__":
    main()
