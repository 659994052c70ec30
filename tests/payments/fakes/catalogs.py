"""A small catalog for the provider tests: plans with GitHub plan ids, two credit packs."""

from __future__ import annotations

from tollkeep.catalog import Catalog, Pack, Plan
from tollkeep.payments.providers.base import CheckoutRequest


def provider_catalog() -> Catalog:
    plans = {
        "free": Plan(key="free", name="Free", is_free=True, github_plan_id=434),
        "basic": Plan(key="basic", name="Basic", is_free=False, prices={"usd": 1000}, github_plan_id=435),
        "pro": Plan(key="pro", name="Pro", is_free=False, prices={"usd": 500}, github_plan_id=436),
    }
    packs = {
        "starter": Pack(key="starter", name="Starter pack", credits=10_000, prices={"usd": 1050}),
        "builder": Pack(key="builder", name="Builder pack", credits=100_000, prices={"usd": 9000}),
    }
    return Catalog(
        version="providers-test",
        label=None,
        source=None,
        text="",
        plans=plans,
        packs=packs,
        default_plan="free",
    )


def checkout_request(
    *,
    checkout_id: str = "chk_test1",
    pack: str | None = "starter",
    plan: str | None = None,
    currency: str = "usd",
    amount: int | None = None,
    customer_id: str | None = "cus_test1",
    email: str | None = "buyer@example.com",
) -> CheckoutRequest:
    catalog = provider_catalog()
    p = catalog.pack(pack) if pack else None
    pl = catalog.plan(plan) if plan else None
    if amount is None:
        amount = (p.prices if p else pl.prices if pl else {})[currency]
    return CheckoutRequest(
        checkout_id=checkout_id,
        customer_id=customer_id,
        email=email,
        pack=p,
        plan=pl,
        currency=currency,
        amount=amount,
        success_url="https://seller.example/thanks",
        cancel_url="https://seller.example/cancel",
    )
