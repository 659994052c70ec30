"""GitHub Marketplace ``marketplace_purchase`` deliveries as GitHub sends them: the documented
example payload of each action (GitHub's docs use account 18404719 "username", plan 435 "Basic
Plan" at $10/month) and a signer producing the real headers (``X-GitHub-Event``,
``X-GitHub-Delivery``, ``X-Hub-Signature-256``, ``X-Hub-Signature``).

End to end: ``TOLLKEEP_GITHUB_WEBHOOK_SECRET=s``;
``signed(purchased(), "s").deliver(f"{server_url}/webhooks/github")``.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import uuid
from typing import Any

from tests.payments.fakes._server import Delivery

__all__ = [
    "ACCOUNT_ID",
    "BASIC_PLAN",
    "FREE_PLAN",
    "PRO_PLAN",
    "Delivery",
    "cancelled",
    "changed",
    "pending_change",
    "pending_change_cancelled",
    "ping",
    "purchased",
    "signed",
]

ACCOUNT_ID = 18404719

BASIC_PLAN: dict[str, Any] = {
    "id": 435,
    "name": "Basic Plan",
    "description": "Basic Features",
    "monthly_price_in_cents": 1000,
    "yearly_price_in_cents": 10000,
    "price_model": "FLAT_RATE",
    "has_free_trial": True,
    "unit_name": None,
    "bullets": ["Is Basic", "Because Basic "],
}
PRO_PLAN: dict[str, Any] = {
    **BASIC_PLAN,
    "id": 436,
    "name": "Pro Plan",
    "description": "Pro Features",
    "monthly_price_in_cents": 500,
    "yearly_price_in_cents": 5000,
    "price_model": "PER_UNIT",
    "unit_name": "seat",
}
FREE_PLAN: dict[str, Any] = {
    **BASIC_PLAN,
    "id": 434,
    "name": "Free Plan",
    "description": "Free for everyone",
    "monthly_price_in_cents": 0,
    "yearly_price_in_cents": 0,
    "price_model": "FREE",
    "has_free_trial": False,
}

_SENDER: dict[str, Any] = {
    "login": "username",
    "id": 3877742,
    "node_id": "MDQ6VXNlcjM4Nzc3NDI=",
    "avatar_url": "https://avatars2.githubusercontent.com/u/3877742?v=4",
    "gravatar_id": "",
    "url": "https://api.github.com/users/username",
    "html_url": "https://github.com/username",
    "type": "User",
    "site_admin": True,
    "email": "username@email.com",
}


def _purchase(plan: dict[str, Any], *, account_id: int, unit_count: int, **extra: Any) -> dict[str, Any]:
    out = {
        "account": {
            "type": "Organization",
            "id": account_id,
            "node_id": "MDEyOk9yZ2FuaXphdGlvbjE4NDA0NzE5",
            "login": "username",
            "organization_billing_email": "username@email.com",
        },
        "billing_cycle": "monthly",
        "unit_count": unit_count,
        "on_free_trial": False,
        "free_trial_ends_on": None,
        "next_billing_date": "2017-11-05T00:00:00+00:00",
        "plan": copy.deepcopy(plan),
    }
    out.update(extra)
    return out


def _event(
    action: str, effective_date: str, purchase: dict[str, Any], previous: dict[str, Any] | None
) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "action": action,
        "effective_date": effective_date,
        "sender": copy.deepcopy(_SENDER),
        "marketplace_purchase": purchase,
    }
    if previous is not None:
        payload["previous_marketplace_purchase"] = previous
    return payload


def purchased(
    plan: dict[str, Any] = BASIC_PLAN,
    *,
    account_id: int = ACCOUNT_ID,
    unit_count: int = 1,
    effective_date: str = "2017-10-25T00:00:00+00:00",
    **extra: Any,
) -> dict[str, Any]:
    purchase = _purchase(plan, account_id=account_id, unit_count=unit_count, **extra)
    return _event("purchased", effective_date, purchase, None)


def changed(
    plan: dict[str, Any] = PRO_PLAN,
    previous: dict[str, Any] = BASIC_PLAN,
    *,
    account_id: int = ACCOUNT_ID,
    effective_date: str = "2017-10-25T00:00:00+00:00",
) -> dict[str, Any]:
    return _event(
        "changed",
        effective_date,
        _purchase(plan, account_id=account_id, unit_count=1),
        _purchase(previous, account_id=account_id, unit_count=1),
    )


def cancelled(
    plan: dict[str, Any] = BASIC_PLAN,
    *,
    account_id: int = ACCOUNT_ID,
    effective_date: str = "2017-11-05T00:00:00+00:00",
) -> dict[str, Any]:
    return _event("cancelled", effective_date, _purchase(plan, account_id=account_id, unit_count=1), None)


def pending_change(
    plan: dict[str, Any] = FREE_PLAN,
    previous: dict[str, Any] = BASIC_PLAN,
    *,
    account_id: int = ACCOUNT_ID,
    effective_date: str = "2017-11-05T00:00:00+00:00",
) -> dict[str, Any]:
    return _event(
        "pending_change",
        effective_date,
        _purchase(plan, account_id=account_id, unit_count=1),
        _purchase(previous, account_id=account_id, unit_count=1),
    )


def pending_change_cancelled(
    plan: dict[str, Any] = BASIC_PLAN,
    *,
    account_id: int = ACCOUNT_ID,
    effective_date: str = "2017-11-05T00:00:00+00:00",
) -> dict[str, Any]:
    return _event(
        "pending_change_cancelled", effective_date, _purchase(plan, account_id=account_id, unit_count=1), None
    )


def ping() -> dict[str, Any]:
    return {
        "zen": "Design for failure.",
        "hook_id": 30,
        "hook": {"type": "Marketplace::Listing", "id": 30, "events": ["marketplace_purchase"]},
    }


def signed(
    payload: dict[str, Any],
    secret: str,
    *,
    event: str | None = None,
    delivery: str | None = None,
) -> Delivery:
    """The request GitHub sends: the JSON body, signed with ``secret`` (``X-Hub-Signature-256``,
    and the legacy SHA-1 ``X-Hub-Signature``), a fresh delivery GUID unless given."""
    body = json.dumps(payload, indent=2).encode()
    event = event or ("ping" if "zen" in payload else "marketplace_purchase")
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/044aadd",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "30",
        "X-Hub-Signature": "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest(),
        "X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
    }
    return Delivery(body=body, headers=headers, payload=payload)
