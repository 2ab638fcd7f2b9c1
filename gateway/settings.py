"""The only place configuration is read: `gateway.yaml` (how the gateway runs) plus environment variables.

Defaults live here and nowhere else. Strings may reference the environment as `${NAME}` or `${NAME:-default}`, and
any secret may be given as `file:/path` to read it from a mounted secret file (relative paths are relative to the
config file), so secrets never need to be written into the YAML itself. Unknown keys are errors: a typo must not
silently fall back to a default.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from gateway.auth.config import AuthSettings
from gateway.http.egress import EgressPolicy, EgressRefused


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TimeoutSettings(Strict):
    """Per vendor: how long one attempt may take. An attempt ends at connect_s + read_s (connecting, then the
    whole answer) or total_s, whichever is sooner, and never later than the request's deadline."""

    connect_s: float = Field(2.0, gt=0)
    read_s: float = Field(10.0, gt=0)  # the answer, once the request is sent
    write_s: float = Field(10.0, gt=0)  # unused since the httpx transport went; accepted so configurations load
    pool_s: float = Field(2.0, gt=0)  # likewise
    total_s: float = Field(15.0, gt=0)


class PoolSettings(Strict):
    max_connections: int = Field(100, ge=1)
    keepalive_expiry_s: float = Field(30.0, gt=0)
    # A vendor answer larger than this, as sent or decompressed, is refused while reading: 502 (h1, aiohttp).
    max_response_bytes: int = Field(16 * 1024 * 1024, ge=1024)


class OAuth2ClientSettings(Strict):
    """The gateway's OAuth 2.0 client credentials towards a vendor."""

    token_url: str = Field(pattern=r"^https?://")
    client_id: str
    client_secret: SecretStr
    scope: str | None = None
    audience: str | None = None
    refresh_margin_s: float = Field(60, ge=0)


class BreakerSettings(Strict):
    fail_max: int = Field(5, ge=1)
    reset_timeout_s: float = Field(30.0, gt=0)
    half_open_max_calls: int = Field(1, ge=1)


class RetrySettings(Strict):
    """Retries of one vendor call: only for idempotent methods or calls carrying an idempotency key."""

    max_attempts: int = Field(3, ge=1, le=10)
    backoff_base_s: float = Field(0.1, ge=0)
    backoff_cap_s: float = Field(2.0, ge=0)
    max_retry_after_s: float = Field(10.0, ge=0)  # a vendor asking to wait longer is not retried: the caller is told
    budget_ratio: float = Field(0.1, ge=0, le=1)  # retries may add at most this share of requests...
    budget_min_per_s: float = Field(1.0, ge=0)  # ...plus this many per second, so a quiet vendor can still retry


class BucketSpec(Strict):
    """One limit: a rate (`100/minute`, `20/10s`, optional burst) or a quota (`10000/day`, hour or month)."""

    rate: str | None = None
    burst: int | None = Field(None, ge=1)
    quota: str | None = None

    @model_validator(mode="after")
    def _one(self) -> BucketSpec:
        from gateway.stores.limiter import parse_quota, parse_rate

        if (self.rate is None) == (self.quota is None):
            raise ValueError("give exactly one of rate or quota")
        if self.rate is not None:
            parse_rate("x", self.rate, self.burst)
        else:
            if self.burst is not None:
                raise ValueError("burst applies to a rate, not to a quota")
            parse_quota("x", self.quota or "")
        return self


class VendorLimitSettings(Strict):
    """Keep the gateway under the vendor's own limits, however many callers there are."""

    rate: str | None = None  # e.g. HubSpot's burst limit: 100/10s (shared by every gateway process on Redis)
    burst: int | None = Field(None, ge=1)
    max_concurrency: int | None = Field(None, ge=1)
    max_wait_s: float = Field(0.0, ge=0)  # how long a call may wait for a concurrency slot before a 503


class VendorContractSettings(Strict):
    """The vendor's own contract (docs/vendor-contracts.md): every request checked before it is sent, every answer
    checked for drift. `enforce` refuses a request that breaks it (500 adapter-contract-violation: our bug);
    `report` sends it anyway and logs and counts it (production); `off` checks nothing."""

    mode: Literal["enforce", "report", "off"] = "report"
    file: str | None = None  # default: contracts/vendors/<adapter>.yaml when it exists
    answers: bool = True  # check answers for drift


class VendorSettings(Strict):
    """One vendor the gateway talks to: which adapter translates for it, where it lives, how we authenticate."""

    adapter: str
    base_url: str
    credentials: dict[str, SecretStr] = Field(default_factory=dict)
    oauth2: OAuth2ClientSettings | None = None
    timeouts: TimeoutSettings = TimeoutSettings()
    breaker: BreakerSettings = BreakerSettings()
    retries: RetrySettings = RetrySettings()
    limits: VendorLimitSettings = VendorLimitSettings()
    pool: PoolSettings = PoolSettings()
    options: dict[str, Any] = Field(default_factory=dict)
    contract: VendorContractSettings = VendorContractSettings()
    # `adapter: declarative`: the mapping file that is the adapter (docs/vendor-contracts.md#declarative-adapters),
    # relative to the config file; its vendor contract defaults to contracts/vendors/<vendor name>.yaml.
    mapping: str | None = None

    @model_validator(mode="after")
    def _mapping_for_declarative(self) -> VendorSettings:
        if self.adapter == "declarative" and not self.mapping:
            raise ValueError("adapter: declarative needs `mapping: <file>` (the mapping file that is the adapter)")
        if self.mapping and self.adapter != "declarative":
            raise ValueError("`mapping` is only for `adapter: declarative`")
        return self

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("must be an absolute http(s) URL")
        return v.rstrip("/")

    def secret(self, name: str) -> str:
        value = self.credentials.get(name)
        if value is None:
            raise KeyError(f"credential {name!r} is not configured")
        return value.get_secret_value()


class ServerSettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    workers: int = Field(1, ge=1)


class AdmissionSettings(Strict):
    """Admission control of each worker process (gateway/http/admission.py): an adaptive concurrency limit that
    follows the CPU (Little's law once it is full), a queue bounded by the time a request may wait, fair shares
    per client."""

    enabled: bool = True
    min_limit: int = Field(16, ge=1)
    max_limit: int = Field(10_000, ge=1)  # the limit while the loop keeps up (requests past admission at once)
    busy_ratio: float = Field(0.9, gt=0, le=1)  # the process using this share of its core means the CPU is full
    target_loop_delay_ms: float = Field(10.0, gt=0)  # so does the loop answering later than this
    target_cpu_delay_ms: float = Field(12.0, gt=0)  # on a full CPU, an admitted request waits about this for it
    probe_interval_ms: float = Field(5.0, gt=0)
    window_ms: float = Field(100.0, gt=0)  # the limit is adjusted once per window
    increase_ratio: float = Field(0.1, gt=0, le=1)
    # a client's further request that would wait longer than this is shed at once (its first always gets a place)
    max_queue_delay_ms: float = Field(1.0, gt=0)
    max_queue_wait_ms: float = Field(20.0, gt=0)  # a queued request still waiting after this is shed
    # a client refused again before its Retry-After was up gets that refusal this long after its request was read
    shed_hold_ms: float = Field(180.0, ge=0)
    retry_after_s: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _bounds(self) -> AdmissionSettings:
        if self.min_limit > self.max_limit:
            raise ValueError("admission: min_limit must not exceed max_limit")
        return self


class RequestSettings(Strict):
    body_max_bytes: int = Field(1_048_576, ge=1)
    # The whole request, every vendor attempt and backoff included, must finish within this (504 after).
    deadline_s: float = Field(20.0, gt=0)
    # Stop the vendor work of a request whose caller has disconnected (costs a small task per request).
    cancel_on_disconnect: bool = True
    admission: AdmissionSettings = AdmissionSettings()


class LimitSettings(Strict):
    """Rate limits and quotas for callers (gateway/stores/limiter.py; the buckets are declared in the contracts)."""

    backend: Literal["memory", "redis"] = "memory"
    # When Redis cannot be reached: serve (log and count), or refuse with 503. Default: serve, since a limiter
    # outage should not become an API outage; choose closed where limits protect money or a fragile vendor.
    fail_mode: Literal["open", "closed"] = "open"
    redis_timeout_s: float = Field(0.05, gt=0)
    # Callers are keyed by client id; on public operations by IP, read from X-Forwarded-For only when the
    # connection comes from one of these proxies (CIDRs).
    trusted_proxies: list[str] = Field(default_factory=list)
    plans: dict[str, dict[str, BucketSpec]] = Field(default_factory=dict)  # plan -> bucket name -> numbers
    clients: dict[str, str] = Field(default_factory=dict)  # client id -> plan
    default_plan: str | None = None

    @model_validator(mode="after")
    def _plans_exist(self) -> LimitSettings:
        for client, plan in {**self.clients, **({"(default)": self.default_plan} if self.default_plan else {})}.items():
            if plan not in self.plans:
                raise ValueError(f"client {client} is on plan {plan!r}, which is not defined in limits.plans")
        import ipaddress

        for cidr in self.trusted_proxies:
            ipaddress.ip_network(cidr, strict=False)
        return self


class IdempotencySettings(Strict):
    """Idempotency keys (draft-ietf-httpapi-idempotency-key-header) on POST and PATCH."""

    backend: Literal["memory", "redis"] = "memory"
    ttl_s: float = Field(86_400, gt=0)  # how long a first response is replayed
    # An in-flight claim is renewed by the process that holds it (every third of this) and expires this long after
    # that process stops renewing it (it died): a retry with the same key is then served, not refused with 409.
    lock_ttl_s: float = Field(5, gt=0)
    # If the shared store is down: refuse keyed requests (503) rather than risk running them twice.
    on_store_error: Literal["fail_closed", "fail_open"] = "fail_closed"


class StoreSettings(Strict):
    """The stores the gateway depends on (job store, Redis for idempotency keys): how long anyone waits for them.

    Every answer that needs a store comes within `timeout_s`: a store that does not answer in time, or is known to be
    down, is a 503 dependency-unavailable with Retry-After. A store found down is not waited on again until a probe
    (every `probe_interval_s`) reaches it; then it is used again at once, with fresh connections (docs/store-faults.md).
    """

    timeout_s: float = Field(1.0, gt=0, le=30)
    probe_interval_s: float = Field(0.25, gt=0, le=10)


class EventTriggerSettings(Strict):
    """A subject on the backbone whose events run as jobs (gateway/events/triggers.py), e.g. a warehouse's
    `shipment.delivered` marking the order delivered through the same path as the carrier webhook."""

    subject: str = Field(pattern=r"^[A-Za-z0-9_.*>-]+$")  # e.g. events.warehouse.shipment.delivered.v1
    source: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")  # acts like the inbound webhook of this name
    durable: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$")  # consumer name (default: trigger-<source>)


class EventSettings(Strict):
    """Events on NATS JetStream (docs/events.md): an outbox in the job store, published by a relay."""

    enabled: bool = False
    # One server or a cluster: several URLs separated by commas (nats://a:4222,nats://b:4222).
    url: str = "nats://127.0.0.1:4222"
    subject_prefix: str = Field("events", pattern=r"^[A-Za-z0-9_-]+$")
    stream_prefix: str = Field("EVENTS", pattern=r"^[A-Za-z0-9_-]+$")
    source: str = "/contract-gateway"  # CloudEvents `source` prefix: /contract-gateway/orders/v2
    retention: Literal["limits", "interest", "workqueue"] = "limits"
    storage: Literal["file", "memory"] = "file"
    replicas: int = Field(1, ge=1, le=5)
    max_age_s: float = Field(7 * 86_400, gt=0)  # how long the backbone keeps events (replays reach this far back)
    duplicate_window_s: float = Field(600, gt=0)  # JetStream drops a second publish of one event id within it
    relay_batch: int = Field(500, ge=1, le=10_000)
    relay_poll_s: float = Field(0.5, gt=0)  # the relay also wakes at once when an event is stored here
    publish_timeout_s: float = Field(5, gt=0)
    # Partner webhooks are fed from the backbone (one durable consumer per subscription: gateway/events/feed.py);
    # false: delivery jobs are stored with each event, as without events.
    webhooks_from_backbone: bool = True
    triggers: list[EventTriggerSettings] = Field(default_factory=list)
    trigger_stream: str = Field("INBOUND", pattern=r"^[A-Za-z0-9_-]+$")  # holds the trigger subjects


class JobSettings(Strict):
    """Durable asynchronous work (gateway/jobs/): where it is stored and who runs it."""

    backend: Literal["sqlite", "postgres"] = "sqlite"
    sqlite_path: Path = Path("var/jobs.db")  # relative to the config file
    postgres_dsn: SecretStr | None = None
    workers: int = Field(4, ge=0)  # jobs run concurrently inside this process (0: only `gateway worker` runs them)
    vendor_concurrency: int = Field(4, ge=1)  # at most this many jobs per vendor at once, per process
    lease_s: float = Field(30.0, gt=1)  # a job whose worker stops heartbeating is claimable again after this
    poll_s: float = Field(0.5, gt=0)

    @model_validator(mode="after")
    def _dsn(self) -> JobSettings:
        if self.backend == "postgres" and self.postgres_dsn is None:
            raise ValueError("jobs.backend is postgres: set jobs.postgres_dsn")
        return self


class InboundWebhookSettings(Strict):
    """A vendor that calls us back: how its deliveries are signed, with which secrets (several during rotation)."""

    scheme: Literal["stripe", "standard"]
    secrets: list[SecretStr] = Field(min_length=1)
    tolerance_s: float = Field(300, gt=0)  # Stripe: how old a signature's timestamp may be
    commerce_vendor: str = "woocommerce"  # whose orders the events update


class SubscriptionSettings(Strict):
    """A partner's endpoint for our events, signed with Standard Webhooks."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    url: str = Field(pattern=r"^https?://")
    secret: SecretStr  # whsec_<base64>, as Standard Webhooks defines it
    events: list[str] = Field(min_length=1)  # order.created, order.delivered, payment.refunded, or "*"
    # The partner (owner, as x-gateway.ownership names it: usually its client id) whose objects' events this endpoint
    # receives; unset: every event (an operator's endpoint). docs/ownership.md
    owner: str | None = Field(None, min_length=1, max_length=200)

    def wants(self, event_type: str) -> bool:
        """Whether this endpoint asked for events of `event_type`."""
        return "*" in self.events or event_type in self.events

    def receives_from(self, owner: str | None) -> bool:
        """Whether an event about `owner`'s object goes to this endpoint."""
        return self.owner is None or self.owner == owner


class WebhookSettings(Strict):
    inbound: dict[str, InboundWebhookSettings] = Field(default_factory=dict)  # keyed by the path /webhooks/{vendor}
    subscriptions: list[SubscriptionSettings] = Field(default_factory=list)
    # Outbound deliveries retry on a schedule of hours: 30 s doubling to 6 h, for up to 3 days, then a dead letter.
    max_attempts: int = Field(12, ge=1)
    backoff_base_s: float = Field(30, gt=0)
    backoff_cap_s: float = Field(21_600, gt=0)
    max_age_s: float = Field(259_200, gt=0)
    timeout_s: float = Field(10, gt=0)
    # Outbound egress (gateway/http/egress.py): https only unless allow_http (the demo's loopback partners);
    # addresses that are not public (loopback, private, link-local/metadata) only inside allow_networks (CIDRs).
    allow_http: bool = False
    allow_networks: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _egress(self) -> WebhookSettings:
        policy = EgressPolicy(self.allow_http, self.allow_networks)  # ValueError on a CIDR that is not one
        for sub in self.subscriptions:
            try:
                policy.check_url(sub.url)
            except EgressRefused as exc:
                raise ValueError(f"subscription {sub.id}: {exc}") from None
        return self


class LoggingSettings(Strict):
    """Structured logs (gateway/observability/logs.py): one line per event, JSON for machines or console for people."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["json", "console"] = "json"
    # stdout, stderr, none, or a file path (appended to; relative to the config file). `gateway trace` reads it.
    output: str = "stdout"
    access: bool = True  # one access line per request (the gateway's own endpoints excluded)
    recent_lines: int = Field(2_000, ge=0)  # kept in memory for /admin/requests/{id} and the operator
    mask_fields: list[str] = Field(default_factory=list)  # field names masked besides the built-in ones

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v


class TracingSettings(Strict):
    """OpenTelemetry spans exported over OTLP/HTTP; without an endpoint no span is ever created."""

    otlp_endpoint: str | None = Field(None, pattern=r"^https?://")  # e.g. http://collector:4318/v1/traces
    otlp_headers: dict[str, SecretStr] = Field(default_factory=dict)
    service_name: str = "contract-gateway"
    sample_ratio: float = Field(1.0, ge=0, le=1)  # of traces started here; a caller's sampled flag is respected

    @field_validator("otlp_endpoint", mode="before")
    @classmethod
    def _empty_is_none(cls, v: Any) -> Any:
        return v or None


class MetricsSettings(Strict):
    """Prometheus metrics on /metrics. With several worker processes prometheus-client's multiprocess mode is
    used: each worker writes its samples to files in this folder and /metrics sums them (default: a new
    temporary folder per `gateway serve`)."""

    enabled: bool = True
    multiprocess_dir: Path | None = None


class ObservabilitySettings(Strict):
    logging: LoggingSettings = LoggingSettings()
    tracing: TracingSettings = TracingSettings()
    metrics: MetricsSettings = MetricsSettings()


class AlertmanagerSettings(Strict):
    """An Alertmanager (or anything speaking its API v2): firing alerts are POSTed to {url}/api/v2/alerts and sent
    again every `resend_every_s` while they fire, as Prometheus does; a resolved one is sent once with its endsAt."""

    url: str = Field(pattern=r"^https?://")
    resend_every_s: float = Field(60, gt=0)
    timeout_s: float = Field(5, gt=0)


class AlertSettings(Strict):
    """Where alerts go besides the operator page. Signed webhooks: any `webhooks.subscriptions` entry that lists
    `alert.firing` / `alert.resolved` in its events (Standard Webhooks, retried and dead-lettered like any event)."""

    alertmanager: list[AlertmanagerSettings] = Field(default_factory=list)
    repeat_after_s: float = Field(4 * 3600, gt=0)  # a webhook subscriber hears of a still-firing alert again
    external_url: str | None = Field(None, pattern=r"^https?://")  # links in alerts (default: server host:port)


class MonitoringSettings(Strict):
    """Failures that throw no exception (gateway/monitoring/, docs/monitoring.md): reconciliation, volume
    anomalies, SLO burn rates, synthetic golden paths, alerts and the exception queue. State lives in the job
    store's database (SQLite file or PostgreSQL), so it survives restarts and every gateway process shares it."""

    enabled: bool = True
    # Rule and golden path files or folders (relative to the config file). None by default: opted in explicitly.
    reconcile: list[Path] = Field(default_factory=list)
    synthetic: list[Path] = Field(default_factory=list)
    tick_s: float = Field(15, gt=0)  # how often counts are flushed and alerts evaluated
    schedules: bool = True  # run scheduled reconciliations and synthetic paths (one process at a time, by lease)
    synthetic_client: str = "synthetic"  # the client id golden paths call as (a token of the built-in issuer)
    synthetic_token: SecretStr | None = None  # or this bearer token, when the built-in issuer is off
    ewma_alpha: float = Field(0.3, gt=0, le=1)  # weight of the newest week in a volume baseline
    alerts: AlertSettings = AlertSettings()

    def paths(self, which: list[Path], base_dir: Path) -> list[Path]:
        return [p if p.is_absolute() else (base_dir / p) for p in which]


class OwnershipSettings(Strict):
    """Object-level authorization (x-gateway.ownership in the contracts; docs/ownership.md)."""

    # Signs the cursors of gateway-filtered lists (HMAC-SHA256), so a caller cannot forge or alter one. Give the same
    # secret to every gateway process (cursors cross processes); empty: a random one per process, with a warning.
    cursor_secret: SecretStr | None = None


class Settings(Strict):
    """Everything about how the gateway runs. What the API *is* lives in the contracts."""

    contracts: list[Path] = Field(default_factory=lambda: [Path("contracts")])
    # The compile cache (gateway/contracts/cache.py): unchanged contracts restart without being checked again.
    contracts_cache: Path | None = Path("var/cache/contracts")
    server: ServerSettings = ServerSettings()
    request: RequestSettings = RequestSettings()
    response_validation: Literal["enforce", "report"] = "enforce"
    problem_type_base: str = "https://contract-gateway.dev/problems/"
    transport: Literal["h1", "aiohttp"] = "h1"  # the vendor transport (adapters/transport/)
    vendors: dict[str, VendorSettings] = Field(default_factory=dict)
    auth: AuthSettings = AuthSettings()
    idempotency: IdempotencySettings = IdempotencySettings()
    limits: LimitSettings = LimitSettings()
    jobs: JobSettings = JobSettings()
    stores: StoreSettings = StoreSettings()
    webhooks: WebhookSettings = WebhookSettings()
    events: EventSettings = EventSettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    ownership: OwnershipSettings = OwnershipSettings()
    # Redis shared by every gateway process (idempotency keys, rate limits) when a feature's backend is redis.
    redis_url: str | None = None
    # Where relative paths (contracts, keys) are resolved from: the config file's folder.
    base_dir: Path = Path(".")

    @model_validator(mode="after")
    def _redis_when_needed(self) -> Settings:
        if self.idempotency.backend == "redis" and not self.redis_url:
            raise ValueError("idempotency.backend is redis: set redis_url")
        if self.limits.backend == "redis" and not self.redis_url:
            raise ValueError("limits.backend is redis: set redis_url")
        if self.limits.backend == "redis" and self.redis_url:
            from gateway.stores.redis_pipe import parse_url

            parse_url(self.redis_url)  # the limiter's own connection reads it too: refuse what it would ignore
        return self

    def contract_paths(self) -> list[Path]:
        return [p if p.is_absolute() else (self.base_dir / p) for p in self.contracts]


class SettingsError(Exception):
    """The configuration is unusable; the message lists every problem."""


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(node: Any, where: str, missing: list[str], base_dir: Path) -> Any:
    if isinstance(node, dict):
        return {k: _interpolate(v, f"{where}.{k}" if where else str(k), missing, base_dir) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, f"{where}[{i}]", missing, base_dir) for i, v in enumerate(node)]
    if isinstance(node, str):
        def sub(m: re.Match[str]) -> str:
            value = os.environ.get(m.group(1), m.group(2))
            if value is None:
                missing.append(f"{where}: environment variable {m.group(1)} is not set")
                return ""
            return value

        node = _ENV_REF.sub(sub, node)
        if node.startswith("file:"):
            path = Path(node[5:])
            path = path if path.is_absolute() else base_dir / path
            try:
                return path.read_text().strip()
            except OSError as exc:
                missing.append(f"{where}: cannot read secret file {path}: {exc.strerror}")
                return ""
    return node


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys (`vendors.stripe.base_url`) in a raw configuration mapping, creating levels as needed."""
    for dotted, value in overrides.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return raw


def load_settings(path: Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Read `path` (YAML), apply env interpolation and `overrides` (dotted keys), validate."""
    raw: dict[str, Any] = {}
    base_dir = Path(".").resolve()
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise SettingsError(f"{path}: cannot read: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise SettingsError(f"{path}: not valid YAML: {exc}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise SettingsError(f"{path}: the top level must be a mapping")
        raw = loaded or {}
        base_dir = path.resolve().parent
    missing: list[str] = []
    raw = _interpolate(raw, "", missing, base_dir)
    if missing:
        raise SettingsError("\n".join(f"{path}: {m}" for m in missing))
    apply_overrides(raw, overrides or {})
    raw.setdefault("base_dir", str(base_dir))
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"])
            lines.append(f"{path or 'settings'}: {loc}: {err['msg']}")
        raise SettingsError("\n".join(lines)) from None
