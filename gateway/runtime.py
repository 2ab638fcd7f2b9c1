"""The running gateway's state, built once from Settings: compiled operations, router, adapters, renderer.

`check()` is what both `gateway check` and start-up run: load + lint + compile, every problem at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from adapters.client import VendorClient
from adapters.registry import adapter_for
from gateway.auth.keys import SigningKeyProblem, load_signing_keys
from gateway.contracts.compile import Operation, compile_contracts
from gateway.contracts.lint import lint
from gateway.contracts.load import Contract, ContractError, ContractProblem, load_contracts
from gateway.http.admission import Admission
from gateway.http.router import Router
from gateway.jobs.status import GatewayOperationsAdapter
from gateway.monitoring.declarations import load_declarations
from gateway.monitoring.service import Monitoring
from gateway.observability.logs import SENSITIVE, EventLog, install, sensitive_fields
from gateway.pipeline import build_policies
from gateway.policies.base import completers
from gateway.policies.ownership import reference_problems
from gateway.problems import ProblemRenderer
from gateway.services import build_services
from gateway.settings import Settings, VendorSettings
from gateway.vendorcontracts import DriftLog, build_check
from gateway.vendorcontracts.contract import VendorContractError
from gateway.vendorcontracts.mapping import mapping_file_problems, mapping_problems
from gateway.versions import VersionIndex

log = logging.getLogger("gateway")


def _settings_problems(settings: Settings) -> list[ContractProblem]:
    problems = []
    for name, vendor in settings.vendors.items():
        where = f"/vendors/{name}"
        try:
            cls = adapter_for(name, vendor, settings.base_dir)
        except LookupError as exc:
            problems.append(ContractProblem("gateway.yaml", where + "/adapter", str(exc)))
            continue
        for reason in cls.check_settings(vendor):
            problems.append(ContractProblem("gateway.yaml", where, reason))
    builtin = settings.auth.builtin
    if builtin.enabled and not builtin.generate_missing_keys:  # a check never creates keys
        try:
            load_signing_keys(builtin, settings.base_dir)
        except SigningKeyProblem as exc:
            problems.append(ContractProblem("gateway.yaml", "/auth/builtin/keys_dir", str(exc)))
    return problems


def declared_scopes(contracts: list[Contract]) -> set[str]:
    """Every OAuth scope any contract declares (for the issuer's metadata)."""
    scopes: set[str] = set()
    for contract in contracts:
        for scheme in ((contract.data.get("components") or {}).get("securitySchemes") or {}).values():
            for flow in (scheme.get("flows") or {}).values() if isinstance(scheme, dict) else []:
                scopes |= set((flow or {}).get("scopes") or {})
    return scopes


def check(settings: Settings) -> tuple[list[Contract], list[Operation], list[ContractProblem]]:
    """Load, lint and compile every contract. Operations are only returned when there is no problem."""
    contracts, operations, problems, _ = check_all(settings)
    return contracts, operations, problems


def drift_path(settings: Settings) -> Any:
    """Where vendor drift is kept for `gateway drift` (gateway/vendorcontracts/drift.py)."""
    return settings.base_dir / "var" / "vendor-drift.sqlite"


def vendor_contract_problems(settings: Settings) -> list[ContractProblem]:
    """Each configured vendor's contract (contracts/vendors/) loads and compiles; each declarative vendor's mapping
    file has the right shape (its pointers are checked against both contracts after compiling: mapping_problems)."""
    problems = []
    for name, vendor in settings.vendors.items():
        try:
            build_check(name, vendor, settings.base_dir, None)
        except VendorContractError as exc:
            problems.append(ContractProblem(exc.where, "", exc.reason))
        if vendor.adapter == "declarative":
            problems += mapping_file_problems(vendor, settings.base_dir)
    return problems


def check_all(settings: Settings) -> tuple[list[Contract], list[Operation], list[ContractProblem],
                                            list[ContractProblem]]:
    """`check`, and the warnings: things served anyway that the author should know (an unsupported alternative).

    With an entry in the compile cache for exactly these contracts, settings and code, the checks it vouches for
    are skipped and the converted schemas reused (gateway/contracts/cache.py)."""
    from gateway.contracts.cache import ContractCache, warnings_of

    cache = ContractCache(settings)
    entry = cache.load()
    if entry is not None:
        contracts, problems = load_contracts(settings.contract_paths(), verify=False)
        problems += _settings_problems(settings)  # the filesystem may have changed (signing keys): always checked
        problems += vendor_contract_problems(settings)
        if not problems:
            operations, problems = compile_contracts(contracts, settings, prepared=entry.get("schemas"))
            if not problems:
                problems = _every_start_problems(settings, contracts, operations)
                return contracts, operations if not problems else [], problems, warnings_of(entry)
    contracts, problems = load_contracts(settings.contract_paths())
    problems += _settings_problems(settings)
    problems += vendor_contract_problems(settings)
    problems += lint(contracts, settings)
    warnings = sorted({p for p in problems if p.warning})
    problems = [p for p in problems if not p.warning]
    if problems:
        return contracts, [], problems, warnings
    exported: dict[str, Any] = {}
    operations, compile_problems = compile_contracts(contracts, settings, exported=exported)
    if not compile_problems:
        cache.store(contracts, exported, warnings)
        compile_problems = _every_start_problems(settings, contracts, operations)
    return contracts, operations if not compile_problems else [], compile_problems, warnings


def _every_start_problems(settings: Settings, contracts: list[Contract],
                          operations: list[Operation]) -> list[ContractProblem]:
    """What the compile cache does not vouch for, checked on every start: reconciliation rules, golden paths, SLOs
    and calendars name operations; declarative vendors' mappings are read from their files; ownership references
    name operations."""
    problems = load_declarations(settings, contracts, operations)[1]
    problems += mapping_problems(settings, operations)
    problems += reference_problems(operations)
    return problems


class Runtime:
    """The running gateway: its services (gateway/services.py) and what the edge needs per request, built at
    start-up and read-only afterwards (operations are bound to their policies and adapter handlers once)."""

    def __init__(self, settings: Settings, contracts: list[Contract], operations: list[Operation],
                 run_workers: bool = True, install_logs: bool = True) -> None:
        self.settings = settings
        self.contracts = contracts
        self.renderer = ProblemRenderer(settings.problem_type_base)
        obs = settings.observability
        SENSITIVE.update(sensitive_fields(c.data for c in contracts), (f.lower() for f in obs.logging.mask_fields))
        events = EventLog(obs.logging, settings.base_dir)
        if install_logs:  # stdlib log records become JSON lines of events
            install(events)
        self.services = services = build_services(settings, events, run_workers)
        self.events = events
        self.tracing = services.tracing
        self.auth = services.auth
        self.limiter = services.limiter
        self.idempotency_store = services.idempotency_store
        self.jobs = services.jobs
        self.webhooks = services.webhooks
        self.adapters = services.adapters
        self.started_at = time.time()
        self.scopes = declared_scopes(contracts)
        admission = settings.request.admission
        self.admission = Admission(admission) if admission.enabled else None
        self.background = run_workers  # False for one-shot commands: no workers, no monitoring loop
        status = next((op for op in operations if op.vendor == "gateway" and op.adapter_operation == "get_operation"),
                      None)
        if status is not None:
            self.jobs.status_template = status.path.replace("{operation_id}", "{id}")
        self.ready = False
        self.extras: dict[str, Any] = {}  # per-feature state (stores, metrics...) keyed by feature name
        self.drift = DriftLog(drift_path(settings))  # vendor answers that differ from the vendor's contract
        for name in sorted({op.vendor for op in operations}):
            vendor = settings.vendors.get(name) or VendorSettings(adapter=name, base_url="http://gateway.internal",
                                                                  contract={"mode": "off"})
            client = VendorClient(name, vendor, settings.transport, limiter=self.limiter)
            client.events = events
            try:  # the vendor's own contract (contracts/vendors/), checked on every request and answer
                client.contract = build_check(name, vendor, settings.base_dir, self.drift)
            except VendorContractError as exc:
                raise ContractError([ContractProblem(exc.where, "", exc.reason)]) from None
            adapter = adapter_for(name, vendor, settings.base_dir)(name, vendor, client)
            if isinstance(adapter, GatewayOperationsAdapter):
                adapter.jobs = self.jobs.store
            self.adapters[name] = adapter  # connects when the gateway starts (startup)
        # Each operation bound once, then frozen: its policies, its adapter's handler (from the adapter's operation
        # table: a reader follows op.handler from dispatch to the vendor call), its event emitter if it emits.
        self.operations = []
        for op in operations:
            policies = build_policies(op, services)
            self.operations.append(op.bind(policies=policies, completers=completers(policies),
                                           handler=self.adapters[op.vendor].handler(op.adapter_operation),
                                           emitter=self.webhooks.emit if op.emits else None,
                                           # x-gateway.ownership: run around the adapter call (gateway/dispatch.py)
                                           ownership=next((getattr(p, "enforcer", None) for p in policies
                                                           if p.name == "ownership"), None)))
        self.by_key = {op.key: op for op in self.operations}
        services.operations.update(self.by_key)  # the job runner and webhooks run the bound operations
        self.router = Router(self.operations)
        self.versions = VersionIndex(self.operations, lambda: self.clock())
        self.monitoring = Monitoring(self)  # gateway/monitoring/: reconciliation, SLOs, alerts, exception queue
        if services.bus is not None:  # events on the backbone (gateway/events/): the contracts' event catalog
            services.bus.load(contracts)

    @property
    def clock(self) -> Callable[[], float]:
        """time.time, unless a test moved it (to be after a sunset date): every stage reads the services' clock."""
        return self.services.clock

    @clock.setter
    def clock(self, clock: Callable[[], float]) -> None:
        self.services.clock = clock

    @classmethod
    def build(cls, settings: Settings, install_logs: bool = True) -> Runtime:
        """Compile everything or raise ContractError listing every problem."""
        contracts, operations, problems, warnings = check_all(settings)
        if problems:
            raise ContractError(problems)
        for warning in warnings:
            log.warning("contract: %s", warning)
        try:
            return cls(settings, contracts, operations, install_logs=install_logs)
        except SigningKeyProblem as exc:
            raise ContractError([ContractProblem("gateway.yaml", "/auth/builtin/keys_dir", str(exc))]) from None

    async def startup(self) -> None:
        if self.admission is not None:
            self.admission.start()
        await self.jobs.start()
        for adapter in self.adapters.values():
            adapter.client.tracing = self.tracing if self.tracing.tracer is not None else None
            await adapter.startup()
        await self.monitoring.start(loop=self.background)
        if self.services.bus is not None:
            await self.services.bus.start()
        self.ready = True
        log.info("gateway ready: %d operations from %d contracts", len(self.operations), len(self.contracts))

    async def shutdown(self) -> None:
        self.ready = False
        if self.admission is not None:
            self.admission.stop()
        await self.monitoring.stop()
        if self.services.bus is not None:  # before the store it reads; what it leaves is published next start
            await self.services.bus.stop()
        await self.jobs.stop()
        await self.webhooks.close()
        self.drift.close()
        await self.auth.close()
        await self.idempotency_store.close()
        await self.limiter.close()
        for adapter in self.adapters.values():
            await adapter.shutdown()
        self.tracing.shutdown()
        self.events.close()
