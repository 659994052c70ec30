"""The catalog as immutable values: credit unit, meters and their prices, plans.

Built by :mod:`tollkeep.catalog.loader` from a TOML file; read by
:mod:`tollkeep.pricing.rating` and by every service that needs a price, a cap or
an allowance. Nothing here does I/O.

Money: every price is expressed in the catalog's smallest integer unit (the unit
the ledger stores, see :class:`CreditUnit`) and held as :class:`~decimal.Decimal`;
plan prices are integer minor units of their currency (cents).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from tollkeep.catalog.errors import UnknownMeter

__all__ = [
    "AGGREGATIONS",
    "CAP_MODES",
    "CAP_PERIODS",
    "PERIODS",
    "PLAN_PERIODS",
    "PRICE_MODELS",
    "ROUNDING_RULES",
    "Allowance",
    "AnonymousPolicy",
    "Cap",
    "Catalog",
    "CreditUnit",
    "McpUpstream",
    "Meter",
    "Pack",
    "Plan",
    "Price",
    "Route",
    "Tier",
    "TokenPrice",
    "ToolPrice",
    "ToolsPolicy",
]

AGGREGATIONS: tuple[str, ...] = ("count", "sum", "max", "unique_count")
PRICE_MODELS: tuple[str, ...] = ("flat", "per_unit", "graduated", "volume", "package", "tokens")
ROUNDING_RULES: tuple[str, ...] = ("up", "half_up", "half_even", "down")
CAP_PERIODS: tuple[str, ...] = ("day", "month", "lifetime")
CAP_MODES: tuple[str, ...] = ("allowance", "hard")
PERIODS: tuple[str, ...] = ("month", "day", "lifetime")  # allowance periods
PLAN_PERIODS: tuple[str, ...] = ("month", "year")


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


_PREFIXES = {10: "deci", 100: "centi", 1000: "milli", 10**6: "micro", 10**9: "nano"}


@dataclass(frozen=True)
class CreditUnit:
    """The ledger's integer unit.

    ``name`` is what one credit is called; ``per_credit`` how many integer units
    the ledger stores per displayed credit (1 = whole credits, 1000 = milli-credits).
    All catalog prices and allowances are in the integer unit. ``rounding`` is the
    one rule used to turn an exact charge into an integer (see ``round_amount``).
    ``ledger_unit`` names the integer unit (what API amounts and their ``"unit"`` are in;
    by default the credit itself when ``per_credit`` is 1, else e.g. ``millicredit``);
    ``value`` what one credit is worth in money, by currency (``{"usd": Decimal("0.01")}``).
    """

    name: str = "credit"
    per_credit: int = 1
    rounding: str = "up"
    ledger_unit: str | None = None
    value: Mapping[str, Decimal] = field(default_factory=_empty, hash=False)
    # credits.low goes out when a charge takes a wallet's available balance below this many
    # ledger units (0: never); a plan may set its own
    low_balance: int = 0

    def __post_init__(self) -> None:
        # worked out once per catalog version: the hot path only calls display()
        object.__setattr__(
            self, "ledger_name", self.ledger_unit or default_ledger_unit(self.name, self.per_credit)
        )
        n = self.per_credit
        exp = len(str(n)) - 1
        object.__setattr__(self, "_scale", -exp if n == 10**exp else None)
        object.__setattr__(self, "_plain", n == 1 and not self.value)
        object.__setattr__(
            self, "_money", tuple((c, v, v.as_tuple().exponent) for c, v in self.value.items())
        )

    ledger_name: str = field(init=False, repr=False, compare=False, hash=False)

    def credits_of(self, amount: int) -> Decimal:
        """An integer ledger amount in credits: exact when ``per_credit`` is a power of ten
        (else rounded to 28 significant digits)."""
        if self._scale is not None:  # type: ignore[attr-defined]
            return Decimal(amount).scaleb(self._scale).normalize()  # type: ignore[attr-defined]
        return (Decimal(amount) / self.per_credit).normalize()

    def display(self, **amounts: int | None) -> dict[str, Any]:
        """``{"unit": <credit name>, <field>: "<credits>", ..., "money"?: {<currency>: {<field>:
        "<amount>"}}}``: the display value of integer ledger amounts, as exact decimal strings
        (None stays None); ``money`` only when the catalog states a credit's ``value``."""
        if self._plain:  # type: ignore[attr-defined]
            out: dict[str, Any] = {"unit": self.name}
            for k, v in amounts.items():
                out[k] = None if v is None else str(v)
            return out
        credits = {k: None if v is None else self.credits_of(v) for k, v in amounts.items()}
        out = {"unit": self.name}
        for k, c in credits.items():
            out[k] = None if c is None else format(c, "f")
        if self._money:  # type: ignore[attr-defined]
            out["money"] = {
                cur: {k: None if c is None else _money(c * v, exp) for k, c in credits.items()}
                for cur, v, exp in self._money  # type: ignore[attr-defined]
            }
        return out

    def to_public_dict(self) -> dict[str, Any]:
        return {
            "unit": self.name,
            "per_credit": self.per_credit,
            "rounding": self.rounding,
            "ledger_unit": self.ledger_name,
            "value": {c: str(v) for c, v in self.value.items()},
        }


def default_ledger_unit(name: str, per_credit: int) -> str:
    """The integer unit's name when the catalog gives none: the credit itself (``per_credit``
    1), a prefixed name (``millicredit``), else ``"1/<per_credit> <name>"``."""
    if per_credit == 1:
        return name
    prefix = _PREFIXES.get(per_credit)
    return f"{prefix}{name}" if prefix else f"1/{per_credit} {name}"


def _money(m: Decimal, exp: Any) -> str:
    """A money amount, exact, with at least the decimals of the credit's stated value."""
    if isinstance(exp, int) and m.as_tuple().exponent > exp:  # type: ignore[operator]
        m = m.quantize(Decimal(1).scaleb(exp))
    return format(m, "f")


@dataclass(frozen=True)
class Tier:
    """A graduated/volume tier covering aggregates in ``(previous up_to, up_to]``."""

    up_to: Decimal | None  # None = open-ended (infinity)
    unit_price: Decimal = Decimal(0)
    flat: Decimal = Decimal(0)

    def to_public_dict(self) -> dict[str, Any]:
        return {
            "up_to": "inf" if self.up_to is None else str(self.up_to),
            "unit_price": str(self.unit_price),
            "flat": str(self.flat),
        }


@dataclass(frozen=True)
class TokenPrice:
    """Price of ``Price.per`` input and output tokens for one LLM model."""

    input: Decimal
    output: Decimal

    def to_public_dict(self) -> dict[str, Any]:
        return {"input": str(self.input), "output": str(self.output)}


@dataclass(frozen=True)
class Price:
    """How a meter's usage turns into credits. Which fields matter depends on ``model``.

    - ``flat``: ``amount`` per event (per unit of quantity for ``count`` meters).
    - ``per_unit``: ``unit_price`` per ``per`` units.
    - ``graduated`` / ``volume``: ``tiers`` (unit prices are per ``per`` units).
    - ``package``: ``package_price`` per started package of ``package_size`` units.
    - ``tokens``: ``models[name]`` (or ``default``) input/output prices per ``per`` tokens.
    """

    model: str
    amount: Decimal | None = None
    unit_price: Decimal | None = None
    per: Decimal = Decimal(1)
    tiers: tuple[Tier, ...] = ()
    package_size: Decimal | None = None
    package_price: Decimal | None = None
    models: Mapping[str, TokenPrice] = field(default_factory=_empty, hash=False)
    default: TokenPrice | None = None

    def to_public_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.model}
        if self.model == "flat":
            out["amount"] = _dec(self.amount)
        elif self.model == "per_unit":
            out["unit_price"] = _dec(self.unit_price)
            out["per"] = str(self.per)
        elif self.model in ("graduated", "volume"):
            out["per"] = str(self.per)
            out["tiers"] = [tier.to_public_dict() for tier in self.tiers]
        elif self.model == "package":
            out["package_size"] = _dec(self.package_size)
            out["package_price"] = _dec(self.package_price)
        elif self.model == "tokens":
            out["per"] = str(self.per)
            out["models"] = {name: tp.to_public_dict() for name, tp in self.models.items()}
            out["default"] = None if self.default is None else self.default.to_public_dict()
        return out


@dataclass(frozen=True)
class Meter:
    """Something usage is measured in. ``property`` names the event property whose
    distinct values a ``unique_count`` meter counts. ``price`` None = free."""

    key: str
    aggregation: str = "count"
    description: str = ""
    unit: str = ""
    price: Price | None = None
    property: str | None = None

    def to_public_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": self.key,
            "aggregation": self.aggregation,
            "description": self.description,
            "unit": self.unit,
            "price": None if self.price is None else self.price.to_public_dict(),
        }
        if self.property is not None:
            out["property"] = self.property
        return out


@dataclass(frozen=True)
class Cap:
    """At most ``limit`` of ``meter`` per ``period``.

    ``mode="hard"`` refuses usage past the limit; ``mode="allowance"`` limits only
    what the plan's allowance pays for (past it, purchased credits are used).
    """

    meter: str
    limit: Decimal
    period: str = "month"
    mode: str = "hard"

    def to_public_dict(self) -> dict[str, Any]:
        return {"meter": self.meter, "limit": str(self.limit), "period": self.period, "mode": self.mode}


@dataclass(frozen=True)
class Allowance:
    """Credits (integer unit) granted by a plan each ``period`` (or once, ``lifetime``)."""

    amount: int
    period: str = "month"
    priority: int = 10

    def to_public_dict(self) -> dict[str, Any]:
        return {"amount": self.amount, "period": self.period, "priority": self.priority}


@dataclass(frozen=True)
class Plan:
    key: str
    name: str
    description: str = ""
    allowance: Allowance | None = None
    caps: tuple[Cap, ...] = ()
    features: tuple[str, ...] = ()
    prices: Mapping[str, int] = field(
        default_factory=_empty, hash=False
    )  # currency -> minor units per period
    period: str = "month"
    is_free: bool = True
    max_machines: int | None = None
    # a subscription to this plan comes with a licence key (docs/licensing.md "Licences that
    # follow a subscription"): issued on create, extended on renewal, expired on lapse/cancel
    license: bool = False
    trial_days: int = 0
    grace_days: int = 0
    # payment providers: the provider's own id of this plan
    stripe_price_id: str | None = None
    github_plan_id: int | None = None
    # when a paid subscription to this plan is cancelled: suspend the customer's API keys
    suspend_keys_on_cancel: bool = False
    # the credits.low threshold of this plan's customers (None: [credits] low_balance)
    low_balance: int | None = None
    # ---- postpaid plans (payments: docs/payments-stripe.md "Postpaid metered plans") ----
    # "prepaid" (default): usage is paid with credits. "postpaid": Stripe bills the subscription
    # in arrears; every usage event of the meters in ``stripe_meters`` (meter -> Stripe meter
    # event_name) is reported to Stripe's Billing Meter Events.
    billing: str = "prepaid"
    stripe_meters: Mapping[str, str] = field(default_factory=_empty, hash=False)

    @property
    def postpaid(self) -> bool:
        return self.billing == "postpaid"

    def has_feature(self, feature: str) -> bool:
        return feature in self.features

    def caps_for(self, meter: str) -> tuple[Cap, ...]:
        return tuple(cap for cap in self.caps if cap.meter == meter)

    def to_public_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "description": self.description,
            "period": self.period,
            "prices": dict(self.prices),
            "is_free": self.is_free,
            "allowance": None if self.allowance is None else self.allowance.to_public_dict(),
            "caps": [cap.to_public_dict() for cap in self.caps],
            "features": list(self.features),
            "max_machines": self.max_machines,
            "license": self.license,
            "trial_days": self.trial_days,
            "grace_days": self.grace_days,
        }


@dataclass(frozen=True)
class Pack:
    """``[packs.<key>]``: credits sold once (a top-up). Paying for it grants ``credits`` ledger
    units as a purchase grant (never expires unless ``expires_days``; spent in ``priority``
    order, default the purchase priority)."""

    key: str
    name: str
    credits: int
    prices: Mapping[str, int] = field(default_factory=_empty, hash=False)  # currency -> minor units
    description: str = ""
    expires_days: int | None = None
    priority: int | None = None
    stripe_price_id: str | None = None

    def price(self, currency: str) -> int | None:
        return self.prices.get(currency.lower())

    def to_public_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "description": self.description,
            "credits": self.credits,
            "prices": dict(self.prices),
            "expires_days": self.expires_days,
        }


@dataclass(frozen=True)
class AnonymousPolicy:
    """Lifetime free credits for anonymous ``X-Install-Id`` callers (0 = disabled)."""

    allowance: int = 0

    @property
    def enabled(self) -> bool:
        return self.allowance > 0

    def to_public_dict(self) -> dict[str, Any]:
        return {"allowance": self.allowance}


# ---- gateway routes (HTTP gateway: a price per method + path pattern) ----------------------------
ROUTE_METHODS: tuple[str, ...] = ("*", "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@dataclass(frozen=True)
class Route:
    """``[[routes]]``: what one call through the HTTP gateway to ``method`` + ``path`` costs.

    ``path`` is a pattern: literal segments, ``{name}`` for one segment, a trailing ``*`` for
    the rest. ``price``: ledger units per call (0: free); or ``meter``: rated by the catalog
    with quantity 1. ``upstream`` limits it to one named upstream (None: any); ``feature``: the
    caller's plan must have it (403 ``not_entitled``)."""

    method: str
    path: str
    price: int | None = None
    meter: str | None = None
    upstream: str | None = None
    feature: str | None = None

    def to_public_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "price": self.price,
            "meter": self.meter,
            "upstream": self.upstream,
            "feature": self.feature,
        }


# ---- end of gateway routes -----------------------------------------------------------------------


# the scopes a buyer's API key can have (tollkeep.keys.ALL_SCOPES; a test keeps them equal)
BUYER_KEY_SCOPES = ("balance:read", "usage:read", "usage:write", "holds:write", "pricing:read")


@dataclass(frozen=True)
class KeysPolicy:
    """``[keys]``: the scopes a new buyer key gets when none are asked for (None: all of them).
    A seller whose backend meters with a server key can give buyers read-only keys
    (``default_scopes = ["balance:read", "usage:read"]``)."""

    default_scopes: tuple[str, ...] | None = None

    def to_public_dict(self) -> dict[str, Any]:
        return {"default_scopes": None if self.default_scopes is None else list(self.default_scopes)}


@dataclass(frozen=True)
class Catalog:
    """One validated version of the catalog file.

    ``version`` is ``"<label>+<sha256(text)[:12]>"`` (or just the hash when the file
    has no ``version`` label): two different texts never share a version.
    """

    version: str
    label: str | None
    source: str | None
    text: str
    credits: CreditUnit = field(default_factory=CreditUnit)
    meters: Mapping[str, Meter] = field(default_factory=_empty, hash=False)
    plans: Mapping[str, Plan] = field(default_factory=_empty, hash=False)
    default_plan: str | None = None
    anonymous: AnonymousPolicy = field(default_factory=AnonymousPolicy)
    keys: KeysPolicy = field(default_factory=KeysPolicy)
    packs: Mapping[str, Pack] = field(default_factory=_empty, hash=False)
    tools: ToolsPolicy = field(default_factory=lambda: ToolsPolicy())  # the MCP gateway's prices
    routes: tuple[Route, ...] = ()  # the HTTP gateway's priced routes, in match order

    def pack(self, key: str) -> Pack | None:
        return self.packs.get(key)

    def plan_for_github(self, github_plan_id: int) -> Plan | None:
        return next((p for p in self.plans.values() if p.github_plan_id == github_plan_id), None)

    def plan_for_stripe_price(self, price_id: str) -> Plan | None:
        return next((p for p in self.plans.values() if p.stripe_price_id == price_id), None)

    def postpaid_plans(self) -> dict[str, Plan]:
        """The plans Stripe bills in arrears (``billing = "postpaid"``), by key."""
        return {k: p for k, p in self.plans.items() if p.postpaid}

    def meter(self, key: str) -> Meter:
        """The meter ``key``; raises ``UnknownMeter`` (code ``unknown_meter``, 422)."""
        try:
            return self.meters[key]
        except KeyError:
            known = ", ".join(sorted(self.meters)) or "none"
            raise UnknownMeter(
                f"unknown meter {key!r} (known meters: {known})",
                details={"meter": key, "catalog_version": self.version},
            ) from None

    def plan(self, key: str) -> Plan | None:
        return self.plans.get(key)

    def low_balance_for(self, plan: str | None) -> int:
        """The credits.low threshold of a customer on ``plan`` (0: off)."""
        p = self.plans.get(plan) if plan else None
        return self.credits.low_balance if p is None or p.low_balance is None else p.low_balance

    def to_public_dict(self) -> dict[str, Any]:
        """JSON-safe description for the pricing-discovery endpoint (Decimals as strings)."""
        return {
            "version": self.version,
            "label": self.label,
            "credits": self.credits.to_public_dict(),
            "meters": [meter.to_public_dict() for meter in self.meters.values()],
            "plans": [plan.to_public_dict() for plan in self.plans.values()],
            "packs": [pack.to_public_dict() for pack in self.packs.values()],
            "default_plan": self.default_plan,
            "anonymous": self.anonymous.to_public_dict(),
            "routes": [route.to_public_dict() for route in self.routes],
        }


# ---- the MCP gateway's tool prices ([gateway] and [tools."<server>/<tool>"]) -----------------
UNPRICED_POLICIES: tuple[str, ...] = ("refuse", "default")
QUANTITY_SOURCES: tuple[str, ...] = ("arguments", "result")


@dataclass(frozen=True)
class ToolPrice:
    """``[tools."<server>/<tool>"]`` (or ``"<server>/*"``: every tool of that upstream not
    listed itself): what one call costs, in ledger units.

    * ``price``: flat per call; ``free``: costs nothing (listed as free);
    * ``meter`` + ``quantity``: rated by the meter's price, with the quantity read from the
      call's arguments (``"arguments.<path>"``) or from the result's structured content
      (``"result.<path>"``, then ``hold`` is reserved up front and the rated amount settled);
    * ``charge_errors``: charge a call whose result has ``isError: true`` too (default no);
    * ``feature``: only customers whose plan has this feature (entitlement) see and call it."""

    key: str
    price: int | None = None
    free: bool = False
    meter: str | None = None
    quantity: str | None = None
    hold: int | None = None
    charge_errors: bool = False
    feature: str | None = None

    @property
    def quantity_source(self) -> str | None:
        return None if self.quantity is None else self.quantity.split(".", 1)[0]

    @property
    def quantity_path(self) -> tuple[str, ...]:
        return () if self.quantity is None else tuple(self.quantity.split(".")[1:])

    def to_public_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tool": self.key, "free": self.free}
        if self.price is not None:
            out["price"] = self.price
        if self.meter is not None:
            out["meter"] = self.meter
            out["quantity"] = self.quantity
        if self.feature is not None:
            out["feature"] = self.feature
        return out


@dataclass(frozen=True)
class McpUpstream:
    """``[gateway.upstreams.<name>]``: an MCP server ``tollkeep serve`` puts behind its gateway at
    ``/mcp/<name>``: a stdio ``command`` (argv list) or a streamable-HTTP ``url``."""

    name: str
    command: tuple[str, ...] = ()
    url: str | None = None


@dataclass(frozen=True)
class ToolsPolicy:
    """``[gateway]`` and ``[tools.*]``: the MCP gateway's prices. A tool without a price of its
    own or of its upstream (``"<server>/*"``) is refused (``unpriced = "refuse"``, the default)
    or charged ``default_price`` (``unpriced = "default"``): never silently free."""

    prices: Mapping[str, ToolPrice] = field(default_factory=_empty, hash=False)
    unpriced: str = "refuse"
    default_price: int | None = None
    description_suffix: str = " [{price}]"
    timeout_seconds: int = 120
    # MCP servers `tollkeep serve` gateways (read at start-up: a change takes a restart)
    upstreams: Mapping[str, McpUpstream] = field(default_factory=_empty, hash=False)

    def price_of(self, server: str, tool: str) -> ToolPrice | None:
        """The price of ``server/tool``: its own, its upstream's, the default, or None
        (unpriced and refused)."""
        own = self.prices.get(f"{server}/{tool}") or self.prices.get(f"{server}/*")
        if own is not None:
            return own
        if self.unpriced == "default" and self.default_price is not None:
            return ToolPrice(key=f"{server}/{tool}", price=self.default_price, free=self.default_price == 0)
        return None
