"""The demo's subscription tour: on the demo's fast clock (:mod:`.clock`), a customer subscribes
to a plan that comes with a licence, the period ends, the renewal invoice is created, settled,
the subscription renews with the new cycle's allowance, and the licence, extended under the same
id, is verified offline with nothing but the public keys (the JWKS ``GET /v1/licenses/jwks``
serves) and :func:`tollkeep.licensing.verify`. Prints short lines a newcomer can follow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tollkeep.demo.clock import DemoClock
from tollkeep.licensing import keys_from_jwks, verify

if TYPE_CHECKING:
    from tollkeep.runtime import Tollkeep

__all__ = ["BEHIND", "PLAN", "subscription_tour"]

PLAN = "pro"  # the default catalog's plan with `license = true`
BEHIND = timedelta(days=32)  # the tour starts this far in the past: more than a month


def _day(ts: str | int | None) -> str:
    if ts is None:
        return "never"
    when = datetime.fromtimestamp(ts, UTC) if isinstance(ts, int) else datetime.fromisoformat(ts)
    return when.strftime("%Y-%m-%d")


def _money(amount: int, currency: str) -> str:
    return f"{amount // 100}.{amount % 100:02d} {currency}"  # the demo's plan: USD and EUR, cents


def subscription_tour(tk: Tollkeep, clock: DemoClock, licence_file: Path, base: str) -> list[str]:
    """Run the tour on ``tk`` (whose clock is ``clock``, still ``BEHIND`` real time) and return
    what to print; the clock has caught up with real time when it returns. The renewed licence
    key is written to ``licence_file`` (it is longer than a line); ``base`` is the server's URL
    for the lines that show how to check it."""
    lines = ["a subscription renewing, on the demo's fast clock (a month in a second):"]
    c = tk.customers.create("demo-subscriber", email="subscriber@example.com", name="Demo Subscriber")
    sub = tk.subscriptions.create(c["id"], PLAN)
    lic: dict[str, Any] = sub["license"]
    first = verify(lic["key"], keys_from_jwks(tk.licenses.jwks()), now=clock.now().timestamp())
    lines += [
        f"  {_day(sub['current_period_start'])}  demo-subscriber subscribes to {PLAN}, "
        f"cycle 1 until {_day(sub['current_period_end'])}",
        f"              subscription {sub['id']}",
        f"              licence {lic['id']} until {_day(first.exp)}",
        "              (a licence lasts the period + the plan's grace days)",
    ]
    # the period ends: the renewal worker creates the next cycle's invoice
    clock.advance_to(datetime.fromisoformat(sub["current_period_end"]) + timedelta(minutes=1))
    tk.subscriptions.run_due()
    open_inv = tk.subscriptions.get(sub["id"])["open_invoice"]
    inv = tk.subscriptions.get_invoice(open_inv["id"])
    now = clock.now().isoformat()
    lines += [
        f"  {_day(now)}  the period ends: renewal invoice pending, {_money(inv['amount'], inv['currency'])}",
        f"              invoice {inv['id']}",
    ]
    # paid (here by hand; a provider's webhook calls the same settle)
    done = tk.subscriptions.settle_invoice(inv["id"], "demo-payment")
    renewed = done["subscription"]
    allowance = [
        g
        for g in tk.balance(c["id"])["grants"]
        if g["source"] == "plan_allowance"
        and g["live"]
        and g["effective_at"] >= renewed["current_period_start"]
    ]
    lines += [
        f"  {_day(now)}  invoice paid: renewed, cycle {renewed['cycle']} "
        f"until {_day(renewed['current_period_end'])}",
        f"              allowance for cycle {renewed['cycle']}: "
        + (f"{allowance[0]['amount']} credits granted" if allowance else "none"),
    ]
    # the app, online once, gets its re-issued key; then checks it offline, public keys only
    fresh = tk.licenses.validate(lic["key"])
    key = fresh.get("key", lic["key"])
    jwks = tk.licenses.jwks()  # what GET /v1/licenses/jwks serves: public keys only
    claims = verify(key, keys_from_jwks(jwks), now=clock.now().timestamp())
    licence_file.write_text(key + "\n")
    same = "same id" if claims.lid == first.lid else "A NEW ID"
    lines += [
        "  licence verified offline with the public key alone (the JWKS):",
        f"    {claims.lid} ({same}), plan {claims.plan}, version {claims.ver}",
        f"    expires {_day(first.exp)} -> {_day(claims.exp)}",
        f"  the key is in {licence_file.name}; check it yourself, offline:",
        f"    curl -s {base}/v1/licenses/jwks > jwks.json",
        "    tollkeep licenses verify --jwks jwks.json \\",
        f'      "$(cat {licence_file.name})"',
    ]
    clock.catch_up()
    return lines
