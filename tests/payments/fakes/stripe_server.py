"""Stripe for tests: localstripe (a real fake Stripe server process, from PyPI) behind a small fake
of our own at the transport seam, so the real ``stripe`` SDK talks to ONE ``api_base``.

localstripe serves customers, payment methods, payment intents, charges, refunds, subscriptions;
it answers 404 for Checkout Sessions, the Billing Portal and Billing Meter Events, and its invoices
predate ``billing_reason`` and the current invoice shape. :class:`StripeFake` (a real HTTP server
in a thread) serves those itself, in Stripe's documented shapes, and proxies every other path to
localstripe:

- ``POST /v1/checkout/sessions``, ``GET /v1/checkout/sessions`` (``status``, ``created[gte]``,
  ``limit``, ``starting_after``), ``GET /v1/checkout/sessions/{id}``
- ``POST /v1/billing_portal/sessions``
- ``POST /v1/billing/meter_events`` (``identifier`` unique, like Stripe: a second event with one
  answers 400 ``resource_already_exists``, unless replayed by its ``Idempotency-Key``)
- ``GET /v1/invoices`` (the invoices a test seeded with :meth:`StripeFake.add_invoice`)
- ``GET /v1/invoice_payments`` (``payment[payment_intent]``, ``invoice``): which invoice a
  PaymentIntent paid (recorded by :meth:`StripeFake.complete_session` for a plan)

POSTs it serves honour ``Idempotency-Key`` like Stripe (same key: same answer). Every request is
recorded (:attr:`StripeFake.requests`) with its decoded form parameters.

Fixtures (import them into a test module: ``from tests.payments.fakes.stripe_server import
localstripe_url, stripe_fake, stripe_provider  # noqa: F401``):

- ``localstripe_url`` (session): localstripe on a free port; skipped when not installed.
- ``stripe_fake`` (per test): a :class:`StripeFake` in front of it; ``stripe_fake.url`` is the
  ``api_base`` (``TOLLKEEP_STRIPE_API_BASE``); :func:`stripe_env` gives a server's settings.
- ``stripe_provider`` (per test): a ``StripeProvider`` on ``stripe_fake`` with :data:`SECRET_KEY` /
  :data:`WEBHOOK_SECRET`.

Events: :func:`event` wraps an object as a Stripe event; :func:`signed` signs it with the SDK's
own ``stripe.WebhookSignature.generate_signature_header`` (``t=<ts>,v1=<hmac>``), giving the body
and headers to POST to ``/webhooks/stripe``. Object builders (:func:`subscription_object`,
:func:`invoice_object`, :func:`charge_object`) follow the current API shapes; a completed Checkout
Session comes from :meth:`StripeFake.complete_session` (which pays a real PaymentIntent in
localstripe for a pack, so refunds work there too).
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import stripe

from tests.factories import free_port
from tollkeep.payments.providers.stripe import StripeProvider

__all__ = [
    "API_VERSION",
    "SECRET_KEY",
    "WEBHOOK_SECRET",
    "SeenRequest",
    "StripeFake",
    "charge_object",
    "decode_form",
    "event",
    "invoice_object",
    "localstripe_url",
    "sign",
    "signed",
    "start_localstripe",
    "stripe_env",
    "stripe_fake",
    "stripe_provider",
    "subscription_object",
]

SECRET_KEY = "sk_test_tollkeep_fake_0123456789"
WEBHOOK_SECRET = "whsec_tollkeep_test_secret_0123456789"
API_VERSION = stripe.api_version


def _new_id(prefix: str) -> str:
    return f"{prefix}_test_{secrets.token_hex(12)}"


# ---- localstripe --------------------------------------------------------------------------------
def _localstripe_executable() -> str | None:
    beside = Path(sys.executable).with_name("localstripe")
    if beside.exists():
        return str(beside)
    return shutil.which("localstripe")


def start_localstripe(port: int) -> subprocess.Popen[bytes]:
    """localstripe on ``port`` (``--from-scratch``: no state from an earlier run), once it
    answers."""
    exe = _localstripe_executable()
    if exe is None:
        raise FileNotFoundError("localstripe")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--from-scratch"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"localstripe exited with {proc.returncode}")
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/v1/customers", auth=(SECRET_KEY, ""), timeout=1)
            if r.status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("localstripe did not start")


@pytest.fixture(scope="session")
def localstripe_url() -> Iterator[str]:
    if _localstripe_executable() is None:
        pytest.skip("the localstripe executable is not installed (pip install localstripe)")
    port = free_port()
    proc = start_localstripe(port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ---- Stripe's form encoding ---------------------------------------------------------------------
def decode_form(text: str) -> dict[str, Any]:
    """``a[b][0][c]=v`` pairs (how the SDK encodes parameters) back into nested dicts and lists
    (values stay strings)."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        parts = re.findall(r"[^\[\]]+|\[\]", key)
        node = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
    return _listify(root)


def _listify(node: Any) -> Any:
    if isinstance(node, dict):
        node = {k: _listify(v) for k, v in node.items()}
        if node and all(k.isdigit() for k in node):
            return [node[k] for k in sorted(node, key=int)]
    return node


# ---- the fake -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    params: dict[str, Any]
    idempotency_key: str | None
    served_by: str  # "fake" or "localstripe"
    status: int


@dataclass
class StripeFake:
    """Checkout Sessions, the Billing Portal, Meter Events and invoice listings in Stripe's
    shapes; everything else proxied to localstripe."""

    localstripe_url: str
    require_key: str | None = None  # when set, any other API key gets 401 like Stripe's
    requests: list[SeenRequest] = field(default_factory=list)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    portal_sessions: list[dict[str, Any]] = field(default_factory=list)
    meter_events: dict[str, dict[str, Any]] = field(default_factory=dict)  # by identifier
    invoices: list[dict[str, Any]] = field(default_factory=list)
    invoice_payments: list[dict[str, Any]] = field(default_factory=list)
    prices: dict[str, dict[str, Any]] = field(default_factory=dict)
    _idempotent: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    _failures: list[int] = field(default_factory=list)
    _lost_answers: int = 0
    _seq: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _http: httpx.Client | None = None

    # ---- lifecycle ----
    def start(self) -> StripeFake:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else b""
                status, payload, ctype = fake._dispatch(self.command, self.path, dict(self.headers), body)
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(payload)))
                self.send_header("request-id", _new_id("req"))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_DELETE = _handle

        self._http = httpx.Client(base_url=self.localstripe_url, timeout=10)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._http is not None:
            self._http.close()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the fake first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # ---- test controls ----
    def fail_next(self, count: int = 1, status: int = 500) -> None:
        """The next ``count`` requests (any path) answer ``status`` with a Stripe api_error."""
        self._failures.extend([status] * count)

    def lose_next_answers(self, count: int = 1) -> None:
        """The next ``count`` requests served here take effect, then answer 500 (the answer lost
        on the way back: the caller cannot know it worked). Their idempotency keys are not kept,
        as Stripe does not keep a 500's."""
        self._lost_answers += count

    def forget_idempotency_keys(self) -> None:
        """Like Stripe after 24 h: a retried request is a new request again."""
        with self._lock:
            self._idempotent.clear()

    def add_price(
        self, price_id: str, amount: int, currency: str = "usd", interval: str | None = None
    ) -> None:
        self.prices[price_id] = {
            "id": price_id,
            "object": "price",
            "active": True,
            "currency": currency,
            "unit_amount": amount,
            "type": "recurring" if interval else "one_time",
            "recurring": {"interval": interval, "interval_count": 1} if interval else None,
            "product": _new_id("prod"),
        }

    def add_invoice(self, invoice: Mapping[str, Any]) -> None:
        with self._lock:
            self.invoices.append(dict(invoice))

    def add_invoice_payment(
        self, invoice_id: str, payment_intent: str, amount: int, currency: str = "usd"
    ) -> None:
        now = int(time.time())
        with self._lock:
            self.invoice_payments.append(
                {
                    "id": _new_id("inpay"),
                    "object": "invoice_payment",
                    "amount_paid": amount,
                    "amount_requested": amount,
                    "created": now,
                    "currency": currency,
                    "invoice": invoice_id,
                    "is_default": True,
                    "livemode": False,
                    "payment": {"type": "payment_intent", "payment_intent": payment_intent},
                    "status": "paid",
                    "status_transitions": {"canceled_at": None, "paid_at": now},
                }
            )

    def seen(self, method: str, path: str) -> list[SeenRequest]:
        return [r for r in self.requests if r.method == method and r.path == path]

    def api(self, method: str, path: str, **params: Any) -> dict[str, Any]:
        """Call localstripe directly (set-up the provider is not under test for)."""
        assert self._http is not None
        flat = _encode(params)
        r = self._http.request(
            method,
            path,
            data=flat if method == "POST" else None,
            params=None if method == "POST" else flat,
            auth=(SECRET_KEY, ""),
        )
        assert r.status_code < 300, r.text
        out: dict[str, Any] = r.json()
        return out

    def complete_session(
        self,
        session_id: str,
        *,
        email: str = "buyer@example.com",
        name: str = "Ada Buyer",
        payment_status: str = "paid",
    ) -> dict[str, Any]:
        """What paying the hosted page does: a customer (in localstripe), for a pack a real
        confirmed PaymentIntent (in localstripe, with the session's payment_intent_data metadata),
        for a plan a subscription and its first invoice id; the session becomes ``complete``.
        Returns the session as ``checkout.session.completed`` carries it."""
        with self._lock:
            s = self.sessions[session_id]
        customer = s.get("customer") or self.api("POST", "/v1/customers", email=email, name=name)["id"]
        s["customer"] = customer
        s["customer_details"] = {
            "address": None,
            "email": email,
            "name": name,
            "phone": None,
            "tax_exempt": "none",
            "tax_ids": [],
        }
        s["status"] = "complete"
        s["payment_status"] = payment_status
        if s["mode"] == "subscription":
            s["subscription"] = _new_id("sub")
            s["invoice"] = _new_id("in")
        if payment_status == "paid" and s["amount_total"]:
            # the money moves in localstripe: a pack's PaymentIntent is the session's, a plan's
            # pays the subscription's first invoice
            pm = self.api(
                "POST",
                "/v1/payment_methods",
                type="card",
                card={"number": "4242424242424242", "exp_month": "12", "exp_year": "2034", "cvc": "123"},
            )
            pi = self.api(
                "POST",
                "/v1/payment_intents",
                amount=s["amount_total"],
                currency=s["currency"],
                customer=customer,
                payment_method=pm["id"],
                confirm="true",
                metadata=s["_payment_intent_metadata"],
            )
            assert pi["status"] == "succeeded", pi
            if s["mode"] == "payment":
                s["payment_intent"] = pi["id"]
            else:
                self.add_invoice_payment(s["invoice"], pi["id"], s["amount_total"], s["currency"])
                s["_first_payment_intent"] = pi["id"]
        return _public(s)

    # ---- dispatch ----
    def _dispatch(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, str]:
        split = urlsplit(raw_path)
        path = split.path
        params = decode_form(body.decode() if method == "POST" else split.query)
        idem = _header(headers, "idempotency-key")
        served = "fake"
        if self._failures:
            status = self._failures.pop(0)
            out = _error(status, "api_error", "An unknown error occurred (injected by the test)")
        elif self.require_key and _bearer(headers) != self.require_key:
            status, out = 401, _error(401, "invalid_request_error", "Invalid API Key provided: sk_****")
        elif not (_bearer(headers) or "").startswith(("sk_", "rk_")):
            status, out = 401, _error(401, "invalid_request_error", "You did not provide an API key.")
        else:
            route = self._route(method, path)
            if route is None:
                served = "localstripe"
                status, payload, ctype = self._proxy(method, raw_path, headers, body)
                self._record(method, path, params, idem, served, status)
                return status, payload, ctype
            key = f"{method} {path} {idem}" if idem and method == "POST" else None
            with self._lock:
                cached = self._idempotent.get(key) if key else None
            if cached is not None:
                status, out = cached
            else:
                status, obj = route(path, params)
                out = json.dumps(obj).encode()
                if self._lost_answers > 0:
                    self._lost_answers -= 1
                    status, out = 500, _error(500, "api_error", "An unknown error occurred (answer lost)")
                elif key:
                    with self._lock:
                        self._idempotent[key] = (status, out)
        self._record(method, path, params, idem, served, status)
        return status, out, "application/json"

    def _record(
        self, method: str, path: str, params: dict[str, Any], idem: str | None, served: str, status: int
    ) -> None:
        with self._lock:
            self.requests.append(SeenRequest(method, path, params, idem, served, status))

    def _route(self, method: str, path: str) -> Any:
        if path == "/v1/checkout/sessions":
            return self._create_session if method == "POST" else self._list_sessions
        if path.startswith("/v1/checkout/sessions/") and method == "GET":
            return self._get_session
        if path == "/v1/billing_portal/sessions" and method == "POST":
            return self._portal
        if path == "/v1/billing/meter_events" and method == "POST":
            return self._meter_event
        if path == "/v1/invoices" and method == "GET":
            return self._list_invoices
        if path == "/v1/invoice_payments" and method == "GET":
            return self._list_invoice_payments
        return None

    def _proxy(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes, str]:
        assert self._http is not None
        keep = {
            k: v
            for k, v in headers.items()
            if k.lower() in ("authorization", "content-type", "stripe-version")
        }
        try:
            r = self._http.request(method, raw_path, headers=keep, content=body or None)
        except httpx.HTTPError as e:
            return (
                502,
                _error(502, "api_error", f"localstripe unreachable: {type(e).__name__}"),
                "application/json",
            )
        return r.status_code, r.content, r.headers.get("content-type", "application/json")

    # ---- Checkout Sessions ----
    def _create_session(self, path: str, p: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        mode = p.get("mode")
        items = p.get("line_items") or []
        if mode not in ("payment", "subscription", "setup"):
            return 400, _error_obj("invalid_request_error", "Missing required param: mode.", "mode")
        for name in ("success_url",):
            if not p.get(name):
                return 400, _error_obj("invalid_request_error", f"Missing required param: {name}.", name)
        if not items:
            return 400, _error_obj(
                "invalid_request_error", "Missing required param: line_items.", "line_items"
            )
        total, currency = 0, None
        for i, item in enumerate(items):
            qty = int(item.get("quantity", "1"))
            if "price" in item:
                price = self.prices.get(item["price"])
                if price is None:
                    return 400, _error_obj(
                        "invalid_request_error",
                        f"No such price: '{item['price']}'",
                        f"line_items[{i}][price]",
                        code="resource_missing",
                    )
                if (price["type"] == "recurring") != (mode == "subscription"):
                    return 400, _error_obj(
                        "invalid_request_error",
                        "You must provide at least one recurring price in `subscription` mode"
                        if mode == "subscription"
                        else "You specified `payment` mode but passed a recurring price.",
                        f"line_items[{i}][price]",
                    )
                total += price["unit_amount"] * qty
                currency = price["currency"]
            else:
                pd = item.get("price_data") or {}
                if (
                    not pd.get("currency")
                    or "unit_amount" not in pd
                    or not (pd.get("product_data") or {}).get("name")
                ):
                    return 400, _error_obj("invalid_request_error", "Invalid price_data", f"line_items[{i}]")
                total += int(pd["unit_amount"]) * qty
                currency = pd["currency"]
        with self._lock:
            self._seq += 1
            seq = self._seq
        sid = f"cs_test_{secrets.token_hex(16)}"
        now = int(time.time())
        s: dict[str, Any] = {
            "id": sid,
            "object": "checkout.session",
            "after_expiration": None,
            "allow_promotion_codes": None,
            "amount_subtotal": total,
            "amount_total": total,
            "automatic_tax": {"enabled": False, "liability": None, "status": None},
            "billing_address_collection": None,
            "cancel_url": p.get("cancel_url"),
            "client_reference_id": p.get("client_reference_id"),
            "consent": None,
            "created": now,
            "currency": currency,
            "customer": p.get("customer"),
            "customer_creation": "if_required" if mode == "payment" else "always",
            "customer_details": None,
            "customer_email": p.get("customer_email"),
            "expires_at": int(p.get("expires_at") or now + 86_400),
            "invoice": None,
            "livemode": False,
            "locale": None,
            "metadata": p.get("metadata") or {},
            "mode": mode,
            "payment_intent": None,
            "payment_link": None,
            "payment_method_collection": "always",
            "payment_method_types": ["card"],
            "payment_status": "unpaid",
            "status": "open",
            "submit_type": None,
            "subscription": None,
            "success_url": p.get("success_url"),
            "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            "ui_mode": "hosted",
            "url": f"https://checkout.stripe.com/c/pay/{sid}",
            "_seq": seq,
            "_payment_intent_metadata": (p.get("payment_intent_data") or {}).get("metadata") or {},
            "_subscription_data": p.get("subscription_data") or {},
            "_line_items": items,
        }
        with self._lock:
            self.sessions[sid] = s
        return 200, _public(s)

    def _get_session(self, path: str, p: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        sid = path.rsplit("/", 1)[-1]
        with self._lock:
            s = self.sessions.get(sid)
        if s is None:
            return 404, _error_obj(
                "invalid_request_error",
                f"No such checkout.session: '{sid}'",
                "session",
                code="resource_missing",
            )
        return 200, _public(s)

    def _list_sessions(self, path: str, p: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            rows = sorted(self.sessions.values(), key=lambda s: (s["created"], s["_seq"]), reverse=True)
        if p.get("status"):
            rows = [s for s in rows if s["status"] == p["status"]]
        return 200, _page(rows, p, path)

    # ---- invoices (seeded) ----
    def _list_invoices(self, path: str, p: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            rows = sorted(self.invoices, key=lambda i: i["created"], reverse=True)
        for k in ("status", "customer", "subscription"):
            if p.get(k):
                rows = [i for i in rows if i.get(k) == p[k]]
        return 200, _page(rows, p, path)

    def _list_invoice_payments(self, path: str, p: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            rows = sorted(self.invoice_payments, key=lambda i: i["created"], reverse=True)
        pi = (p.get("payment") or {}).get("payment_intent")
        if pi:
            rows = [r for r in rows if r["payment"].get("payment_intent") == pi]
        if p.get("invoice"):
            rows = [r for r in rows if r["invoice"] == p["invoice"]]
        return 200, _page(rows, p, path)

    # ---- portal, meter events ----
    def _portal(self, path: str, p: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if not p.get("customer"):
            return 400, _error_obj("invalid_request_error", "Missing required param: customer.", "customer")
        sid = _new_id("bps")
        out = {
            "id": sid,
            "object": "billing_portal.session",
            "configuration": _new_id("bpc"),
            "created": int(time.time()),
            "customer": p["customer"],
            "flow": None,
            "livemode": False,
            "locale": None,
            "on_behalf_of": None,
            "return_url": p.get("return_url"),
            "url": f"https://billing.stripe.com/p/session/{sid}",
        }
        with self._lock:
            self.portal_sessions.append(out)
        return 200, out

    def _meter_event(self, path: str, p: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        payload = p.get("payload") or {}
        if not p.get("event_name") or not payload.get("stripe_customer_id") or "value" not in payload:
            return 400, _error_obj("invalid_request_error", "Missing required param: payload.", "payload")
        identifier = p.get("identifier") or _new_id("mev")
        with self._lock:
            if identifier in self.meter_events:  # Stripe keeps identifiers unique: counted once
                return 400, _error_obj(
                    "invalid_request_error",
                    f"An event with identifier {identifier} already exists.",
                    "identifier",
                    "resource_already_exists",
                )
            ev = {
                "object": "billing.meter_event",
                "created": int(time.time()),
                "event_name": p["event_name"],
                "identifier": identifier,
                "livemode": False,
                "payload": payload,
                "timestamp": int(p.get("timestamp") or time.time()),
            }
            self.meter_events[identifier] = ev
        return 200, ev


def _page(rows: list[dict[str, Any]], p: dict[str, Any], path: str) -> dict[str, Any]:
    created = p.get("created")
    if isinstance(created, dict):
        for op, fn in (
            ("gte", lambda a, b: a >= b),
            ("gt", lambda a, b: a > b),
            ("lte", lambda a, b: a <= b),
            ("lt", lambda a, b: a < b),
        ):
            if op in created:
                bound = int(created[op])
                rows = [r for r in rows if fn(r["created"], bound)]
    if p.get("starting_after"):
        ids = [r["id"] for r in rows]
        rows = rows[ids.index(p["starting_after"]) + 1 :] if p["starting_after"] in ids else []
    limit = int(p.get("limit") or 10)
    return {
        "object": "list",
        "data": [_public(r) for r in rows[:limit]],
        "has_more": len(rows) > limit,
        "url": path,
    }


def _public(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def _header(headers: Mapping[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name), None)


def _bearer(headers: Mapping[str, str]) -> str | None:
    auth = _header(headers, "authorization") or ""
    return auth[7:] if auth.startswith("Bearer ") else None


def _error_obj(kind: str, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    err: dict[str, Any] = {"type": kind, "message": message}
    if param:
        err["param"] = param
    if code:
        err["code"] = code
    return {"error": err}


def _error(status: int, kind: str, message: str) -> bytes:
    return json.dumps(_error_obj(kind, message)).encode()


def _encode(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in params.items():
        key = f"{prefix}[{k}]" if prefix else k
        if isinstance(v, Mapping):
            out.update(_encode(v, key))
        elif isinstance(v, list):
            out.update(_encode({str(i): x for i, x in enumerate(v)}, key))
        else:
            out[key] = str(v)
    return out


# ---- events -------------------------------------------------------------------------------------
def event(
    event_type: str,
    obj: Mapping[str, Any],
    *,
    previous_attributes: Mapping[str, Any] | None = None,
    event_id: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """A Stripe ``event`` object (a snapshot event, as webhook endpoints receive them)."""
    data: dict[str, Any] = {"object": dict(obj)}
    if previous_attributes is not None:
        data["previous_attributes"] = dict(previous_attributes)
    return {
        "id": event_id or f"evt_{secrets.token_hex(12)}",
        "object": "event",
        "api_version": API_VERSION,
        "created": created or int(time.time()),
        "data": data,
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
    }


def sign(body: bytes | str, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header for ``body``, computed by the SDK itself."""
    text = body.decode() if isinstance(body, bytes) else body
    return stripe.WebhookSignature.generate_signature_header(text, secret, timestamp=timestamp)


def signed(
    evt: Mapping[str, Any], secret: str = WEBHOOK_SECRET, timestamp: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """(body, headers) of a webhook delivery of ``evt``."""
    body = json.dumps(evt).encode()
    return body, {"Stripe-Signature": sign(body, secret, timestamp), "Content-Type": "application/json"}


def _price(price_id: str, amount: int, currency: str, interval: str) -> dict[str, Any]:
    return {
        "id": price_id,
        "object": "price",
        "active": True,
        "billing_scheme": "per_unit",
        "currency": currency,
        "livemode": False,
        "metadata": {},
        "product": "prod_test_tollkeep",
        "recurring": {"interval": interval, "interval_count": 1, "usage_type": "licensed", "meter": None},
        "type": "recurring",
        "unit_amount": amount,
    }


def subscription_object(
    *,
    sub_id: str | None = None,
    customer: str = "cus_test_buyer",
    price_id: str = "price_pro",
    amount: int = 2900,
    currency: str = "usd",
    status: str = "active",
    metadata: Mapping[str, str] | None = None,
    cancel_at_period_end: bool = False,
) -> dict[str, Any]:
    """A Subscription (items carry their own current period, as since 2025-03-31)."""
    now = int(time.time())
    sid = sub_id or _new_id("sub")
    return {
        "id": sid,
        "object": "subscription",
        "billing_cycle_anchor": now,
        "cancel_at": now + 30 * 86400 if cancel_at_period_end else None,
        "cancel_at_period_end": cancel_at_period_end,
        "canceled_at": now if status == "canceled" else None,
        "collection_method": "charge_automatically",
        "created": now,
        "currency": currency,
        "customer": customer,
        "default_payment_method": None,
        "ended_at": now if status == "canceled" else None,
        "items": {
            "object": "list",
            "data": [
                {
                    "id": _new_id("si"),
                    "object": "subscription_item",
                    "created": now,
                    "current_period_end": now + 30 * 86400,
                    "current_period_start": now,
                    "metadata": {},
                    "price": _price(price_id, amount, currency, "month"),
                    "quantity": 1,
                    "subscription": sid,
                }
            ],
            "has_more": False,
            "total_count": 1,
            "url": f"/v1/subscription_items?subscription={sid}",
        },
        "latest_invoice": _new_id("in"),
        "livemode": False,
        "metadata": dict(metadata or {}),
        "start_date": now,
        "status": status,
        "trial_end": None,
        "trial_start": None,
    }


def invoice_object(
    *,
    invoice_id: str | None = None,
    customer: str = "cus_test_buyer",
    subscription: str = "sub_test_1",
    price_id: str = "price_pro",
    amount: int = 2900,
    currency: str = "usd",
    billing_reason: str = "subscription_cycle",
    status: str = "paid",
    subscription_metadata: Mapping[str, str] | None = None,
    created: int | None = None,
    attempt_count: int = 1,
) -> dict[str, Any]:
    """An Invoice in the current shape (``parent.subscription_details``, lines priced through
    ``pricing.price_details``)."""
    now = created or int(time.time())
    iid = invoice_id or _new_id("in")
    paid = status == "paid"
    return {
        "id": iid,
        "object": "invoice",
        "account_country": "US",
        "amount_due": amount,
        "amount_paid": amount if paid else 0,
        "amount_remaining": 0 if paid else amount,
        "attempt_count": attempt_count,
        "attempted": True,
        "auto_advance": not paid,
        "billing_reason": billing_reason,
        "collection_method": "charge_automatically",
        "created": now,
        "currency": currency,
        "customer": customer,
        "customer_email": "buyer@example.com",
        "customer_name": "Ada Buyer",
        "hosted_invoice_url": f"https://invoice.stripe.com/i/{iid}",
        "last_finalization_error": None,
        "lines": {
            "object": "list",
            "data": [
                {
                    "id": _new_id("il"),
                    "object": "line_item",
                    "amount": amount,
                    "currency": currency,
                    "description": "1 x Pro (at $29.00 / month)",
                    "invoice": iid,
                    "parent": {
                        "type": "subscription_item_details",
                        "subscription_item_details": {
                            "invoice_item": None,
                            "proration": False,
                            "proration_details": {"credited_items": None},
                            "subscription": subscription,
                            "subscription_item": _new_id("si"),
                        },
                    },
                    "period": {"start": now, "end": now + 30 * 86400},
                    "pricing": {
                        "type": "price_details",
                        "price_details": {"price": price_id, "product": "prod_test_tollkeep"},
                        "unit_amount_decimal": str(amount),
                    },
                    "quantity": 1,
                }
            ],
            "has_more": False,
            "total_count": 1,
            "url": f"/v1/invoices/{iid}/lines",
        },
        "livemode": False,
        "metadata": {},
        "next_payment_attempt": None if paid else now + 3 * 86400,
        "number": f"TK-{secrets.randbelow(10**6):06d}",
        "parent": {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {
                "metadata": dict(subscription_metadata or {}),
                "subscription": subscription,
            },
        },
        "period_end": now,
        "period_start": now - 30 * 86400,
        "status": status,
        "status_transitions": {
            "finalized_at": now,
            "marked_uncollectible_at": None,
            "paid_at": now if paid else None,
            "voided_at": None,
        },
        "subtotal": amount,
        "total": amount,
    }


def charge_object(
    *,
    charge_id: str | None = None,
    payment_intent: str | None = "pi_test_1",
    customer: str | None = "cus_test_buyer",
    amount: int = 500,
    amount_refunded: int = 0,
    currency: str = "usd",
    refunds: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """A Charge in the current shape: no ``invoice`` and, unless ``refunds`` is given (older API
    versions embedded them), no ``refunds`` list."""
    cid = charge_id or _new_id("ch")
    out: dict[str, Any] = {
        "id": cid,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount,
        "amount_refunded": amount_refunded,
        "balance_transaction": _new_id("txn"),
        "billing_details": {
            "address": None,
            "email": "buyer@example.com",
            "name": "Ada Buyer",
            "phone": None,
        },
        "captured": True,
        "created": int(time.time()),
        "currency": currency,
        "customer": customer,
        "description": None,
        "livemode": False,
        "metadata": {},
        "paid": True,
        "payment_intent": payment_intent,
        "payment_method": _new_id("pm"),
        "receipt_email": None,
        "refunded": amount_refunded >= amount,
        "status": "succeeded",
    }
    if refunds is not None:
        out["refunds"] = {
            "object": "list",
            "data": [dict(r) for r in refunds],
            "has_more": False,
            "total_count": len(refunds),
            "url": f"/v1/charges/{cid}/refunds",
        }
    return out


def stripe_env(fake: StripeFake) -> dict[str, str]:
    """The settings that point a server (``tests.factories.served(..., env=...)``) at the fake."""
    return {
        "TOLLKEEP_STRIPE_API_BASE": fake.url,
        "TOLLKEEP_STRIPE_SECRET_KEY": SECRET_KEY,
        "TOLLKEEP_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
    }


@pytest.fixture
def stripe_fake(localstripe_url: str) -> Iterator[StripeFake]:
    fake = StripeFake(localstripe_url).start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def stripe_provider(stripe_fake: StripeFake) -> StripeProvider:
    return StripeProvider(
        SECRET_KEY, WEBHOOK_SECRET, api_base=stripe_fake.url, timeout=5.0, max_network_retries=0
    )
