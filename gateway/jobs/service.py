"""The job machinery of one gateway process: the store (SQLite or PostgreSQL) and, unless disabled, its workers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from gateway.observability import metrics

from .model import JobStore
from .postgres import PostgresJobStore
from .runner import JobRunner
from .sqlite import SqliteJobStore

if TYPE_CHECKING:
    from gateway.contracts.compile import Operation
    from gateway.settings import Settings

    from .runner import Handler


def job_store(settings: Settings, timeout_s: float | None = None) -> JobStore:
    """The configured store; every call bounded by `stores.timeout_s` (or `timeout_s`: the CLI waits longer)."""
    cfg = settings.jobs
    bound = settings.stores.timeout_s if timeout_s is None else timeout_s
    probe = settings.stores.probe_interval_s
    if cfg.backend == "postgres":
        assert cfg.postgres_dsn is not None
        return PostgresJobStore(cfg.postgres_dsn.get_secret_value(), timeout_s=bound, probe_interval_s=probe)
    path = cfg.sqlite_path if cfg.sqlite_path.is_absolute() else settings.base_dir / cfg.sqlite_path
    return SqliteJobStore(path, timeout_s=bound, probe_interval_s=probe)


class Jobs:
    def __init__(self, settings: Settings, operations: Mapping[str, Operation], run_workers: bool) -> None:
        self.settings = settings.jobs
        self.store = job_store(settings)
        workers = self.settings.workers if run_workers else 0
        self.runner = JobRunner(operations, self.store, workers, self.settings.lease_s, self.settings.poll_s,
                                self.settings.vendor_concurrency) if workers else None
        self.status_template = "/v1/operations/{id}"

    def handle(self, **handlers: Handler) -> None:
        """Run jobs of these kinds (besides `operation`) with these handlers, e.g. webhook deliveries."""
        if self.runner is not None:
            self.runner.handlers.update(handlers)

    def status_url(self, job_id: str) -> str:
        return self.status_template.replace("{id}", job_id)

    def notify(self) -> None:
        if self.runner is not None:
            self.runner.notify()

    async def start(self) -> None:
        await self.store.start()
        if self.runner is not None:
            self.runner.start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.stop()
        await self.store.close()

    async def refresh_metrics(self) -> dict[str, float]:
        stats = await self.store.stats()
        metrics.jobs_queue_depth.set(stats["depth"])
        metrics.jobs_oldest_age_seconds.set(stats["oldest_age_s"])
        metrics.jobs_dead.set(stats["dead"])
        return stats
