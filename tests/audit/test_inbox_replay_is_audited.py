"""An operator's replay of a stored webhook is audited in the replay's own transaction: one
entry per replay, none for an unknown event."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.audit.conftest import Entries
from tests.payments.fakes.stripe_server import WEBHOOK_SECRET, event, signed
from tollkeep.payments.providers.stripe import StripeProvider
from tollkeep.runtime import Tollkeep


def test_an_inbox_replay_is_audited_once(client: TestClient, tk: Tollkeep, entries: Entries) -> None:
    tk.providers.register(StripeProvider(None, WEBHOOK_SECRET))
    body, headers = signed(event("customer.created", {"id": "cus_replayed", "object": "customer"}))
    stored = tk.inbox.receive("stripe", body, headers)
    inbox_id = stored["id"]
    tk.inbox.process()

    r = client.post(f"/admin/inbox/{inbox_id}/replay")
    assert r.status_code == 200, r.text
    [e] = entries(action="inbox.replay")
    assert e["target"] == {"kind": "inbox_event", "id": inbox_id}
    assert e["actor"] == {"kind": "admin", "id": "env"}

    assert client.post("/admin/inbox/ibx_nope/replay").status_code == 404
    assert len(entries(action="inbox.replay")) == 1
