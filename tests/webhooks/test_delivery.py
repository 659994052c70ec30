"""Deliveries end to end inside one runtime (SQLite and PostgreSQL), to a real HTTP receiver:
signed so that standardwebhooks verifies them, one webhook-id per event across retries and
redeliveries, retried on the schedule, given up on after it, endpoints disabled when they keep
failing (and the others told), event filters, one delivery per (endpoint, event)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from standardwebhooks.webhooks import WebhookVerificationError

from tests.webhooks.receiver import Receiver, pump
from tollkeep.kit.actor import Actor, Role
from tollkeep.kit.clock import FrozenClock
from tollkeep.kit.errors import Conflict, InvalidInput
from tollkeep.outbox import OutboxMessage
from tollkeep.runtime import Tollkeep

ADMIN = Actor("admin", "env", Role.ADMIN)


def outbox_id(tk: Tollkeep, topic: str) -> str:
    (row,) = tk.outbox.recent(topic=topic)
    return str(row["id"])


def test_a_delivery_is_signed_per_standard_webhooks(wtk: Tollkeep, receiver: Receiver) -> None:
    ep = wtk.webhooks.create(receiver.url + "/hooks/tollkeep?x=1", actor=ADMIN)
    assert ep["secret"].startswith("whsec_") and ep["status"] == "enabled" and ep["events"] is None
    cid = wtk.customers.create("alice", email="alice@example.com")["id"]
    assert pump(wtk) == {"delivered": 1, "retrying": 0, "failed": 0}
    (got,) = receiver.got
    assert got.path == "/hooks/tollkeep?x=1"
    assert got.headers["webhook-id"] == outbox_id(wtk, "customer.created")
    assert (
        got.headers["webhook-signature"].startswith("v1,")
        and got.headers["content-type"] == "application/json"
    )
    message = got.verify(ep["secret"])  # standardwebhooks: signature and timestamp
    assert message["type"] == "customer.created" and message["timestamp"].endswith("Z")
    assert message["data"] == {
        "customer_id": cid,
        "external_id": "alice",
        "email": "alice@example.com",
        "name": None,
        "plan": None,
        "anonymous": False,
    }
    with pytest.raises(WebhookVerificationError):
        got.verify(wtk.webhooks.rotate_secret(ep["id"], actor=ADMIN)["secret"])
    (d,) = wtk.webhooks.deliveries(ep["id"])["data"]
    assert d["status"] == "delivered" and d["attempts"] == 1 and d["response_status"] == 200
    assert d["event_id"] == got.id and d["type"] == "customer.created" and d["latency_ms"] >= 0
    assert d["next_attempt_at"] is None and d["delivered_at"] is not None


def test_a_500_is_retried_with_the_same_webhook_id_and_so_is_a_redelivery(
    wtk: Tollkeep, receiver: Receiver, clock: FrozenClock
) -> None:
    ep = wtk.webhooks.create(receiver.url, actor=ADMIN)
    receiver.plan = [500]
    wtk.customers.create("bob")
    assert pump(wtk) == {"delivered": 0, "retrying": 1, "failed": 0}
    (d,) = wtk.webhooks.deliveries(ep["id"])["data"]
    assert d["status"] == "pending" and d["response_status"] == 500 and d["error"] == "HTTP 500"
    assert wtk.webhooks.deliver()["retrying"] == 0 and len(receiver.got) == 1  # not due yet: 5 s
    clock.advance(timedelta(seconds=5))
    assert wtk.webhooks.deliver() == {"delivered": 1, "retrying": 0, "failed": 0}
    again = wtk.webhooks.redeliver(d["id"], actor=ADMIN)
    assert again["status"] == "delivered" and again["attempts"] == 3
    assert [a["ok"] for a in again["attempt_log"]] == [False, True, True]
    assert [a["response_status"] for a in again["attempt_log"]] == [500, 200, 200]
    assert len({r.id for r in receiver.got}) == 1 and len(receiver.got) == 3
    for r in receiver.got:
        r.verify(ep["secret"])
    assert wtk.webhooks.get(ep["id"])["failing_since"] is None  # a success clears it


def test_after_the_schedule_a_delivery_fails_and_the_endpoint_is_disabled_with_an_event(
    wtk: Tollkeep, receiver: Receiver, clock: FrozenClock
) -> None:
    other = Receiver()
    try:
        failing = wtk.webhooks.create(receiver.url, events=["customer.created"], actor=ADMIN)
        watcher = wtk.webhooks.create(other.url, events=["webhook_endpoint.*"], actor=ADMIN)
        receiver.default = 503
        wtk.customers.create("carol")
        assert pump(wtk)["retrying"] == 1
        for wait in wtk.webhooks.schedule:  # 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h
            assert wtk.webhooks.get(failing["id"])["status"] == "enabled"
            clock.advance(timedelta(seconds=wait))
            pump(wtk)
        assert len(receiver.got) == 8 and len({r.id for r in receiver.got}) == 1
        (d,) = wtk.webhooks.deliveries(failing["id"])["data"]
        assert d["status"] == "failed" and d["attempts"] == 8 and d["next_attempt_at"] is None
        # every attempt failed for more than 24 h: disabled, and the other endpoint is told
        ep = wtk.webhooks.get(failing["id"])
        assert ep["status"] == "disabled" and ep["disabled_reason"] == "failing"
        pump(wtk)
        (note,) = other.got
        assert note.verify(watcher["secret"])["data"] == {
            "endpoint_id": failing["id"],
            "url": receiver.url,
            "reason": "failing",
            "failing_since": d["created_at"],
        }
        assert receiver.of_type("webhook_endpoint.disabled") == []  # not to the disabled one
        clock.advance(timedelta(days=2))
        pump(wtk)
        assert len(receiver.got) == 8  # nothing more after the schedule
        receiver.default = 200
        with pytest.raises(Conflict, match="disabled"):
            wtk.webhooks.redeliver(d["id"], actor=ADMIN)
        wtk.webhooks.update(failing["id"], {"status": "enabled"}, actor=ADMIN)
        assert wtk.webhooks.redeliver(d["id"], actor=ADMIN)["status"] == "delivered"
        assert receiver.got[-1].id == receiver.got[0].id
        assert wtk.webhooks.get(failing["id"])["failing_since"] is None
    finally:
        other.close()


def test_endpoints_get_the_event_types_they_asked_for(wtk: Tollkeep, receiver: Receiver) -> None:
    credits = wtk.webhooks.create(receiver.url + "/credits", events=["credits.*"], actor=ADMIN)
    created = wtk.webhooks.create(receiver.url + "/created", events=["customer.created"], actor=ADMIN)
    wtk.webhooks.create(receiver.url + "/all", actor=ADMIN)
    assert credits["events"] == ["credits.*"] and created["events"] == ["customer.created"]
    cid = wtk.customers.create("dave")["id"]
    wtk.ledger.grant(cid, 5, idempotency_key="g")
    pump(wtk)
    seen = sorted((r.path, r.json()["type"]) for r in receiver.got)
    assert seen == [
        ("/all", "credits.granted"),
        ("/all", "customer.created"),
        ("/created", "customer.created"),
        ("/credits", "credits.granted"),
    ]


@pytest.mark.parametrize(
    "events",
    [[], ["no.such.event"], ["nothing.*"], ["credits granted"], ["webhook.test"]],
)
def test_a_bad_event_list_is_refused(wtk: Tollkeep, receiver: Receiver, events: list[str]) -> None:
    with pytest.raises(InvalidInput) as exc:
        wtk.webhooks.create(receiver.url, events=events, actor=ADMIN)
    assert exc.value.code == "invalid_webhook_events"
    assert wtk.webhooks.list() == []


def test_an_event_offered_again_adds_no_delivery(wtk: Tollkeep, receiver: Receiver) -> None:
    ep = wtk.webhooks.create(receiver.url, actor=ADMIN)
    wtk.customers.create("erin")
    (row,) = wtk.outbox.recent()
    message = OutboxMessage(row["id"], row["topic"], row["customer_id"], row["payload"], row["created_at"], 1)
    for _ in range(3):  # the outbox delivers at least once: the sink may see it again
        wtk.webhooks.fan_out(message)
    pump(wtk)  # and once more through the dispatcher itself
    assert len(wtk.webhooks.deliveries(ep["id"])["data"]) == 1
    assert len(receiver.got) == 1


def test_disabled_and_deleted_endpoints_are_sent_nothing(wtk: Tollkeep, receiver: Receiver) -> None:
    paused = wtk.webhooks.create(receiver.url + "/paused", actor=ADMIN)
    gone = wtk.webhooks.create(receiver.url + "/gone", actor=ADMIN)
    wtk.customers.create("frank")
    wtk.outbox.dispatch()  # the deliveries exist, pending
    wtk.webhooks.update(paused["id"], {"status": "disabled"}, actor=ADMIN)
    wtk.webhooks.remove(gone["id"], actor=ADMIN)
    assert wtk.webhooks.deliver() == {"delivered": 0, "retrying": 0, "failed": 0}
    assert receiver.got == []
    wtk.customers.create("grace")  # while disabled: no delivery at all
    wtk.outbox.dispatch()
    assert wtk.webhooks.get(paused["id"])["disabled_reason"] == "operator"
    wtk.webhooks.update(paused["id"], {"status": "enabled"}, actor=ADMIN)
    assert wtk.webhooks.deliver()["delivered"] == 1  # the one that waited
    assert [r.json()["data"]["external_id"] for r in receiver.got] == ["frank"]


def test_an_endpoint_gets_only_events_written_after_it_was_registered(
    wtk: Tollkeep, receiver: Receiver, clock: FrozenClock
) -> None:
    wtk.customers.create("early")
    clock.advance(timedelta(seconds=1))
    wtk.webhooks.create(receiver.url, actor=ADMIN)
    assert pump(wtk)["delivered"] == 0 and receiver.got == []


def test_a_rotation_with_overlap_signs_with_both_secrets(wtk: Tollkeep, receiver: Receiver) -> None:
    ep = wtk.webhooks.create(receiver.url, actor=ADMIN)
    new = wtk.webhooks.rotate_secret(ep["id"], overlap_seconds=3600, actor=ADMIN)["secret"]
    wtk.customers.create("henry")
    pump(wtk)
    (got,) = receiver.got
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    got.verify(new)
    got.verify(ep["secret"])
    newest = wtk.webhooks.rotate_secret(ep["id"], actor=ADMIN)["secret"]  # no overlap: old stops
    wtk.customers.create("iris")
    pump(wtk)
    last = receiver.got[-1]
    last.verify(newest)
    with pytest.raises(WebhookVerificationError):
        last.verify(new)


def test_a_test_event_goes_to_that_endpoint_only(wtk: Tollkeep, receiver: Receiver) -> None:
    ep = wtk.webhooks.create(receiver.url + "/one", actor=ADMIN)
    wtk.webhooks.create(receiver.url + "/two", actor=ADMIN)
    d = wtk.webhooks.send_test(ep["id"], actor=ADMIN)
    assert d["status"] == "delivered" and d["type"] == "webhook.test" and len(d["attempt_log"]) == 1
    (got,) = receiver.got
    assert got.path == "/one" and got.id == d["event_id"]
    assert got.verify(ep["secret"])["data"]["endpoint_id"] == ep["id"]
