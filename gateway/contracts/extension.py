"""The `x-gateway` extension: what a contract says about how the gateway serves it.

At the document root (applies to every operation of the API):

    x-gateway:
      api: orders                 # API name in metrics, logs and the docs portal (default: file name)
      version: v1                 # default: "v" + major of info.version
      response_validation: report # enforce (default, from gateway.yaml) | report

On an operation:

    x-gateway:
      route: woocommerce.create_order    # <vendor from gateway.yaml>.<adapter operation>  (required)
      upstream_path: /orders/{order_id}  # http adapter only: where to forward (default: the contract path)
      response_validation: enforce
      options: {...}                     # static options handed to the adapter operation

Values set on the operation win over the root, which wins over gateway.yaml (merged once, at compile time).
Unknown keys are errors, so a typo cannot silently disable a policy.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Ext(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiExtension(_Ext):
    api: str | None = Field(None, pattern=r"^[a-z][a-z0-9-]{0,40}$")
    version: str | None = Field(None, pattern=r"^v[0-9]{1,3}$")
    response_validation: Literal["enforce", "report"] | None = None


class OperationExtension(_Ext):
    route: str = Field(pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z_][A-Za-z0-9_]*$")
    upstream_path: str | None = Field(None, pattern=r"^/")
    response_validation: Literal["enforce", "report"] | None = None
    options: dict[str, Any] = Field(default_factory=dict)
