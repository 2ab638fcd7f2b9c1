"""Compare JSON-Schema validators on the benchmark contract's NewOrder body (µs per validation).

Run: .venv/bin/python bench/validators.py
"""
import copy
import json
import timeit
from pathlib import Path

import fastjsonschema
import jsonschema
import jsonschema_rs
import yaml

PEERS = Path(__file__).resolve().parents[1] / ".." / "shared" / "bench-peers"
spec = yaml.safe_load((PEERS / "contract.yaml").read_text())
schemas = spec["components"]["schemas"]
schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$ref": "#/$defs/NewOrder",
          "$defs": schemas}
schema = json.loads(json.dumps(schema).replace("#/components/schemas/", "#/$defs/"))
body = json.loads((PEERS / "body.json").read_text())
bad = copy.deepcopy(body)
bad["currency"] = "XXX"
bad["items"][0]["quantity"] = 0
bad["customer_email"] = "not-an-email"

rs = jsonschema_rs.validator_for(schema, validate_formats=True)
fj = fastjsonschema.compile(schema, formats={})
js = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def fj_valid(x):
    try:
        fj(x)
        return True
    except fastjsonschema.JsonSchemaException:
        return False


N = 20000
for name, fn in [("jsonschema-rs is_valid", lambda: rs.is_valid(body)),
                 ("jsonschema-rs iter_errors (valid)", lambda: list(rs.iter_errors(body))),
                 ("jsonschema-rs iter_errors (3 errors)", lambda: list(rs.iter_errors(bad))),
                 ("fastjsonschema (valid)", lambda: fj_valid(body)),
                 ("fastjsonschema (invalid, first error only)", lambda: fj_valid(bad)),
                 ("jsonschema (valid)", lambda: list(js.iter_errors(body)))]:
    n = N // 20 if name.startswith("jsonschema (") else N
    t = min(timeit.repeat(fn, number=n, repeat=3)) / n * 1e6
    print(f"{name:45s} {t:8.1f} µs")
print("rs errors:", [(e.instance_path, e.message) for e in rs.iter_errors(bad)])
