"""Domain events: how one domain reacts to another without either reaching into the other.

An event is a frozen dataclass (a subclass of :class:`Event`) that says what happened
(``CustomerStatusChanged(customer_id, status, previous)``). A unit of work *emits* it inside its
transaction with ``bus.emit(tx, event)``; the :class:`EventBus` then

* runs the **in-transaction hooks** for that type at once, in the same transaction (the outbox
  writes its row there, so the row commits or rolls back with the change), and
* keeps the event on the transaction (``Tx.info``) and hands it to the **subscribers** only
  after that transaction has committed: ``kit/db.py``'s session scope and ``kit/executor.py``'s
  group commit deliver it. An event of a command whose SAVEPOINT rolled back, or of a
  transaction that rolled back, is dropped with it: subscribers never hear of a change that did
  not happen.

Subscribers run in the thread that committed (a writer lane), before the callers of that batch
are answered, so a caller who sees its change done also sees the reactions to it (a suspended
customer's keys are out of the key cache when ``update`` returns). So they must be quick and
in-memory: no database writes through the executor (on SQLite that would wait on the very lane
it runs in), no network. Anything slow or outbound goes to the outbox instead. A subscriber that
raises is logged; the other subscribers still run and the change stays committed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    from tollkeep.kit.db import Tx

__all__ = ["Event", "EventBus", "deliver", "discard_since", "mark", "take"]

log = logging.getLogger("tollkeep.events")

E = TypeVar("E", bound="Event")
_PENDING = "tk_events"  # Tx.info key: [(bus, event), ...] emitted in this transaction


@dataclass(frozen=True)
class Event:
    """Base of every domain event. ``topic`` names it outside the process (the outbox, webhooks)."""

    topic: ClassVar[str] = "event"

    def payload(self) -> dict[str, Any]:
        """The event as JSON-able data (what the outbox stores): its fields."""
        return asdict(self)


class EventBus:
    """In-process publish/subscribe, by event type (a handler for a base class hears subclasses)."""

    def __init__(self) -> None:
        self._after: dict[type[Event], list[Callable[[Any], object]]] = {}
        self._in_tx: dict[type[Event], list[Callable[[Tx, Any], object]]] = {}
        self._lock = threading.Lock()

    def subscribe(self, event_type: type[E], handler: Callable[[E], object]) -> None:
        """Call ``handler(event)`` after the transaction that emitted the event commits."""
        with self._lock:
            self._after.setdefault(event_type, []).append(handler)

    def subscribe_in_tx(self, event_type: type[E], hook: Callable[[Tx, E], object]) -> None:
        """Call ``hook(tx, event)`` inside the emitting transaction (an error there fails the
        change). For writes that must commit or roll back with the change: the outbox."""
        with self._lock:
            self._in_tx.setdefault(event_type, []).append(hook)

    def emit(self, tx: Tx, event: Event) -> None:
        """From a unit of work: run the in-transaction hooks now, deliver after the commit."""
        for hook in self._matching(self._in_tx, event):
            hook(tx, event)
        tx.info.setdefault(_PENDING, []).append((self, event))

    def publish(self, event: Event) -> None:
        """Deliver an event to its subscribers now (what happens after a commit)."""
        for handler in self._matching(self._after, event):
            try:
                handler(event)
            except Exception:
                log.exception("event subscriber %r failed on %r", handler, event)

    def _matching(self, table: dict[type[Event], list[Any]], event: Event) -> list[Any]:
        if not table:
            return []
        with self._lock:
            return [h for cls in type(event).__mro__ for h in table.get(cls, ())]


# ---- used by the places that commit (kit/db.py, kit/executor.py) ------------------------------------
def mark(tx: Tx) -> int:
    """How many events the transaction holds now (before a command's SAVEPOINT)."""
    return len(tx.info.get(_PENDING, ()))


def discard_since(tx: Tx, position: int) -> None:
    """Drop the events emitted after ``position`` (the command's SAVEPOINT rolled back)."""
    pending = tx.info.get(_PENDING)
    if pending:
        del pending[position:]


def take(tx: Tx) -> list[tuple[EventBus, Event]]:
    """Remove and return the transaction's events (right after it committed; or to drop them)."""
    return tx.info.pop(_PENDING, None) or []


def deliver(items: Iterable[tuple[EventBus, Event]]) -> None:
    for bus, event in items:
        bus.publish(event)
