"""The gateway's own operations, routed like any other (`route: gateway.<operation>`): the operation status
resource of asynchronous work. A client sees only its own operations: anyone else's is a 404, not a 403, so that
operation ids cannot be probed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from adapters.base import Adapter, AdapterCall, AdapterResult, operation
from gateway.jobs.model import StoreDown
from gateway.problems import ResourceNotFound

if TYPE_CHECKING:
    from gateway.jobs.model import JobStore

VENDOR = "gateway"


class GatewayOperationsAdapter(Adapter):
    name = "gateway"
    jobs: JobStore | None = None

    async def startup(self) -> None:
        return None  # no vendor to connect to

    async def shutdown(self) -> None:
        return None

    @operation
    async def get_operation(self, call: AdapterCall) -> AdapterResult:
        assert self.jobs is not None
        try:
            job = await self.jobs.get(call.params["operation_id"])
        except StoreDown as exc:  # a 503 with Retry-After within the store's bound, never a 500
            raise exc.problem("the operation's status cannot be read") from None
        if job is None or job.client_id != call.client_id:
            raise ResourceNotFound("no such operation")
        return AdapterResult(200, job.status_document())
