"""GitHub Marketplace: X-Hub-Signature-256 verification, every marketplace_purchase action."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from tests.payments.fakes import github_payloads as gh
from tests.payments.fakes.catalogs import checkout_request, provider_catalog
from tollkeep.config import Settings
from tollkeep.payments.providers import github
from tollkeep.payments.providers.base import (
    Buyer,
    CannotApply,
    MalformedEvent,
    PaymentSettled,
    PlanCancelled,
    PlanChanged,
    Provider,
    ReconcileNotSupported,
    Recorded,
    SignatureInvalid,
)
from tollkeep.payments.providers.github import GitHubMarketplace

SECRET = "gh-webhook-secret"
BUYER = Buyer(external_ref="github:18404719", name="username", email="username@email.com")


@pytest.fixture
def provider() -> GitHubMarketplace:
    return GitHubMarketplace(SECRET)


def actions(provider: GitHubMarketplace, payload: dict, **kw: str) -> list:
    d = gh.signed(payload, SECRET, **kw)
    return list(provider.interpret(provider.verify(d.body, d.headers), provider_catalog()))


# ---- verification ---------------------------------------------------------------------------------
def test_a_signed_delivery_verifies(provider: GitHubMarketplace) -> None:
    d = gh.signed(gh.purchased(), SECRET, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    event = provider.verify(d.body, d.headers)
    assert event.event_id == "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert event.type == "marketplace_purchase.purchased"
    assert event.occurred_at == datetime(2017, 10, 25, tzinfo=UTC)
    assert event.payload["marketplace_purchase"]["plan"]["id"] == 435
    assert event.type in provider.handled_types


def test_header_names_are_case_insensitive(provider: GitHubMarketplace) -> None:
    d = gh.signed(gh.purchased(), SECRET)
    assert provider.verify(d.body, {k.lower(): v for k, v in d.headers.items()}).event_id


def test_a_redelivery_has_the_same_event_id(provider: GitHubMarketplace) -> None:
    first = gh.signed(gh.purchased(), SECRET)
    again = gh.signed(gh.purchased(), SECRET, delivery=first.headers["X-GitHub-Delivery"])
    assert (
        provider.verify(first.body, first.headers).event_id
        == provider.verify(again.body, again.headers).event_id
    )


def test_wrong_secret_is_refused(provider: GitHubMarketplace) -> None:
    d = gh.signed(gh.purchased(), "another-secret")
    with pytest.raises(SignatureInvalid):
        provider.verify(d.body, d.headers)


def test_forged_signature_is_refused(provider: GitHubMarketplace) -> None:
    d = gh.signed(gh.purchased(), SECRET)
    headers = {**d.headers, "X-Hub-Signature-256": "sha256=" + "0" * 64}
    with pytest.raises(SignatureInvalid):
        provider.verify(d.body, headers)


@pytest.mark.parametrize("header", [None, "", "sha256=", "deadbeef", "sha1=abc"])
def test_a_missing_or_empty_signature_is_refused(provider: GitHubMarketplace, header: str | None) -> None:
    d = gh.signed(gh.purchased(), SECRET)
    headers = {k: v for k, v in d.headers.items() if k != "X-Hub-Signature-256"}
    if header is not None:
        headers["X-Hub-Signature-256"] = header
    with pytest.raises(SignatureInvalid):
        provider.verify(d.body, headers)


def test_the_legacy_sha1_signature_alone_is_not_enough(provider: GitHubMarketplace) -> None:
    d = gh.signed(gh.purchased(), SECRET)
    headers = {k: v for k, v in d.headers.items() if k != "X-Hub-Signature-256"}
    with pytest.raises(SignatureInvalid):
        provider.verify(d.body, headers)


@pytest.mark.parametrize("where", [0, 1, 100, -2, -1])
def test_a_body_changed_by_one_byte_is_refused(provider: GitHubMarketplace, where: int) -> None:
    d = gh.signed(gh.purchased(), SECRET)
    body = bytearray(d.body)
    body[where] ^= 0x01
    with pytest.raises(SignatureInvalid):
        provider.verify(bytes(body), d.headers)


def test_signed_but_not_json_is_malformed(provider: GitHubMarketplace) -> None:
    import hashlib
    import hmac

    body = b'{"action": "purchased",'
    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "X-Hub-Signature-256": sig,
        "X-GitHub-Delivery": "d1",
        "X-GitHub-Event": "marketplace_purchase",
    }
    with pytest.raises(MalformedEvent):
        provider.verify(body, headers)


def test_no_delivery_id_is_malformed(provider: GitHubMarketplace) -> None:
    d = gh.signed(gh.purchased(), SECRET)
    headers = {k: v for k, v in d.headers.items() if k != "X-GitHub-Delivery"}
    with pytest.raises(MalformedEvent):
        provider.verify(d.body, headers)


def test_ping_is_recorded(provider: GitHubMarketplace) -> None:
    d = gh.signed(gh.ping(), SECRET)
    event = provider.verify(d.body, d.headers)
    assert event.type == "ping" and event.type in provider.handled_types
    [action] = provider.interpret(event, provider_catalog())
    assert isinstance(action, Recorded)


def test_other_events_get_a_type_the_inbox_ignores(provider: GitHubMarketplace) -> None:
    d = gh.signed({"action": "created", "installation": {"id": 1}}, SECRET, event="installation")
    event = provider.verify(d.body, d.headers)
    assert event.type == "installation.created"
    assert event.type not in provider.handled_types


# ---- interpretation -------------------------------------------------------------------------------
def test_purchase_of_a_paid_plan_settles_a_payment(provider: GitHubMarketplace) -> None:
    [action] = actions(provider, gh.purchased())
    assert action == PaymentSettled(
        payment_id="github:18404719:435:2017-10-25T00:00:00+00:00",
        buyer=BUYER,
        plan="basic",
        amount=1000,
        currency="usd",
        subscription_ref="github:18404719",
    )


def test_yearly_and_per_unit_prices(provider: GitHubMarketplace) -> None:
    [yearly] = actions(provider, gh.purchased(billing_cycle="yearly"))
    assert isinstance(yearly, PaymentSettled) and yearly.amount == 10000
    [seats] = actions(provider, gh.purchased(gh.PRO_PLAN, unit_count=3))
    assert isinstance(seats, PaymentSettled) and seats.plan == "pro" and seats.amount == 1500


def test_the_same_purchase_redelivered_has_the_same_payment_id(provider: GitHubMarketplace) -> None:
    [a] = actions(provider, gh.purchased())
    [b] = actions(provider, gh.purchased())  # another delivery id, same purchase
    assert isinstance(a, PaymentSettled) and isinstance(b, PaymentSettled)
    assert a.payment_id == b.payment_id


def test_purchase_of_a_free_plan_is_a_plan_change(provider: GitHubMarketplace) -> None:
    [action] = actions(provider, gh.purchased(gh.FREE_PLAN))
    assert action == PlanChanged(
        ref="github:18404719:434:2017-10-25T00:00:00+00:00",
        buyer=BUYER,
        plan="free",
        effective_at=datetime(2017, 10, 25, tzinfo=UTC),
    )


def test_purchase_on_a_free_trial_is_a_plan_change(provider: GitHubMarketplace) -> None:
    [action] = actions(
        provider, gh.purchased(on_free_trial=True, free_trial_ends_on="2017-11-08T00:00:00+00:00")
    )
    assert isinstance(action, PlanChanged) and action.plan == "basic"


def test_without_an_effective_date_the_delivery_id_makes_the_payment_id(provider: GitHubMarketplace) -> None:
    payload = gh.purchased()
    del payload["effective_date"]
    [action] = actions(provider, payload, delivery="dlv-1")
    assert isinstance(action, PaymentSettled) and action.payment_id == "github:18404719:435:dlv-1"


def test_the_email_falls_back_to_the_sender(provider: GitHubMarketplace) -> None:
    payload = gh.purchased()
    payload["marketplace_purchase"]["account"]["organization_billing_email"] = None
    payload["sender"]["email"] = "sender@example.com"
    [action] = actions(provider, payload)
    assert isinstance(action, PaymentSettled) and action.buyer.email == "sender@example.com"


def test_changed_moves_the_plan_at_the_effective_date(provider: GitHubMarketplace) -> None:
    [action] = actions(
        provider, gh.changed(gh.PRO_PLAN, gh.BASIC_PLAN, effective_date="2017-10-30T12:00:00Z")
    )
    assert action == PlanChanged(
        ref="github:18404719:436:2017-10-30T12:00:00Z",
        buyer=BUYER,
        plan="pro",
        effective_at=datetime(2017, 10, 30, 12, tzinfo=UTC),
    )


def test_cancelled_ends_the_plan_at_the_effective_date(provider: GitHubMarketplace) -> None:
    [action] = actions(provider, gh.cancelled())
    assert action == PlanCancelled(
        ref="github:18404719:cancelled:2017-11-05T00:00:00+00:00",
        buyer=BUYER,
        plan="basic",
        effective_at=datetime(2017, 11, 5, tzinfo=UTC),
    )


def test_cancelling_a_plan_the_catalog_does_not_know_still_cancels(provider: GitHubMarketplace) -> None:
    [action] = actions(provider, gh.cancelled({**gh.BASIC_PLAN, "id": 999}))
    assert isinstance(action, PlanCancelled) and action.plan is None


def test_pending_change_is_recorded_with_the_plan_and_date(provider: GitHubMarketplace) -> None:
    [action] = actions(provider, gh.pending_change(gh.FREE_PLAN, gh.BASIC_PLAN))
    assert isinstance(action, Recorded)
    assert action.details["plan"] == "free"
    assert action.details["github_plan_id"] == 434
    assert action.details["previous_github_plan_id"] == 435
    assert action.details["effective_date"] == "2017-11-05T00:00:00+00:00"
    [withdrawn] = actions(provider, gh.pending_change_cancelled())
    assert isinstance(withdrawn, Recorded) and withdrawn.details["action"] == "pending_change_cancelled"


@pytest.mark.parametrize("make", [gh.purchased, gh.changed])
def test_an_unknown_plan_id_cannot_apply(provider: GitHubMarketplace, make: Callable[..., dict]) -> None:
    with pytest.raises(CannotApply, match="no plan has github_plan_id 999"):
        actions(provider, make({**gh.BASIC_PLAN, "id": 999}))


def test_a_purchase_without_account_is_malformed(provider: GitHubMarketplace) -> None:
    payload = gh.purchased()
    del payload["marketplace_purchase"]["account"]
    with pytest.raises(MalformedEvent):
        actions(provider, payload)


# ---- no checkout, no reconcile; configuration -----------------------------------------------------
def test_checkout_is_not_supported(provider: GitHubMarketplace) -> None:
    with pytest.raises(CannotApply) as err:
        provider.create_checkout(checkout_request())
    assert err.value.code == "checkout_not_supported"


def test_reconcile_is_not_supported(provider: GitHubMarketplace) -> None:
    with pytest.raises(ReconcileNotSupported) as err:
        provider.settled_since(datetime(2024, 1, 1, tzinfo=UTC))
    assert err.value.code == "reconcile_not_supported"


def test_from_settings() -> None:
    assert github.from_settings(Settings()) is None
    assert github.from_settings(Settings(github_webhook_secret="")) is None
    p = github.from_settings(Settings(github_webhook_secret=SECRET))
    assert isinstance(p, GitHubMarketplace) and isinstance(p, Provider)
    assert p.name == "github" and "x-github-delivery" in p.kept_headers
