"""Buying a pack through Stripe against a real ``tollkeep serve``: the real SDK talks to the fake
(localstripe behind it), the webhook is signed by the SDK's own helper, posted over HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.conftest import ADMIN
from tests.factories import eventually, served
from tests.payments.fakes import stripe_server as fakes

# the fake's fixtures, used by name below
localstripe_url = fakes.localstripe_url
stripe_fake = fakes.stripe_fake


def test_a_stripe_pack_checkout_grants_once_over_http(
    db_url: str, tmp_path: Path, stripe_fake: fakes.StripeFake
) -> None:
    with served(db_url, tmp_path, env=fakes.stripe_env(stripe_fake)) as base:
        r = httpx.post(
            f"{base}/v1/checkout",
            json={"pack": "starter", "provider": "stripe", "email": "e2e@example.com"},
            timeout=20,
        )
        assert r.status_code == 201, r.text
        chk = r.json()
        (session_id,) = stripe_fake.sessions
        assert chk["url"] == f"https://checkout.stripe.com/c/pay/{session_id}"
        (sent,) = stripe_fake.seen("POST", "/v1/checkout/sessions")
        assert sent.params["metadata"]["tollkeep_checkout"] == chk["id"]
        assert sent.params["metadata"]["tollkeep_customer"] == chk["customer_id"]

        session = stripe_fake.complete_session(session_id, email="e2e@example.com")
        body, headers = fakes.signed(fakes.event("checkout.session.completed", session))
        for _ in range(2):  # Stripe retries a delivery: applied once
            r = httpx.post(f"{base}/webhooks/stripe", content=body, headers=headers, timeout=20)
            assert r.status_code < 300, r.text
        forged = httpx.post(
            f"{base}/webhooks/stripe",
            content=body,
            headers={**headers, "Stripe-Signature": fakes.sign(body, "whsec_not_ours")},
            timeout=20,
        )
        assert forged.status_code == 401

        def paid() -> bool:
            view = httpx.get(
                f"{base}/v1/checkout/{chk['id']}", params={"claim": chk["claim_token"]}, timeout=20
            )
            return view.json().get("status") == "paid"

        assert eventually(paid, timeout=20)
        admin = {"Authorization": f"Bearer {ADMIN}"}
        balance = httpx.get(f"{base}/admin/customers/{chk['customer_id']}", headers=admin, timeout=20)
        assert balance.status_code == 200, balance.text
        assert balance.json()["wallet"]["balance"] == 1000  # the starter pack, granted once
