"""The sync client against a real server: charges (idempotent, with generated keys), the
balance, listings page by page, pricing, and a plain `with_key` view sharing connections."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal

from tollkeep.client import Balance, Charge, Client

Customer = Callable[[int], tuple[str, str]]


def test_a_charge_is_typed_and_takes_exactly_its_price(server: str, customer: Customer) -> None:
    _, key = customer(100)
    with Client(server, key) as tk:
        assert tk.mode == "buyer"
        res = tk.charge("api_call")
        assert isinstance(res, Charge)
        assert (res.charged, res.balance, res.duplicate, res.unit) == (1, 99, False, "credit")
        assert res.meter == "api_call" and res.quantity == Decimal(1)
        assert res.event_id.startswith("evt_") and res.created_at.tzinfo is not None
        assert res.idempotency_key and res.idempotency_key.startswith("tkc_")
        search = tk.usage("search", Decimal("3"), properties={"q": "tolls"})
        assert (search.charged, search.balance, search.quantity) == (2, 97, Decimal(3))
        bal = tk.balance()
        assert isinstance(bal, Balance)
        assert (bal.balance, bal.available, bal.held) == (97, 97, 0)
        assert [g.remaining for g in bal.grants] == [97]


def test_generated_keys_differ_and_a_given_key_makes_a_repeat_a_duplicate(
    server: str, customer: Customer
) -> None:
    _, key = customer(10)
    with Client(server, key) as tk:
        a, b = tk.charge("api_call"), tk.charge("api_call")
        assert a.idempotency_key != b.idempotency_key and b.balance == 8
        first = tk.charge("api_call", idempotency_key="req-42")
        again = tk.charge("api_call", idempotency_key="req-42")
        assert (first.duplicate, again.duplicate) == (False, True)
        assert again.event_id == first.event_id and tk.balance().balance == 7


def test_listings_page_newest_first_and_iterate_over_every_page(server: str, customer: Customer) -> None:
    _, key = customer(20)
    with Client(server, key) as tk:
        ids = [tk.charge("api_call", idempotency_key=f"list-{i}").event_id for i in range(5)]
        page = tk.list_usage(limit=2)
        assert [e.event_id for e in page.data] == ids[::-1][:2] and page.has_more and page.next
        assert [e.event_id for e in tk.iter_usage(page_size=2)] == ids[::-1]
        assert [e.idempotency_key for e in tk.list_usage(limit=1).data] == ["list-4"]
        assert tk.list_usage(meter="search").data == ()


def test_pricing_names_the_unit_and_the_meters(server: str) -> None:
    with Client(server) as tk:
        p = tk.pricing()
    assert p.unit == "credit" and p.per_credit == 1
    assert p.meters["api_call"]["price"] == {"model": "flat", "amount": "1"}


def test_with_key_acts_as_another_customer_over_the_same_connections(server: str, customer: Customer) -> None:
    _, key_a = customer(5)
    _, key_b = customer(7)
    with Client(server, key_a) as tk:
        other = tk.with_key(key_b)
        other.charge("api_call")
        other.close()  # a view: closing it leaves the parent usable
        assert (tk.balance().balance, other.balance().balance) == (5, 6)


def test_importing_the_client_loads_nothing_of_the_server() -> None:
    code = (
        "import sys, tollkeep.client\n"
        "heavy = {'fastapi', 'sqlalchemy', 'starlette', 'pydantic', 'uvicorn', 'alembic'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
