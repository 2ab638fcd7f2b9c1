"""Which HTTP client should carry vendor calls? The gateway in front of nginx, once per transport.

Run: .venv/bin/python bench/transport.py [--seconds 10]
The gateway (one worker, CPU 0) validates GET /v1/orders/{id} and POST /v1/orders (the 15-field body) and forwards
them with the generic http adapter; nginx and wrk share CPU 1. Authentication is left out here (this measures
the transport); bench/run.py measures the full chain.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import yaml
from lib import BENCH, GATEWAY_CPU, VENV_BIN, Result, nginx_upstream, pinned, process, wrk

PORT = 9200


def config(tmp: Path, upstream: str, transport: str) -> Path:
    contract = yaml.safe_load((BENCH / "contract.yaml").read_text())
    contract.pop("security", None)
    for item in contract["paths"].values():
        for op in item.values():
            op.pop("security", None)
    (tmp / "contract.yaml").write_text(yaml.safe_dump(contract, sort_keys=False))
    path = tmp / f"gateway-{transport}.yaml"
    path.write_text(yaml.safe_dump({
        "contracts": [str(tmp / "contract.yaml")], "transport": transport,
        "server": {"host": "127.0.0.1", "port": PORT},
        "vendors": {"upstream": {"adapter": "http", "base_url": upstream}},
    }))
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    body = (BENCH / "order.json").read_bytes()
    results: list[Result] = []
    with nginx_upstream() as upstream, tempfile.TemporaryDirectory() as tmp:
        results.append(wrk("nginx direct GET", upstream + "/orders/ord_12345678", seconds=args.seconds))
        for transport in ("h1", "aiohttp"):
            cfg = config(Path(tmp), upstream, transport)
            cmd = pinned(GATEWAY_CPU, [str(VENV_BIN / "gateway"), "serve", "--config", str(cfg)])
            with process(cmd, PORT, env={"GATEWAY_LOG_LEVEL": "WARNING"}):
                base = f"http://127.0.0.1:{PORT}/v1"
                results.append(wrk(f"gateway GET ({transport})", base + "/orders/ord_12345678", seconds=args.seconds))
                results.append(wrk(f"gateway POST ({transport})", base + "/orders", seconds=args.seconds,
                                   method="POST", body=body, headers={"Content-Type": "application/json"}))
    print("| run | req/s | p50 ms | p99 ms | CPU µs/req | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(r.row())


if __name__ == "__main__":
    main()
