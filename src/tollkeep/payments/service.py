"""The payments domain's use cases: checkout (buying a pack or a plan), claiming the key a paid
checkout provisioned, the local provider's pay page, reconcile, and reads for operators. The
inbox (:mod:`.inbox`) does the receiving and processing."""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from tollkeep.catalog import Catalog
from tollkeep.customers import CustomerService
from tollkeep.keys import KeyService
from tollkeep.kit.clock import Clock, iso
from tollkeep.kit.db import Database, Tx
from tollkeep.kit.errors import Conflict, Forbidden, InvalidInput, NotFound, TollkeepError
from tollkeep.kit.executor import WriteExecutor
from tollkeep.kit.ids import new_id
from tollkeep.kit.secrets import digest
from tollkeep.payments import queries
from tollkeep.payments import repository as repo
from tollkeep.payments.inbox import Inbox
from tollkeep.payments.providers import Providers
from tollkeep.payments.providers.base import (
    META_CHECKOUT,
    META_CUSTOMER,
    META_PACK,
    META_PLAN,
    CheckoutRequest,
    ProviderUnavailable,
)
from tollkeep.payments.providers.local import paid_event

__all__ = ["PaymentsService"]

log = logging.getLogger("tollkeep.payments")

_EMAIL_MAX = 320


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), *params.items()]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _check_url(url: Any, field: str) -> str:
    if not isinstance(url, str) or len(url) > 2000:
        raise InvalidInput(f"{field} must be a URL of at most 2000 characters", code="invalid_url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInput(f"{field} must be an http(s) URL", code="invalid_url", details={"field": field})
    return url


class PaymentsService:
    def __init__(
        self,
        db: Database,
        executor: WriteExecutor,
        providers: Providers,
        inbox: Inbox,
        customers: CustomerService,
        keys: KeyService,
        catalog: Callable[[], Catalog],
        *,
        clock: Clock,
        record_stage: Callable[..., None],
        checkout_ttl_seconds: int = 86_400,
        public_url: str = "",
    ) -> None:
        self.db = db
        self.executor = executor
        self.providers = providers
        self.inbox = inbox
        self.customers = customers
        self.keys = keys
        self.catalog = catalog
        self.clock = clock
        self.record_stage = record_stage
        self.checkout_ttl = timedelta(seconds=checkout_ttl_seconds)
        self.public_url = public_url.rstrip("/")

    # ---- buying ---------------------------------------------------------------------------------
    def create_checkout(
        self,
        *,
        customer_id: str | None,
        pack: str | None = None,
        plan: str | None = None,
        provider: str | None = None,
        currency: str | None = None,
        email: str | None = None,
        success_url: str | None = None,
        cancel_url: str | None = None,
        source: str = "checkout",
    ) -> dict[str, Any]:
        """A payment page for ``pack`` or ``plan``. ``customer_id`` None: an anonymous buyer
        known by ``email`` (a customer is made for them now, so the payment lands on it). The
        answer's ``claim_token`` (also in the success URL) fetches the buyer's new API key once
        the payment settles: ``GET /v1/checkout/{id}?claim=…``."""
        cat = self.catalog()
        if (pack is None) == (plan is None):
            raise InvalidInput("give exactly one of pack or plan", code="invalid_checkout")
        item_pack = cat.pack(pack) if pack else None
        item_plan = cat.plan(plan) if plan else None
        if pack and item_pack is None:
            raise InvalidInput(
                f"unknown pack {pack!r} (known: {', '.join(cat.packs) or 'none'})", code="unknown_pack"
            )
        if plan and (item_plan is None or item_plan.is_free):
            raise InvalidInput(f"plan {plan!r} is not for sale", code="unknown_plan")
        prices = dict(item_pack.prices if item_pack else item_plan.prices if item_plan else {})
        if currency is None:
            currency = "usd" if "usd" in prices else next(iter(prices), None)
        currency = (currency or "").lower()
        amount = prices.get(currency)
        if not amount:
            raise InvalidInput(
                f"no price in {currency or 'any currency'!r} (prices: {prices or 'none'})",
                code="no_price_in_currency",
            )
        name = provider or self.providers.default()
        if name is None:
            raise TollkeepError(
                "no payment provider is configured (docs/payments.md)",
                code="provider_not_configured",
                status=503,
            )
        p = self.providers.get(name)
        if email is not None:
            email = email.strip()
            if not 3 <= len(email) <= _EMAIL_MAX or "@" not in email:
                raise InvalidInput("email is not a valid address", code="invalid_email")
        base = self.public_url or "http://localhost"
        success = _check_url(success_url or f"{base}/v1/checkout/done", "success_url")
        cancel = _check_url(cancel_url or f"{base}/v1/checkout/cancelled", "cancel_url")
        if customer_id is None and email is None:
            raise InvalidInput(
                "an anonymous buyer needs an email (or buy with your API key)", code="email_required"
            )
        chk_id = new_id("chk")
        token = "tkc_" + secrets.token_urlsafe(32)
        success = _with_query(success, tollkeep_checkout=chk_id, tollkeep_claim=token)
        now = self.clock.now()
        expires = now + self.checkout_ttl
        new_customer = customer_id is None
        create_buyer = (
            self.customers.create_fn(f"buyer:{email.lower()}", email=email)
            if new_customer and email
            else None
        )

        def open_checkout(s: Tx) -> str:
            cid = customer_id
            if cid is None and email is not None:
                cid = self.customers.id_by_external_id(s, f"buyer:{email.lower()}")
                if cid is None and create_buyer is not None:
                    cid = str(create_buyer(s)["id"])
            assert cid is not None
            repo.insert_checkout(
                s,
                id=chk_id,
                provider=name,
                provider_ref=None,
                customer_id=cid,
                new_customer=new_customer,
                email=email,
                pack=pack,
                plan=plan,
                currency=currency,
                amount=amount,
                url="",
                success_url=success,
                cancel_url=cancel,
                status="open",
                claim_hash=digest(token),
                claimed_at=None,
                key_id=None,
                payment_id=None,
                created_at=now,
                expires_at=expires,
                paid_at=None,
            )
            self.record_stage(s, cid, "acquisition", source=source, provider=name, at=now)
            return cid

        cid = self.executor.call(open_checkout)
        req = CheckoutRequest(
            checkout_id=chk_id,
            customer_id=cid,
            email=email,
            pack=item_pack,
            plan=item_plan,
            currency=currency,
            amount=amount,
            success_url=success,
            cancel_url=cancel,
            metadata={
                META_CHECKOUT: chk_id,
                META_CUSTOMER: cid,
                **({META_PACK: pack} if pack else {META_PLAN: plan} if plan else {}),
            },
        )
        created = p.create_checkout(req)  # ProviderUnavailable: 502, the checkout stays unpaid
        self.executor.call(
            lambda s: repo.set_checkout_provider(
                s, chk_id, provider_ref=created.provider_ref, url=created.url
            )
        )
        return {
            "id": chk_id,
            "url": created.url,
            "provider": name,
            "status": "open",
            "customer_id": cid,
            "pack": pack,
            "plan": plan,
            "amount": amount,
            "currency": currency,
            "expires_at": iso(created.expires_at or expires),
            "claim_token": token,
        }

    def get_checkout(
        self, checkout_id: str, *, claim: str | None = None, customer_id: str | None = None
    ) -> dict[str, Any]:
        """A checkout's status, for the holder of its claim token or the customer's own key. The
        first claim of a paid checkout for a buyer without a key mints one and shows it, once."""
        with self.db.scope(write=False) as s:
            row = repo.get_checkout(s, checkout_id)
        ok_claim = (
            row is not None and claim is not None and hmac.compare_digest(row.claim_hash, digest(claim))
        )
        if row is None or not (ok_claim or (customer_id is not None and row.customer_id == customer_id)):
            # one answer for "no such checkout" and "not yours": ids cannot be probed
            raise NotFound(f"checkout {checkout_id!r} not found", code="checkout_not_found")
        view = queries.checkout_view(row)
        if row.status == "open" and row.expires_at < self.clock.now():
            view["status"] = "expired"
        view["api_key"] = None
        if row.status != "paid" or not ok_claim:
            return view
        if row.claimed_at is not None:
            view["message"] = "the API key of this checkout was already shown; it is not shown again"
            return view
        mint = self.keys.create_fn(row.customer_id, name=f"checkout {row.id}")

        def claim_fn(s: Tx) -> dict[str, Any]:
            key = mint(s)
            plaintext = key.get("key")
            if not repo.claim_checkout(
                s, row.id, key_id=key.get("id") if plaintext else None, now=self.clock.now()
            ):
                raise Conflict("claimed meanwhile", code="checkout_already_claimed")
            return key

        try:
            key = self.executor.call(claim_fn)
        except Conflict:
            view["claimed"] = True
            view["message"] = "the API key of this checkout was already shown; it is not shown again"
            return view
        view["claimed"] = True
        view["api_key"] = key.get("key")
        if view["api_key"] is None:
            view["message"] = "this customer already has an API key: use it (it keeps working)"
        return view

    def pay_local(self, checkout_id: str) -> str:
        """The local provider's page: mark the checkout paid (through the inbox, like a real
        provider's webhook) and say where to send the buyer."""
        if "local" not in self.providers.names():
            raise Forbidden("local payments are off on this server", code="local_payments_disabled")
        with self.db.scope(write=False) as s:
            row = repo.get_checkout(s, checkout_id)
        if row is None or row.provider != "local":
            raise NotFound(f"checkout {checkout_id!r} not found", code="checkout_not_found")
        if row.status == "open" and row.expires_at < self.clock.now():
            raise Conflict("this checkout has expired", code="checkout_expired")
        from tollkeep.payments.providers.base import VerifiedEvent

        event_id, type_, body = paid_event(row)
        self.inbox.store_event("local", VerifiedEvent(event_id, type_, json.loads(body)), body)
        return str(row.success_url)

    # ---- reconcile ------------------------------------------------------------------------------
    def reconcile(
        self, provider: str, since: datetime, *, attempts: int = 5, process: bool = True
    ) -> dict[str, Any]:
        """Ask ``provider`` for the payments it settled since ``since`` and put any the inbox
        never received through the same path (stored, then processed; effects keyed by payment
        id, so one already applied changes nothing). A provider that is down is retried with
        back-off (1 s, 2 s, 4 s, ...), then the error is raised: nothing was half done."""
        p = self.providers.get(provider)
        delay = 1.0
        for attempt in range(1, attempts + 1):
            try:
                events = list(p.settled_since(since))
                break
            except ProviderUnavailable:
                if attempt == attempts:
                    raise
                log.warning("reconcile %s: provider unavailable (attempt %d), retrying", provider, attempt)
                time.sleep(delay)
                delay *= 2
        new = 0
        for event in events:
            body = json.dumps(event.payload, sort_keys=True, default=str).encode()
            if not self.inbox.store_event(provider, event, body)["duplicate"]:
                new += 1
        counts: dict[str, int] = {}
        while process:
            step = self.inbox.process()
            for k, v in step.items():
                counts[k] = counts.get(k, 0) + v
            if not step:
                break
        return {
            "provider": provider,
            "since": iso(since),
            "found": len(events),
            "new": new,
            "processed": counts,
        }

    # ---- reads ----------------------------------------------------------------------------------
    def list_events(self, **kw: Any) -> dict[str, Any]:
        with self.db.scope(write=False) as s:
            return queries.list_events(s, **kw)

    def list_payments(self, **kw: Any) -> dict[str, Any]:
        with self.db.scope(write=False) as s:
            return queries.list_payments(s, **kw)

    def expire_checkouts(self) -> int:
        now = self.clock.now()
        return int(self.executor.call(lambda s: repo.expire_checkouts(s, now)))
