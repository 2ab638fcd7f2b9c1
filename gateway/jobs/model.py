"""What a durable job is, the life it goes through, and the store interface both backends implement.

    pending ──claim──> running ──success──> succeeded
       ^                  │ transient failure (5xx, timeout, 429, breaker open): retrying, run_after = backoff
       └──────────────────┘ business refusal (vendor 4xx) or attempts/age exhausted: dead (a dead letter)
    dead ──replay──> pending          dead ──discard──> discarded
    running with an expired lease (its worker died) ──claim──> running again (at least once)
    running with an expired lease and no attempts left ──claim──> dead (a job that kills its worker every time)

Every attempt is in the job's history: one entry per attempt with its number and outcome (succeeded, retry, dead),
and an `abandoned` entry, with the time its lease expired, for an attempt whose worker died before it could say how
it ended. Claims (which start an attempt) and outcomes are committed durably, so no crash of a worker or of the
store can hide an attempt; the next attempt of a job that has a history knows an earlier one may have had an effect
(`AdapterCall.earlier_attempt_since`) and adapters of vendors without idempotency keys look for it first.

Jobs that share an ordering key (e.g. an order id) run one at a time in the order they were accepted: a job is
claimable only when no earlier job with its key is still pending, retrying or running.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

from gateway.problems import DependencyUnavailable

if TYPE_CHECKING:
    from gateway.events.outbox import OutboxEvent, Staged

ACTIVE = ("pending", "retrying", "running")
PUBLIC_STATE = {"pending": "pending", "retrying": "failed", "running": "running", "succeeded": "succeeded",
                "dead": "dead", "discarded": "dead"}


LOST = {"title": "The job's worker stopped every time it ran it",
        "detail": "each attempt ended with the worker gone (killed, out of memory, restarted) before it finished"}
ABANDONED_ERROR = "worker lost: the lease expired with no outcome"


def abandoned_attempt(attempt: int, started_at: float | None, lease_until: float | None,
                      worker: str | None) -> dict[str, Any]:
    """The history entry of an attempt whose worker died: when it started, who ran it, when its lease ran out."""
    return {"attempt": attempt, "outcome": "abandoned", "at": iso(started_at), "ms": None, "status": None,
            "lease_expired_at": iso(lease_until), "worker": worker, "error": ABANDONED_ERROR}


def replayed_entry(now: float) -> dict[str, Any]:
    """The history entry of an operator's replay: the attempts after it are counted from 1 again."""
    return {"outcome": "replayed", "at": iso(now)}


def new_job_id() -> str:
    return "job_" + secrets.token_hex(12)


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


@dataclass(frozen=True)
class RetrySchedule:
    """Exponential backoff with full jitter, bounded by attempts and by age."""

    max_attempts: int = 8
    base_s: float = 2.0
    cap_s: float = 3600.0
    max_age_s: float = 86_400.0

    def delay(self, attempt: int) -> float:
        return random.uniform(self.base_s / 2, min(self.cap_s, self.base_s * 2 ** (attempt - 1)))


@dataclass
class NewJob:
    kind: str  # operation | webhook_in | webhook_out
    name: str  # the operation key, the inbound event type, or the outbound subscription
    payload: dict[str, Any]
    client_id: str | None = None
    vendor: str | None = None
    ordering_key: str | None = None
    dedupe_key: str | None = None  # a second enqueue with the same key returns the first job
    request_id: str | None = None
    schedule: RetrySchedule = field(default_factory=RetrySchedule)
    id: str = field(default_factory=new_job_id)


@dataclass
class Job:
    id: str
    kind: str
    name: str
    payload: dict[str, Any]
    client_id: str | None
    vendor: str | None
    ordering_key: str | None
    request_id: str | None
    state: str
    attempts: int
    max_attempts: int
    created_at: float
    updated_at: float
    run_after: float
    expires_at: float
    result: dict[str, Any] | None = None
    problem: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    base_s: float = 2.0
    cap_s: float = 3600.0
    discard_reason: str | None = None

    @property
    def schedule(self) -> RetrySchedule:
        return RetrySchedule(self.max_attempts, self.base_s, self.cap_s, self.expires_at - self.created_at)

    def status_document(self) -> dict[str, Any]:
        """The operation status resource (GET /v1/operations/{id})."""
        doc: dict[str, Any] = {"id": self.id, "state": PUBLIC_STATE[self.state], "operation": self.name,
                               "attempts": self.attempts, "created_at": iso(self.created_at),
                               "updated_at": iso(self.updated_at)}
        if self.state == "retrying":
            doc["next_attempt_at"] = iso(self.run_after)
        if self.result is not None:
            doc["result"] = self.result
        if self.problem is not None:
            doc["problem"] = self.problem
        return doc


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended: `succeeded`, `retry` (with a delay) or `dead`, with what to keep."""

    state: str
    attempt: dict[str, Any]
    result: dict[str, Any] | None = None
    problem: dict[str, Any] | None = None
    retry_in_s: float = 0.0
    # Written in the same transaction as this outcome, only if it is recorded: the success's webhook deliveries and
    # its events for the backbone (gateway/events/outbox.py).
    staged: Staged | None = None


@dataclass(frozen=True)
class DeadLetterFilter:
    vendor: str | None = None
    operation: str | None = None
    since: float | None = None
    until: float | None = None
    error: str | None = None  # a substring of the last attempt's error or problem type
    limit: int = 100


class StoreDown(Exception):
    """The job store cannot be reached, is known to be down, or did not answer in time (a 503 for the caller).

    `maybe_done`: the call was sent but its answer never came, so it may have taken effect after all.
    """

    def __init__(self, message: str, *, maybe_done: bool = False) -> None:
        super().__init__(message)
        self.maybe_done = maybe_done

    def problem(self, what: str) -> DependencyUnavailable:
        """The 503 problem for a caller whose `what` needed the store."""
        return DependencyUnavailable(f"{what}: the job store is unavailable ({self}); try again shortly")


class JobStore(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def enqueue(self, job: NewJob) -> Job: ...

    async def claim(self, owner: str, lease_s: float, limit: int, vendors: set[str] | None = None) -> list[Job]: ...

    async def extend(self, job_id: str, owner: str, lease_s: float) -> bool: ...

    async def finish(self, job_id: str, owner: str, outcome: Outcome) -> bool: ...

    async def get(self, job_id: str) -> Job | None: ...

    async def dead_letters(self, flt: DeadLetterFilter) -> list[Job]: ...

    async def replay(self, job_id: str) -> bool: ...

    async def discard(self, job_id: str, reason: str) -> bool: ...

    async def stats(self) -> dict[str, float]: ...

    async def stage(self, staged: Staged) -> None: ...  # jobs and outbox events, one transaction

    async def outbox_pending(self, limit: int) -> list[OutboxEvent]: ...

    async def outbox_done(self, ids: list[str]) -> None: ...

    async def outbox_stats(self) -> dict[str, float]: ...

    async def check(self) -> dict[str, Any]: ...  # for /readyz: {"ok", "state", "since", "error"?}
