"""GitHub Marketplace: plans bought, changed and cancelled on github.com, billed by GitHub.

Webhook (``POST /webhooks/github``): GitHub signs the raw body with the app's webhook secret,
``X-Hub-Signature-256: sha256=<hex HMAC-SHA256>``; ``X-GitHub-Delivery`` (a GUID, one per
delivery; a manual redelivery from the app settings keeps it) is the inbox's deduplication id;
``X-GitHub-Event`` is ``marketplace_purchase`` (or ``ping`` when the hook is created). The event
type is ``marketplace_purchase.<action>``; any other event gets ``<event>.<action>``, which is
not in :attr:`GitHubMarketplace.handled_types` (the inbox marks it ignored).

What each action does (``effective_date`` is when GitHub says the change takes effect: new
purchases and upgrades at once; downgrades and cancellations are only *sent* when they take
effect, at the start of the next billing cycle, after a ``pending_change`` announced them):

- ``purchased`` of a paid plan: :class:`PaymentSettled` with the catalog plan whose
  ``github_plan_id`` is the plan's id; ``payment_id`` ``github:<account>:<plan>:<effective_date>``
  (the delivery id when a payload has no effective date), amount from the plan's price (GitHub,
  not tollkeep, collects it). A free plan (``price_model`` FREE, or no price) or a purchase on a
  free trial: :class:`PlanChanged` (nothing was paid), ``ref`` built the same way.
- ``changed``: :class:`PlanChanged` to the new plan, effective ``effective_date``.
- ``cancelled``: :class:`PlanCancelled`, effective ``effective_date``.
- ``pending_change`` / ``pending_change_cancelled``: :class:`Recorded` (the pending plan and
  date in the details); the change itself arrives later as ``changed`` or ``cancelled``.

An unknown plan id is :class:`CannotApply` (``no plan has github_plan_id N``): add the id to the
catalog and replay the event. The buyer is ``external_ref`` ``github:<account id>`` (name: the
account login; email: the organization's billing email, else the sender's public email).

No checkout (purchases happen on the Marketplace listing) and no reconcile (the Marketplace API
needs a GitHub App JWT tollkeep does not hold; GitHub does not resend failed deliveries, but a
delivery can be redelivered from the app's settings).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, ClassVar

from tollkeep.catalog import Catalog, Plan
from tollkeep.config import Settings
from tollkeep.payments.providers.base import (
    Action,
    Buyer,
    CannotApply,
    CheckoutCreated,
    CheckoutRequest,
    MalformedEvent,
    PaymentSettled,
    PlanCancelled,
    PlanChanged,
    ReconcileNotSupported,
    Recorded,
    SignatureInvalid,
    VerifiedEvent,
    lower_headers,
)

__all__ = ["GitHubMarketplace", "from_settings"]

_ACTIONS = ("purchased", "changed", "cancelled", "pending_change", "pending_change_cancelled")


class GitHubMarketplace:
    name: ClassVar[str] = "github"
    kept_headers: ClassVar[tuple[str, ...]] = (
        "x-github-delivery",
        "x-github-event",
        "x-hub-signature-256",
        "x-github-hook-id",
        "x-github-hook-installation-target-id",
    )
    handled_types: ClassVar[frozenset[str]] = frozenset(
        {"ping", *(f"marketplace_purchase.{a}" for a in _ACTIONS)}
    )

    def __init__(self, webhook_secret: str) -> None:
        if not webhook_secret:
            raise ValueError("the GitHub webhook secret is empty")
        self._secret = webhook_secret.encode()

    # ---- 1. verify ------------------------------------------------------------------------------
    def verify(self, body: bytes, headers: Mapping[str, str]) -> VerifiedEvent:
        h = lower_headers(headers)
        given = h.get("x-hub-signature-256", "").strip()
        if not given:
            raise SignatureInvalid("no X-Hub-Signature-256 header: not a signed GitHub delivery")
        expected = "sha256=" + hmac.new(self._secret, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise SignatureInvalid("X-Hub-Signature-256 does not match the body and the webhook secret")
        delivery = h.get("x-github-delivery", "").strip()
        if not delivery:
            raise MalformedEvent("no X-GitHub-Delivery header")
        event = h.get("x-github-event", "").strip()
        if not event:
            raise MalformedEvent("no X-GitHub-Event header")
        payload = _json_object(body)
        if event == "ping":
            return VerifiedEvent(event_id=delivery, type="ping", payload=payload)
        action = payload.get("action")
        if not isinstance(action, str) or not action:
            raise MalformedEvent(f"{event} delivery {delivery} has no action")
        occurred = _parse_date(payload.get("effective_date")) if event == "marketplace_purchase" else None
        return VerifiedEvent(
            event_id=delivery, type=f"{event}.{action}", payload=payload, occurred_at=occurred
        )

    # ---- 2. interpret ---------------------------------------------------------------------------
    def interpret(self, event: VerifiedEvent, catalog: Catalog) -> Sequence[Action]:
        if event.type == "ping":
            return [Recorded("GitHub webhook ping", {"zen": event.payload.get("zen")})]
        if event.type not in self.handled_types:
            return [Recorded(f"GitHub event {event.type} is not handled")]
        p = event.payload
        action = event.type.split(".", 1)[1]
        purchase = _obj(p.get("marketplace_purchase"), "marketplace_purchase")
        account = _obj(purchase.get("account"), "marketplace_purchase.account")
        gh_plan = _obj(purchase.get("plan"), "marketplace_purchase.plan")
        account_id = account.get("id")
        plan_id = gh_plan.get("id")
        if not isinstance(account_id, int) or not isinstance(plan_id, int):
            raise MalformedEvent("marketplace_purchase has no account id or plan id")
        effective_raw = p.get("effective_date")
        effective_at = _parse_date(effective_raw)
        when = effective_raw if isinstance(effective_raw, str) and effective_raw else event.event_id
        buyer = _buyer(account, p.get("sender"))

        if action in ("pending_change", "pending_change_cancelled"):
            plan = catalog.plan_for_github(plan_id)
            previous = p.get("previous_marketplace_purchase")
            prev_plan = previous.get("plan") if isinstance(previous, Mapping) else None
            verb = "announced" if action == "pending_change" else "withdrawn"
            return [
                Recorded(
                    f"GitHub Marketplace: a pending change of {account.get('login')} to plan "
                    f"{gh_plan.get('name')!s} ({plan.key if plan else 'not in the catalog'}) on "
                    f"{effective_raw} was {verb}",
                    {
                        "action": action,
                        "account": buyer.external_ref,
                        "login": account.get("login"),
                        "github_plan_id": plan_id,
                        "plan": plan.key if plan else None,
                        "effective_date": effective_raw,
                        "previous_github_plan_id": prev_plan.get("id")
                        if isinstance(prev_plan, Mapping)
                        else None,
                    },
                )
            ]

        if action == "cancelled":
            plan = catalog.plan_for_github(plan_id)  # the plan that ends; unknown: still cancel
            return [
                PlanCancelled(
                    ref=f"github:{account_id}:cancelled:{when}",
                    buyer=buyer,
                    plan=plan.key if plan else None,
                    effective_at=effective_at,
                )
            ]

        plan = _catalog_plan(catalog, plan_id)
        ref = f"github:{account_id}:{plan_id}:{when}"
        if action == "changed" or _is_free(gh_plan) or purchase.get("on_free_trial") is True:
            return [PlanChanged(ref=ref, buyer=buyer, plan=plan.key, effective_at=effective_at)]
        return [
            PaymentSettled(
                payment_id=ref,
                buyer=buyer,
                plan=plan.key,
                amount=_price(gh_plan, purchase),
                currency="usd",
                subscription_ref=f"github:{account_id}",
            )
        ]

    # ---- 3. checkout / 4. reconcile -------------------------------------------------------------
    def create_checkout(self, request: CheckoutRequest) -> CheckoutCreated:
        raise CannotApply(
            "GitHub Marketplace purchases happen on the app's Marketplace listing on github.com, "
            "not through a tollkeep checkout",
            code="checkout_not_supported",
            details={"provider": self.name},
        )

    def settled_since(self, since: datetime) -> Sequence[VerifiedEvent]:
        raise ReconcileNotSupported(
            "GitHub Marketplace purchases cannot be reconciled: listing them needs a GitHub App JWT, "
            "which tollkeep does not hold (redeliver missed webhooks from the app's settings)",
            details={"provider": self.name},
        )


def from_settings(settings: Settings) -> GitHubMarketplace | None:
    secret = settings.github_webhook_secret
    if secret is None or not secret.get_secret_value():
        return None
    return GitHubMarketplace(secret.get_secret_value())


# ---- helpers ------------------------------------------------------------------------------------
def _json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise MalformedEvent("the body is not JSON") from None
    if not isinstance(payload, dict):
        raise MalformedEvent("the body is not a JSON object")
    return payload


def _obj(value: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MalformedEvent(f"the event has no {what} object")
    return value


def _parse_date(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise MalformedEvent(f"effective_date {value!r} is not an ISO 8601 date") from None


def _buyer(account: Mapping[str, Any], sender: Any) -> Buyer:
    email = account.get("organization_billing_email") or None
    if not email and isinstance(sender, Mapping):
        email = sender.get("email") or None
    return Buyer(
        external_ref=f"github:{account['id']}",
        name=account.get("login") or None,
        email=email if isinstance(email, str) else None,
    )


def _catalog_plan(catalog: Catalog, plan_id: int) -> Plan:
    plan = catalog.plan_for_github(plan_id)
    if plan is None:
        raise CannotApply(
            f"no plan has github_plan_id {plan_id}",
            details={"github_plan_id": plan_id, "catalog_version": catalog.version},
        )
    return plan


def _is_free(gh_plan: Mapping[str, Any]) -> bool:
    if gh_plan.get("price_model") == "FREE":
        return True
    return not gh_plan.get("monthly_price_in_cents") and not gh_plan.get("yearly_price_in_cents")


def _price(gh_plan: Mapping[str, Any], purchase: Mapping[str, Any]) -> int | None:
    """What GitHub bills per cycle, in US cents (per unit times ``unit_count`` for PER_UNIT)."""
    yearly = purchase.get("billing_cycle") == "yearly"
    cents = gh_plan.get("yearly_price_in_cents" if yearly else "monthly_price_in_cents")
    if not isinstance(cents, int):
        return None
    units = purchase.get("unit_count")
    if gh_plan.get("price_model") == "PER_UNIT" and isinstance(units, int) and units > 0:
        return cents * units
    return cents
