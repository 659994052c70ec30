"""The object graph: one :class:`Tollkeep` holds the database, catalog and services.

Built from one Settings object; no module globals. The HTTP app, the CLI and
embedding Python code all use it (``Tollkeep(Settings(...))``).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from tollkeep.audit import record
from tollkeep.catalog import Catalog, CatalogStore, default_catalog, load_catalog
from tollkeep.catalog import repository as catalog_repo
from tollkeep.config import Settings, create_private_sqlite_file
from tollkeep.customers import CustomerCreated, CustomerService, CustomerStatusChanged
from tollkeep.funnel import FunnelService
from tollkeep.funnel import jobs as funnel_jobs
from tollkeep.keys import KeyCreated, KeyRevoked, KeyService
from tollkeep.kit.actor import Actor
from tollkeep.kit.clock import Clock, OffsetClock, SystemClock, iso
from tollkeep.kit.db import Database, Tx, explain_database_error
from tollkeep.kit.errors import NotFound, TollkeepError
from tollkeep.kit.events import Event, EventBus
from tollkeep.kit.executor import WriteExecutor
from tollkeep.kit.migrate import require_schema, require_sqlite_file, upgrade
from tollkeep.kit.worker import WorkerRegistry, WorkerRunner
from tollkeep.ledger import CreditsExhausted, CreditsGranted, CreditsLow, KeyLimits, LedgerService, queries
from tollkeep.ledger import jobs as ledger_jobs
from tollkeep.ledger import repository as repo
from tollkeep.ledger.verify import VerifyReport, verify_ledger
from tollkeep.licensing.events import (
    LicenseCreated,
    LicenseRecoveryRequested,
    LicenseRevoked,
    LicenseUpdated,
)
from tollkeep.licensing.service import LicenseService
from tollkeep.operators import OperatorService
from tollkeep.outbox import OutboxService
from tollkeep.outbox import jobs as outbox_jobs
from tollkeep.payments import (
    Applier,
    Inbox,
    InboxSettings,
    Outcome,
    PaymentFailedEvent,
    PaymentRefundedEvent,
    PaymentsService,
    PaymentSucceeded,
    Providers,
    public_url,
)
from tollkeep.payments import jobs as payments_jobs
from tollkeep.payments.meters import METER_TOPIC, MeterReporter
from tollkeep.plans import PlanChanged, PlanService, ensure_allowance
from tollkeep.plans import jobs as plans_jobs
from tollkeep.ratelimit import Limits
from tollkeep.subscriptions import (
    CodeRedeemed,
    FixedRates,
    SubscriptionCanceled,
    SubscriptionCreated,
    SubscriptionLapsed,
    SubscriptionPastDue,
    SubscriptionPaused,
    SubscriptionPlanChanged,
    SubscriptionRenewalFailed,
    SubscriptionRenewalPending,
    SubscriptionRenewed,
    SubscriptionResumed,
)
from tollkeep.subscriptions import jobs as subscriptions_jobs
from tollkeep.subscriptions.service import RenewalSettings, SubscriptionService
from tollkeep.webhooks import WebhookEndpointDisabled, WebhookService
from tollkeep.webhooks import jobs as webhooks_jobs

__all__ = ["Tollkeep"]

log = logging.getLogger("tollkeep")

# The domain events written to the outbox (in the transaction of the change) for delivery
# outside the process (webhooks: every topic here can be subscribed to). Cheap ones only: on the
# debit path (POST /v1/usage, holds, settles) only a threshold crossing writes anything.
OUTBOX_EVENTS: tuple[type[Event], ...] = (
    CustomerCreated,
    CustomerStatusChanged,
    KeyCreated,
    KeyRevoked,
    PlanChanged,
    CreditsGranted,
    CreditsLow,
    CreditsExhausted,
    PaymentSucceeded,
    PaymentFailedEvent,
    PaymentRefundedEvent,
    WebhookEndpointDisabled,
    LicenseCreated,
    LicenseUpdated,
    LicenseRevoked,
    LicenseRecoveryRequested,
    SubscriptionCreated,
    SubscriptionRenewalPending,
    SubscriptionRenewed,
    SubscriptionPastDue,
    SubscriptionRenewalFailed,
    SubscriptionLapsed,
    SubscriptionCanceled,
    SubscriptionPlanChanged,
    SubscriptionPaused,
    SubscriptionResumed,
    CodeRedeemed,
)

# what POST /admin/test-clock runs after moving the clock (in this order)
TEST_CLOCK_JOBS = ("subscriptions.renew", "ledger.sweep", "plans.renew_allowances")


def _key_limits(s: Tx, key_id: str) -> KeyLimits | None:
    """An API key's spend limits, for the ledger's per-key check in a charge's unit of work."""
    found = KeyService.spend_limits_in(s, key_id)
    return None if found is None else KeyLimits(*found)


class Tollkeep:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        clock: Clock | None = None,
        migrate: bool | None = None,
        existing: bool = False,
    ) -> None:
        """``migrate``: bring the schema up to date (default: ``settings.migrate_on_start``).
        ``existing``: use a database that exists and is up to date, create and migrate nothing
        (the CLI's commands other than init, migrate, serve and demo); else
        :class:`DatabaseUnavailable` says which database was looked for and what to run."""
        self.settings = settings or Settings()
        s = self.settings
        # the test clock (TOLLKEEP_TEST_CLOCK): the whole runtime reads one clock an operator moves
        self.test_clock: OffsetClock | None = None
        if s.test_clock:
            if s.env == "production":
                raise TollkeepError(
                    "TOLLKEEP_TEST_CLOCK is refused when TOLLKEEP_ENV=production", code="config"
                )
            self.test_clock = OffsetClock(clock or SystemClock())
        self.clock: Clock = self.test_clock or clock or SystemClock()
        if existing:
            require_sqlite_file(s.database_url)
        else:
            create_private_sqlite_file(s.database_url)  # 0600 from the start
        self.db = Database(
            s.database_url,
            sqlite_synchronous=s.sqlite_synchronous,
            pool_size=s.db_pool_size,
            raw_sql=s.raw_sql,
        )
        try:
            if existing:
                require_schema(self.db)
            elif s.migrate_on_start if migrate is None else migrate:
                upgrade(self.db)
        except Exception as exc:
            self.db.dispose()
            problem = explain_database_error(exc, self.db.url)
            if problem is None:
                raise
            raise problem from None
        initial: Catalog = load_catalog(s.catalog_path) if s.catalog_path else default_catalog()
        self.catalogs = CatalogStore(initial, path=s.catalog_path)
        self.executor = WriteExecutor(self.db, batch_max=s.writer_batch_max, workers=s.db_pool_size)
        # domain events: emitted inside units of work, delivered after their commit (kit/events.py)
        self.events = EventBus()
        cat = self.catalogs
        self.ledger = LedgerService(
            self.db,
            self.executor,
            lambda: cat.current,
            clock=self.clock,
            hold_default_ttl=s.hold_default_ttl_seconds,
            hold_max_ttl=s.hold_max_ttl_seconds,
            before_spend=ensure_allowance,
            events=self.events,
            key_limits=_key_limits,  # per-key spend limits (the keys domain's), read in the charge
        )
        self.plans = PlanService(
            self.db, self.executor, lambda: cat.current, clock=self.clock, events=self.events
        )
        self.customers = CustomerService(
            self.db,
            self.executor,
            self.ledger,
            self.plans,
            lambda: cat.current,
            clock=self.clock,
            events=self.events,
        )
        self.keys = KeyService(
            self.db,
            self.executor,
            prefix=s.key_prefix,
            cache_seconds=s.key_cache_seconds,
            clock=self.clock,
            default_scopes=lambda: cat.current.keys.default_scopes,
            events=self.events,
        )
        self.operators = OperatorService(
            self.db,
            self.executor,
            env_admin_token=lambda: s.admin_token.get_secret_value() if s.admin_token else None,
            cache_seconds=s.key_cache_seconds,
            clock=self.clock,
        )
        self.outbox = OutboxService(self.db, self.executor, clock=self.clock)
        self.funnel = FunnelService(self.db, self.executor, clock=self.clock)
        self.licenses = LicenseService(
            self.db,
            self.executor,
            lambda: cat.current,
            clock=self.clock,
            events=self.events,
            passphrase=lambda: (
                s.license_key_passphrase.get_secret_value() if s.license_key_passphrase else None
            ),
            default_grace_seconds=s.license_grace_seconds,
        )
        self.subscriptions = SubscriptionService(
            self.db,
            self.executor,
            lambda: cat.current,
            self.plans,
            self.keys,
            clock=self.clock,
            events=self.events,
            rates=FixedRates(s.subscriptions_fixed_rates),
            settings=RenewalSettings(
                invoice_currency=s.subscriptions_invoice_currency,
                retry_seconds=s.subscriptions_retry_seconds,
                max_failures=s.subscriptions_max_renewal_failures,
            ),
        )
        self.subscriptions.changes.licenses = self.licenses  # licences follow plan changes
        # payments: providers -> inbox -> (ledger, plans, customers, keys), one transaction each
        self.providers = Providers(s)
        applier = Applier(
            ledger=self.ledger,
            plans=self.plans,
            customers=self.customers,
            keys=self.keys,
            catalog=lambda: cat.current,
            clock=self.clock,
            events=self.events,
            record_stage=self.funnel.record,
            subscriptions=self.subscriptions,  # settles invoices, follows Stripe subscriptions
        )
        for invoicing in self.providers.invoice_providers():  # BTCPay, Zaprite renewal invoices
            self.subscriptions.register_provider(invoicing)
        self.inbox = Inbox(
            self.db,
            self.executor,
            self.providers,
            applier,
            lambda: cat.current,
            clock=self.clock,
            settings=InboxSettings(max_attempts=s.inbox_max_attempts, retention_days=s.inbox_retention_days),
            after_commit=self._after_payment,
        )
        self.payments = PaymentsService(
            self.db,
            self.executor,
            self.providers,
            self.inbox,
            self.customers,
            self.keys,
            lambda: cat.current,
            clock=self.clock,
            record_stage=self.funnel.record,
            checkout_ttl_seconds=s.checkout_ttl_seconds,
            public_url=public_url(s),
        )
        self.webhooks = WebhookService(
            self.db,
            self.executor,
            topics=lambda: [e.topic for e in OUTBOX_EVENTS],
            events=self.events,
            clock=self.clock,
            allow_private=s.webhooks_allow_private,
            concurrency=s.webhooks_concurrency,
            timeout=s.webhooks_timeout_seconds,
            schedule=s.webhooks_retry_seconds,
            disable_after_seconds=s.webhooks_disable_after_seconds,
        )
        # postpaid plans: usage of their Stripe meters goes to Stripe through the outbox
        self.meters = MeterReporter(
            self.db, self.executor, self.providers, lambda: cat.current, self.outbox.enqueue, clock=self.clock
        )
        # cross-domain reactions, in one place
        self.events.subscribe(CustomerStatusChanged, self.keys.customer_status_changed)
        self.outbox.capture(self.events, *OUTBOX_EVENTS)
        for topic in dict.fromkeys(e.topic for e in OUTBOX_EVENTS):  # every event, every endpoint
            self.outbox.register_sink(topic, self.webhooks.fan_out)
        self.events.subscribe_in_tx(PlanChanged, self.meters.plan_changed)
        self.outbox.register_sink(METER_TOPIC, self.meters.report)  # not a seller webhook
        # background work: each domain declares its jobs
        self.workers = WorkerRegistry(
            [
                *ledger_jobs.jobs(self.ledger, s),
                *plans_jobs.jobs(self.plans, s),
                *outbox_jobs.jobs(self.outbox, s),
                *payments_jobs.jobs(self.inbox, self.payments, s, meters=self.meters),
                *funnel_jobs.jobs(self.funnel),
                *webhooks_jobs.jobs(self.webhooks, s),
                *subscriptions_jobs.jobs(self.subscriptions, s),
            ]
        )
        # rate limits, quotas, calls in flight per key and tool / route (memory, or Redis)
        self.limits = Limits(s)
        self._runner: WorkerRunner | None = None
        self._topup: tuple[str, dict[str, Any]] | None = None
        self._record_catalog(initial)

    def topup_hint(self) -> dict[str, Any]:
        """What a 402 carries so an agent can buy credits: the checkout route and the packs."""
        cat = self.catalog
        cached = self._topup
        if cached is not None and cached[0] == cat.version:
            return cached[1]
        base = public_url(self.settings)
        hint = {
            "url": f"{base}/v1/checkout",
            "method": "POST",
            "body": {"pack": "<pack key>", "provider": self.providers.default()},
            "packs": [
                {"key": p.key, "name": p.name, "credits": p.credits, "prices": dict(p.prices)}
                for p in cat.packs.values()
            ],
            "pricing": f"{base}/v1/pricing",
        }
        self._topup = (cat.version, hint)
        return hint

    def _after_payment(self, outcome: Outcome) -> None:
        for customer_id in outcome.forget_keys_of:  # suspended keys leave the cache now
            self.keys.forget_customer(customer_id)
        try:  # after the commit: what a settle or a resume does outside the transaction
            for settled in outcome.settled:  # an invoice the payment settled: keys, licences
                self.subscriptions.after_settle(settled)
            self.subscriptions.following.resume_keys(outcome.resume_keys)
        except Exception:  # the payment is applied; keys / licences can be fixed by hand
            log.exception("after a payment: resuming keys or moving licences failed")

    # ---- catalog --------------------------------------------------------------------------------
    @property
    def catalog(self) -> Catalog:
        return self.catalogs.current

    def _record_catalog(
        self, cat: Catalog, *, previous: str | None = None, actor: Actor | None = None
    ) -> None:
        """Store ``cat``'s version (once) and, when ``actor`` made it replace ``previous``, audit
        the reload in the same transaction."""
        now = self.clock.now()

        def fn(s: Tx) -> None:
            catalog_repo.record_version(s, cat, now)
            if actor is not None and previous is not None and cat.version != previous:
                record(
                    s,
                    actor,
                    "catalog.reload",
                    ("catalog", None),  # a version (80 characters) may not fit a target id
                    before={"version": previous},
                    after={"version": cat.version, "source": cat.source},
                    at=now,
                )

        self.executor.call(fn)

    def reload_catalog(self, *, actor: Actor | None = None) -> Catalog:
        """Load the catalog file again as a new version; an invalid file raises and changes nothing.
        ``actor``: who asked (an admin, or ``kit.actor.SYSTEM`` on SIGHUP): a reload that changed
        the version is audited; one that found the same file changed nothing and is not."""
        previous = self.catalogs.current.version
        cat = self.catalogs.reload()
        self._record_catalog(cat, previous=previous, actor=actor)
        if cat.version != previous:
            log.info("catalog reloaded: %s -> %s", previous, cat.version)
        return cat

    # ---- reads ----------------------------------------------------------------------------------
    def balance(self, customer_id: str) -> dict[str, Any]:
        with self.db.scope(write=False) as s:
            out = queries.balance(s, customer_id, self.clock.now(), self.catalog.credits.ledger_name)
        out["display"] = self.catalog.credits.display(
            balance=out["balance"],
            available=out["available"],
            held=out["held"],
            overdraft_limit=out["overdraft_limit"],
            overdraft_used=out["overdraft_used"],
        )
        return out

    def hold(self, customer_id: str | None, hold_id: str) -> dict[str, Any]:
        """A hold as the API shows it: of ``customer_id``, or (None: a server key, the admin)
        of anyone."""
        with self.db.scope(write=False) as s:
            if customer_id is None:
                row = repo.get_hold(s, hold_id)
            else:
                row = repo.get_hold_of_customer(s, customer_id, hold_id)
        if row is None:
            raise NotFound(f"hold {hold_id!r} not found", code="hold_not_found")
        return self.ledger.hold_view(row)

    def usage(self, customer_id: str, **kw: Any) -> dict[str, Any]:
        with self.db.scope(write=False) as s:
            return queries.usage_events(s, customer_id, **kw)

    def journal(self, customer_id: str, **kw: Any) -> dict[str, Any]:
        with self.db.scope(write=False) as s:
            return queries.journal(s, customer_id, **kw)

    def verify(self, progress: Any = None) -> VerifyReport:
        with self.db.scope(write=False) as s:
            return verify_ledger(s, progress=progress, catalogs=self.catalogs.get)

    # ---- the test clock ---------------------------------------------------------------------------
    def _require_test_clock(self) -> OffsetClock:
        if self.test_clock is None:
            raise NotFound(
                "the test clock is off (set TOLLKEEP_TEST_CLOCK=true, never in production)",
                code="test_clock_disabled",
            )
        return self.test_clock

    def test_clock_view(self) -> dict[str, Any]:
        c = self._require_test_clock()
        return {"now": iso(c.now()), "offset_seconds": int(c.offset.total_seconds())}

    def advance_test_clock(self, seconds: int) -> dict[str, Any]:
        """Move the clock forward and run the due workers (renewals and lapses, the ledger sweep,
        calendar allowances) before answering."""
        c = self._require_test_clock()
        c.advance(timedelta(seconds=seconds))
        ran: dict[str, Any] = {}
        for name in TEST_CLOCK_JOBS:
            # a renewal run handles a batch: run until nothing is left due
            for _ in range(1000):
                out = self.workers.run_once(name)[name]
                ran[name] = out
                if name != "subscriptions.renew" or not out.get("claimed"):
                    break
        return {**self.test_clock_view(), "advanced_seconds": seconds, "ran": ran}

    # ---- workers --------------------------------------------------------------------------------
    def start_workers(self, names: list[str] | None = None, *, first_run_now: bool = False) -> WorkerRunner:
        """Run the registered jobs (or the named ones) in background threads until :meth:`close`
        (or :meth:`stop_workers`). ``tollkeep serve`` calls it when ``run_workers`` is on."""
        if self._runner is None:
            self._runner = WorkerRunner(self.workers.select(names), first_run_now=first_run_now)
            self._runner.start()
        return self._runner

    def stop_workers(self, timeout: float = 30.0) -> None:
        if self._runner is not None:
            self._runner.stop(timeout)
            self._runner = None

    def close(self) -> None:
        self.stop_workers()
        self.webhooks.close()
        self.executor.close()
        self.limits.close()
        self.db.dispose()

    def __enter__(self) -> Tollkeep:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
