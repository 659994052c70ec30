"""Load and validate a catalog TOML file into a :class:`~tollkeep.catalog.model.Catalog`.

Everything is validated; every problem found becomes one issue
``{"file", "key", "reason"}`` and all of them are raised together as one
:class:`~tollkeep.catalog.errors.CatalogError`. Numbers are parsed as ``Decimal``
(never float); prices may also be written as strings (``"0.0025"``).
"""

from __future__ import annotations

import datetime as dt
import difflib
import hashlib
import re
import tomllib
from collections.abc import Iterable, Mapping
from decimal import Decimal, InvalidOperation
from importlib import resources
from os import PathLike
from pathlib import Path
from types import MappingProxyType
from typing import Any

from tollkeep.catalog.errors import CatalogError
from tollkeep.catalog.model import (
    AGGREGATIONS,
    BUYER_KEY_SCOPES,
    CAP_MODES,
    CAP_PERIODS,
    PERIODS,
    PLAN_PERIODS,
    PRICE_MODELS,
    QUANTITY_SOURCES,
    ROUNDING_RULES,
    ROUTE_METHODS,
    UNPRICED_POLICIES,
    Allowance,
    AnonymousPolicy,
    Cap,
    Catalog,
    CreditUnit,
    KeysPolicy,
    McpUpstream,
    Meter,
    Pack,
    Plan,
    Price,
    Route,
    Tier,
    TokenPrice,
    ToolPrice,
    ToolsPolicy,
)

__all__ = [
    "DEFAULT_CATALOG_TEXT",
    "catalog_version",
    "default_catalog",
    "load_catalog",
    "parse_catalog",
]

DEFAULT_CATALOG_TEXT: str = (
    resources.files("tollkeep.catalog").joinpath("default.toml").read_text(encoding="utf-8")
)

_TOP_KEYS: tuple[str, ...] = (
    "version",
    "default_plan",
    "credits",
    "meters",
    "plans",
    "packs",
    "anonymous",
    "keys",
    *("gateway", "tools"),  # the MCP gateway's prices (see _GatewayParser)
)
_TOP_KEYS += ("routes",)  # the HTTP gateway's priced routes (see _Parser.routes)
_ROUTE_KEYS = ("method", "path", "price", "meter", "upstream", "feature")
_CREDIT_KEYS = ("unit", "per_credit", "rounding", "ledger_unit", "value", "low_balance")
_ANON_KEYS = ("allowance",)
_KEYS_KEYS = ("default_scopes",)
_METER_KEYS = ("aggregation", "description", "unit", "price", "property")
_PRICE_KEYS: dict[str, tuple[str, ...]] = {
    "flat": ("amount",),
    "per_unit": ("unit_price", "per"),
    "graduated": ("tiers", "per"),
    "volume": ("tiers", "per"),
    "package": ("package_size", "package_price"),
    "tokens": ("per", "models", "default"),
}
_TIER_KEYS = ("up_to", "unit_price", "flat")
_TOKEN_KEYS = ("input", "output")
_PLAN_KEYS = (
    "name",
    "description",
    "allowance",
    "caps",
    "features",
    "prices",
    "period",
    "max_machines",
    "license",
    "trial_days",
    "grace_days",
    "stripe_price_id",
    "github_plan_id",
    "suspend_keys_on_cancel",
    "low_balance",
    "billing",  # postpaid plans (payments)
    "stripe_meters",
)
_PACK_KEYS = ("name", "description", "credits", "prices", "expires_days", "priority", "stripe_price_id")
_ALLOWANCE_KEYS = ("amount", "period", "priority")
_CAP_KEYS = ("meter", "limit", "period", "mode")

_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}$")
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_BARE_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_CURRENCY_RE = re.compile(r"^[A-Za-z]{3}$")
_PROVIDER_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_TOML_POS_RE = re.compile(r"\(at line (\d+), column (\d+)\)")
_INF_WORDS = ("inf", "+inf", "infinity", "+infinity")
_NOTHING = object()


def catalog_version(text: str, label: str | None = None) -> str:
    """``"<label>+<first 12 hex of sha256(text)>"``, or just the hash without a label."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    return f"{label}+{digest}" if label else digest


def load_catalog(path: str | PathLike[str]) -> Catalog:
    """Read and validate the catalog file at ``path`` (unreadable file → CatalogError)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CatalogError([{"file": source, "key": "", "reason": f"cannot read file: {reason}"}]) from exc
    return parse_catalog(text, source=source)


def default_catalog() -> Catalog:
    """The catalog ``tollkeep init`` writes (package data ``catalog/default.toml``)."""
    return parse_catalog(DEFAULT_CATALOG_TEXT, source=None)


def parse_catalog(text: str, *, source: str | None = None) -> Catalog:
    """Parse and validate catalog TOML ``text``; ``source`` names the file in issues."""
    file = source or "<catalog>"
    body = text[1:] if text.startswith("\ufeff") else text
    try:
        data = tomllib.loads(body, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        issue: dict[str, Any] = {"file": file, "key": "", "reason": f"TOML syntax error: {exc}"}
        match = _TOML_POS_RE.search(str(exc))
        if match:
            issue["line"], issue["column"] = int(match.group(1)), int(match.group(2))
        elif "end of document" in str(exc):
            issue["line"] = body.count("\n") + 1
        raise CatalogError([issue]) from None
    parser = _Parser(file)
    catalog = parser.catalog(data, text=text, source=source)
    if parser.issues or catalog is None:
        raise CatalogError(parser.issues)
    return catalog


# --- parsing ----------------------------------------------------------------------


def _fmt_key(parts: Iterable[str | int]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        name = part if _BARE_KEY_RE.match(part) else '"' + part.replace('"', '\\"') + '"'
        out = f"{out}.{name}" if out else name
    return out


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, Decimal):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return "date/time"
    return type(value).__name__


Path_ = tuple[str | int, ...]


class _Parser:
    def __init__(self, file: str) -> None:
        self.file = file
        self.issues: list[dict[str, Any]] = []

    # -- issue helpers --

    def add(self, path: Path_, reason: str) -> None:
        self.issues.append({"file": self.file, "key": _fmt_key(path), "reason": reason})

    def table(self, value: Any, path: Path_) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.add(path, f"expected a table, got {_type_name(value)}")
        return None

    def check_keys(self, table: Mapping[str, Any], allowed: Iterable[str], path: Path_, what: str) -> None:
        allowed = tuple(allowed)
        for key in table:
            if key in allowed:
                continue
            reason = f"unknown key in {what}"
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            if close:
                reason += f"; did you mean {close[0]!r}?"
            else:
                reason += f" (allowed: {', '.join(allowed)})"
            self.add((*path, key), reason)

    def string(self, table: Mapping[str, Any], key: str, path: Path_, default: Any = _NOTHING) -> Any:
        value = table.get(key, _NOTHING)
        if value is _NOTHING:
            if default is _NOTHING:
                self.add((*path, key), "is required")
                return None
            return default
        if not isinstance(value, str):
            self.add((*path, key), f"expected a string, got {_type_name(value)}")
            return None if default is _NOTHING else default
        return value

    def choice(
        self, table: Mapping[str, Any], key: str, path: Path_, choices: tuple[str, ...], default: Any
    ) -> Any:
        value = self.string(table, key, path, default)
        if value is None or value in choices:
            return value
        reason = f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}"
        close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
        if close:
            reason += f"; did you mean {close[0]!r}?"
        self.add((*path, key), reason)
        return None

    def integer(
        self, table: Mapping[str, Any], key: str, path: Path_, *, minimum: int, default: Any = _NOTHING
    ) -> Any:
        value = table.get(key, _NOTHING)
        if value is _NOTHING:
            if default is _NOTHING:
                self.add((*path, key), "is required")
            return None if default is _NOTHING else default
        if isinstance(value, bool) or not isinstance(value, int):
            self.add((*path, key), f"expected an integer, got {_type_name(value)} {value!r}")
            return None
        if value < minimum:
            self.add((*path, key), f"must be >= {minimum}, got {value}")
            return None
        return value

    def decimal(
        self,
        table: Mapping[str, Any],
        key: str,
        path: Path_,
        *,
        default: Any = _NOTHING,
        positive: bool = False,
        allow_inf: bool = False,
    ) -> Any:
        """A non-negative (or positive) finite Decimal from an integer, float or numeric string.

        Returns ``None`` after recording an issue; with ``allow_inf`` an infinite value
        returns ``Decimal("Infinity")``.
        """
        value = table.get(key, _NOTHING)
        full = (*path, key)
        if value is _NOTHING:
            if default is _NOTHING:
                self.add(full, "is required")
                return None
            return default
        number: Decimal | None = None
        if isinstance(value, bool):
            number = None
        elif isinstance(value, int):
            number = Decimal(value)
        elif isinstance(value, Decimal):
            number = value
        elif isinstance(value, str):
            text = value.strip().replace("_", "")
            if allow_inf and text.lower() in _INF_WORDS:
                return Decimal("Infinity")
            try:
                number = Decimal(text)
            except InvalidOperation:
                self.add(full, f"expected a number, got the string {value!r}")
                return None
        if number is None:
            self.add(
                full, f'expected a number (integer, decimal or string like "0.0025"), got {_type_name(value)}'
            )
            return None
        if number.is_nan():
            self.add(full, "must be a number, got nan")
            return None
        if number.is_infinite():
            if allow_inf and number > 0:
                return number
            self.add(full, f"must be finite, got {value!r}")
            return None
        if number < 0:
            self.add(full, f"must not be negative, got {value}")
            return None
        if positive and number == 0:
            self.add(full, "must be greater than 0")
            return None
        return number

    def name_ok(self, name: str, path: Path_, what: str) -> bool:
        if _NAME_RE.match(name):
            return True
        self.add(path, f"invalid {what} name {name!r}: use letters, digits, '_', '.', ':' or '-' (max 64)")
        return False

    # -- sections --

    def catalog(self, data: dict[str, Any], *, text: str, source: str | None) -> Catalog | None:
        self.check_keys(data, _TOP_KEYS, (), "the catalog (top level)")
        label = self.label(data.get("version"))
        credits = self.credits(data.get("credits", {}))
        anonymous = self.anonymous(data.get("anonymous", {}))
        keys = self.keys(data.get("keys", {}))
        raw_meters, raw_plans = data.get("meters", {}), data.get("plans", {})
        meters = self.meters(raw_meters)
        # names as written (a meter/plan with its own issues still counts as declared)
        meter_names = tuple(raw_meters) if isinstance(raw_meters, dict) else tuple(meters)
        plan_names = tuple(raw_plans) if isinstance(raw_plans, dict) else ()
        plans = self.plans(raw_plans, meter_names)
        packs = self.packs(data.get("packs", {}))
        self.unique_provider_ids(plans, packs)
        tools = _GatewayParser(self).tools(data.get("gateway", {}), data.get("tools", {}), meters, plans)
        self.postpaid_meters_free(plans, meters)
        default_plan = self.string(data, "default_plan", (), None)
        if default_plan is not None and default_plan not in plan_names:
            known = ", ".join(plan_names) or "no plans are defined"
            self.add(("default_plan",), f"unknown plan {default_plan!r} (known: {known})")
        routes = self.routes(data.get("routes", []), meter_names)
        if self.issues or credits is None or anonymous is None or keys is None:
            return None
        return Catalog(
            version=catalog_version(text, label),
            label=label,
            source=source,
            text=text,
            credits=credits,
            meters=MappingProxyType(meters),
            plans=MappingProxyType(plans),
            default_plan=default_plan,
            anonymous=anonymous,
            keys=keys,
            packs=MappingProxyType(packs),
            tools=tools,
            routes=routes,
        )

    def label(self, value: Any) -> str | None:
        if value is None:
            return None
        if isinstance(value, dt.date | dt.datetime):
            value = value.isoformat()
        elif isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            self.add(("version",), f"expected a string label, got {_type_name(value)}")
            return None
        if not _LABEL_RE.match(value):
            self.add(
                ("version",),
                f"invalid version label {value!r}: use letters, digits, '.', '_', ':' or '-' (max 64)",
            )
            return None
        return value

    def credits(self, value: Any) -> CreditUnit | None:
        path: Path_ = ("credits",)
        table = self.table(value, path)
        if table is None:
            return None
        self.check_keys(table, _CREDIT_KEYS, path, "[credits]")
        name = self.string(table, "unit", path, "credit")
        if name is not None and not name.strip():
            self.add((*path, "unit"), "must not be empty")
        per_credit = self.integer(table, "per_credit", path, minimum=1, default=1)
        rounding = self.choice(table, "rounding", path, ROUNDING_RULES, "up")
        ledger_unit = self.string(table, "ledger_unit", path, None)
        if ledger_unit is not None and not (ledger_unit.strip() and len(ledger_unit) <= 64):
            self.add((*path, "ledger_unit"), 'must be a name of 1-64 characters (e.g. "millicredit")')
            ledger_unit = None
        value = self.credit_value(table.get("value", {}), (*path, "value"))
        low_balance = self.integer(table, "low_balance", path, minimum=0, default=0)
        if name is None or per_credit is None or rounding is None or low_balance is None:
            return None
        return CreditUnit(
            name=name.strip() or "credit",
            per_credit=per_credit,
            rounding=rounding,
            ledger_unit=None if ledger_unit is None else ledger_unit.strip(),
            value=MappingProxyType(value),
            low_balance=low_balance,
        )

    def credit_value(self, value: Any, path: Path_) -> dict[str, Decimal]:
        """``[credits] value = { usd = "0.01" }``: what one credit is worth, by ISO 4217 currency
        (lower-case), a non-negative decimal each."""
        table = self.table(value, path)
        if table is None:
            return {}
        out: dict[str, Decimal] = {}
        for currency in table:
            if not _CURRENCY_RE.match(currency):
                self.add((*path, currency), "currency must be a 3-letter ISO 4217 code such as usd or eur")
                continue
            code = currency.lower()
            if code in out:
                self.add((*path, currency), f"duplicate currency {code!r}")
                continue
            amount = self.decimal(table, currency, path)
            if amount is not None:
                out[code] = amount
        return out

    def anonymous(self, value: Any) -> AnonymousPolicy | None:
        path: Path_ = ("anonymous",)
        table = self.table(value, path)
        if table is None:
            return None
        self.check_keys(table, _ANON_KEYS, path, "[anonymous]")
        allowance = self.integer(table, "allowance", path, minimum=0, default=0)
        return None if allowance is None else AnonymousPolicy(allowance=allowance)

    def keys(self, value: Any) -> KeysPolicy | None:
        path: Path_ = ("keys",)
        table = self.table(value, path)
        if table is None:
            return None
        self.check_keys(table, _KEYS_KEYS, path, "[keys]")
        raw = table.get("default_scopes")
        if raw is None:
            return KeysPolicy()
        where = (*path, "default_scopes")
        if not isinstance(raw, list) or not raw or not all(isinstance(v, str) for v in raw):
            self.add(where, f"expected a non-empty list of scopes ({', '.join(BUYER_KEY_SCOPES)})")
            return None
        bad = [v for v in raw if v not in BUYER_KEY_SCOPES]
        if bad:
            self.add(where, f"unknown scopes {bad}; known: {', '.join(BUYER_KEY_SCOPES)}")
            return None
        return KeysPolicy(tuple(dict.fromkeys(raw)))

    # -- meters --

    def meters(self, value: Any) -> dict[str, Meter]:
        out: dict[str, Meter] = {}
        table = self.table(value, ("meters",))
        if table is None:
            return out
        if not table:
            # an empty file, or one that forgot its [meters.x] tables: nothing could be charged
            self.add(
                ("meters",), "declare at least one meter ([meters.<name>]); nothing can be charged without"
            )
        for key, raw in table.items():
            path: Path_ = ("meters", key)
            if not self.name_ok(key, path, "meter"):
                continue
            meter_table = self.table(raw, path)
            if meter_table is None:
                continue
            meter = self.meter(key, meter_table, path)
            if meter is not None:
                out[key] = meter
        return out

    def meter(self, key: str, table: dict[str, Any], path: Path_) -> Meter | None:
        self.check_keys(table, _METER_KEYS, path, "a meter")
        aggregation = self.choice(table, "aggregation", path, AGGREGATIONS, "count")
        description = self.string(table, "description", path, "")
        unit = self.string(table, "unit", path, "")
        prop = self.string(table, "property", path, None)
        if aggregation == "unique_count":
            if prop is None and "property" not in table:
                self.add(
                    (*path, "property"),
                    'is required for aggregation = "unique_count" '
                    "(the event property whose distinct values are counted)",
                )
            elif prop is not None and not prop.strip():
                self.add((*path, "property"), "must not be empty")
        elif prop is not None:
            self.add((*path, "property"), 'is only used by aggregation = "unique_count"')
        price = None
        if "price" in table:
            price_table = self.table(table["price"], (*path, "price"))
            if price_table is not None:
                price = self.price(price_table, (*path, "price"))
                if price is not None and price.model == "tokens" and aggregation not in (None, "sum"):
                    self.add((*path, "aggregation"), 'the "tokens" price model needs aggregation = "sum"')
        if aggregation is None or description is None or unit is None:
            return None
        return Meter(
            key=key,
            aggregation=aggregation,
            description=description,
            unit=unit,
            price=price,
            property=prop if aggregation == "unique_count" else None,
        )

    def price(self, table: dict[str, Any], path: Path_) -> Price | None:
        model = self.choice(table, "model", path, PRICE_MODELS, _NOTHING)
        if model is None or model is _NOTHING:
            if "model" in table:
                self.check_keys(
                    table, ("model", *{k for ks in _PRICE_KEYS.values() for k in ks}), path, "a price"
                )
            return None
        allowed = _PRICE_KEYS[model]
        for key in table:
            if key == "model" or key in allowed:
                continue
            reason = f'not used by price model "{model}" (allowed: model, {", ".join(allowed)})'
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            if close:
                reason += f"; did you mean {close[0]!r}?"
            self.add((*path, key), reason)
        if model == "flat":
            amount = self.decimal(table, "amount", path)
            return None if amount is None else Price(model=model, amount=amount)
        if model == "per_unit":
            unit_price = self.decimal(table, "unit_price", path)
            per = self.decimal(table, "per", path, default=Decimal(1), positive=True)
            if unit_price is None or per is None:
                return None
            return Price(model=model, unit_price=unit_price, per=per)
        if model in ("graduated", "volume"):
            per = self.decimal(table, "per", path, default=Decimal(1), positive=True)
            tiers = self.tiers(table.get("tiers", _NOTHING), (*path, "tiers"))
            if per is None or tiers is None:
                return None
            return Price(model=model, per=per, tiers=tiers)
        if model == "package":
            size = self.decimal(table, "package_size", path, positive=True)
            package_price = self.decimal(table, "package_price", path)
            if size is None or package_price is None:
                return None
            return Price(model=model, package_size=size, package_price=package_price)
        return self.tokens_price(table, path)

    def tiers(self, value: Any, path: Path_) -> tuple[Tier, ...] | None:
        if value is _NOTHING:
            self.add(
                path,
                "is required: a list of tiers, e.g. [{up_to = 100, unit_price = 0}, "
                '{up_to = "inf", unit_price = "0.5"}]',
            )
            return None
        if not isinstance(value, list) or not value:
            self.add(path, f"expected a non-empty array of tables, got {_type_name(value)}")
            return None
        tiers: list[Tier] = []
        ok = True
        previous: Decimal | None = None
        last = len(value) - 1
        for index, raw in enumerate(value):
            tier_path = (*path, index)
            table = self.table(raw, tier_path)
            if table is None:
                ok = False
                continue
            self.check_keys(table, _TIER_KEYS, tier_path, "a tier")
            default_up_to = Decimal("Infinity") if index == last else _NOTHING
            up_to = self.decimal(
                table, "up_to", tier_path, default=default_up_to, positive=True, allow_inf=True
            )
            unit_price = self.decimal(table, "unit_price", tier_path, default=Decimal(0))
            flat = self.decimal(table, "flat", tier_path, default=Decimal(0))
            if up_to is None or unit_price is None or flat is None:
                ok = False
                continue
            if up_to.is_infinite() and index != last:
                self.add((*tier_path, "up_to"), "only the last tier may be open-ended (inf)")
                ok = False
            elif index == last and not up_to.is_infinite():
                self.add(
                    (*tier_path, "up_to"), 'the last tier must be open-ended: up_to = "inf" (or omit up_to)'
                )
                ok = False
            if previous is not None and up_to <= previous:
                self.add(
                    (*tier_path, "up_to"),
                    f"tiers must be in ascending order: {up_to} <= previous up_to {previous}",
                )
                ok = False
            previous = up_to
            tiers.append(Tier(up_to=None if up_to.is_infinite() else up_to, unit_price=unit_price, flat=flat))
        return tuple(tiers) if ok else None

    def tokens_price(self, table: dict[str, Any], path: Path_) -> Price | None:
        per = self.decimal(table, "per", path, default=Decimal(1), positive=True)
        models: dict[str, TokenPrice] = {}
        ok = per is not None
        raw_models = table.get("models", {})
        models_table = self.table(raw_models, (*path, "models"))
        if models_table is None:
            ok = False
        else:
            for name, raw in models_table.items():
                token_price = self.token_price(raw, (*path, "models", name))
                if token_price is None:
                    ok = False
                else:
                    models[name] = token_price
        default = None
        if "default" in table:
            default = self.token_price(table["default"], (*path, "default"))
            ok = ok and default is not None
        if ok and not models and default is None:
            self.add((*path, "models"), "a tokens price needs at least one model or a default")
            ok = False
        if not ok or per is None:
            return None
        return Price(model="tokens", per=per, models=MappingProxyType(models), default=default)

    def token_price(self, value: Any, path: Path_) -> TokenPrice | None:
        table = self.table(value, path)
        if table is None:
            return None
        self.check_keys(table, _TOKEN_KEYS, path, "a model price")
        inp = self.decimal(table, "input", path)
        out = self.decimal(table, "output", path)
        if inp is None or out is None:
            return None
        return TokenPrice(input=inp, output=out)

    # -- plans --

    def plans(self, value: Any, meters: tuple[str, ...]) -> dict[str, Plan]:
        out: dict[str, Plan] = {}
        table = self.table(value, ("plans",))
        if table is None:
            return out
        for key, raw in table.items():
            path: Path_ = ("plans", key)
            if not self.name_ok(key, path, "plan"):
                continue
            plan_table = self.table(raw, path)
            if plan_table is None:
                continue
            plan = self.plan(key, plan_table, path, meters)
            if plan is not None:
                out[key] = plan
        return out

    def plan(self, key: str, table: dict[str, Any], path: Path_, meters: tuple[str, ...]) -> Plan | None:
        self.check_keys(table, _PLAN_KEYS, path, "a plan")
        before = len(self.issues)
        name = self.string(table, "name", path, key)
        description = self.string(table, "description", path, "")
        period = self.choice(table, "period", path, PLAN_PERIODS, "month")
        max_machines = self.integer(table, "max_machines", path, minimum=1, default=None)
        trial_days = self.integer(table, "trial_days", path, minimum=0, default=0)
        grace_days = self.integer(table, "grace_days", path, minimum=0, default=0)
        allowance = None
        if "allowance" in table:
            allowance = self.allowance(table["allowance"], (*path, "allowance"))
        caps = self.caps(table.get("caps", []), (*path, "caps"), meters)
        features = self.features(table.get("features", []), (*path, "features"))
        prices = self.plan_prices(table.get("prices", {}), (*path, "prices"))
        stripe_price_id = self.provider_id(table, "stripe_price_id", path)
        github_plan_id = self.integer(table, "github_plan_id", path, minimum=1, default=None)
        low_balance = self.integer(table, "low_balance", path, minimum=0, default=None)
        suspend = table.get("suspend_keys_on_cancel", False)
        if not isinstance(suspend, bool):
            self.add((*path, "suspend_keys_on_cancel"), f"expected true or false, got {_type_name(suspend)}")
        license_ = table.get("license", False)
        if not isinstance(license_, bool):
            self.add((*path, "license"), f"expected true or false, got {_type_name(license_)}")
        billing, stripe_meters = self.postpaid(table, path, meters, stripe_price_id)
        if len(self.issues) > before:
            return None
        return Plan(
            key=key,
            name=name,
            description=description,
            allowance=allowance,
            caps=caps,
            features=features,
            prices=MappingProxyType(prices),
            period=period,
            is_free=not any(prices.values()),
            max_machines=max_machines,
            license=license_,
            trial_days=trial_days,
            grace_days=grace_days,
            stripe_price_id=stripe_price_id,
            github_plan_id=github_plan_id,
            suspend_keys_on_cancel=suspend,
            low_balance=low_balance,
            billing=billing,
            stripe_meters=MappingProxyType(stripe_meters),
        )

    # ---- postpaid plans (payments) ----
    def postpaid(
        self, table: Mapping[str, Any], path: Path_, meters: tuple[str, ...], stripe_price_id: str | None
    ) -> tuple[str, dict[str, str]]:
        """``billing`` and ``stripe_meters`` (meter -> Stripe meter event_name) of a plan."""
        billing = self.choice(table, "billing", path, ("prepaid", "postpaid"), "prepaid") or "prepaid"
        raw = table.get("stripe_meters", {})
        out: dict[str, str] = {}
        if not isinstance(raw, dict):
            got = _type_name(raw)
            self.add((*path, "stripe_meters"), f"expected a table (meter = event_name), got {got}")
            return billing, out
        for meter, event_name in raw.items():
            where = (*path, "stripe_meters", meter)
            if meter not in meters:
                self.add(where, f"unknown meter {meter!r} (known: {', '.join(meters) or 'none'})")
            elif not isinstance(event_name, str) or not 1 <= len(event_name) <= 100:
                self.add(where, "expected the Stripe meter's event_name (a string of 1 to 100 characters)")
            else:
                out[meter] = event_name
        if billing == "postpaid":
            if not stripe_price_id:
                self.add((*path, "stripe_price_id"), "a postpaid plan needs the Stripe Price it is billed by")
            if not raw:
                self.add((*path, "stripe_meters"), "a postpaid plan reports at least one meter to Stripe")
        elif raw:
            self.add((*path, "stripe_meters"), 'only a plan with billing = "postpaid" reports to Stripe')
        return billing, out

    def postpaid_meters_free(self, plans: Mapping[str, Plan], meters: Mapping[str, Meter]) -> None:
        """A meter Stripe bills on a postpaid plan must cost no credits: the ledger rates a meter
        the same on every plan, so a credit price would charge that plan's customers twice."""
        for key, plan in plans.items():
            for meter in plan.stripe_meters:
                m = meters.get(meter)
                if m is not None and m.price is not None:
                    self.add(
                        ("plans", key, "stripe_meters", meter),
                        f"meter {meter!r} costs credits, and postpaid plan {key!r} also bills it through "
                        "Stripe: its customers would pay twice. Give the meter no price (bill it only "
                        "through Stripe) or report another meter",
                    )

    def provider_id(self, table: Mapping[str, Any], key: str, path: Path_) -> str | None:
        value = self.string(table, key, path, None)
        if value is not None and not _PROVIDER_ID_RE.match(value):
            self.add((*path, key), f"expected a provider id (letters, digits, '_' or '-'), got {value!r}")
            return None
        return value

    # -- gateway routes --

    def routes(self, value: Any, meters: tuple[str, ...]) -> tuple[Route, ...]:
        """``[[routes]]``: method + path pattern -> a price (ledger units) or a meter."""
        if not isinstance(value, list):
            self.add(("routes",), f"expected an array of tables ([[routes]]), got {_type_name(value)}")
            return ()
        out: list[Route] = []
        for i, raw in enumerate(value):
            path: Path_ = ("routes", i)
            table = self.table(raw, path)
            if table is None:
                continue
            before = len(self.issues)
            self.check_keys(table, _ROUTE_KEYS, path, "a route")
            method = self.choice(table, "method", path, ROUTE_METHODS, "*")
            pattern = self.string(table, "path", path)
            if isinstance(pattern, str) and not pattern.startswith("/"):
                self.add((*path, "path"), f"must start with '/', got {pattern!r}")
            price = self.integer(table, "price", path, minimum=0, default=None)
            meter = self.string(table, "meter", path, None)
            if (price is None) == (meter is None):
                self.add(path, "give a route either a price (ledger units per call) or a meter")
            if meter is not None and meter not in meters:
                self.add((*path, "meter"), f"unknown meter {meter!r} (known: {', '.join(meters) or 'none'})")
            upstream = self.string(table, "upstream", path, None)
            feature = self.string(table, "feature", path, None)
            if len(self.issues) == before:
                out.append(Route(method.upper(), pattern, price, meter, upstream, feature))
        return tuple(out)

    # -- packs --

    def packs(self, value: Any) -> dict[str, Pack]:
        out: dict[str, Pack] = {}
        table = self.table(value, ("packs",))
        if table is None:
            return out
        for key, raw in table.items():
            path: Path_ = ("packs", key)
            if not self.name_ok(key, path, "pack"):
                continue
            pack_table = self.table(raw, path)
            if pack_table is None:
                continue
            pack = self.pack(key, pack_table, path)
            if pack is not None:
                out[key] = pack
        return out

    def pack(self, key: str, table: dict[str, Any], path: Path_) -> Pack | None:
        self.check_keys(table, _PACK_KEYS, path, "a credit pack")
        before = len(self.issues)
        name = self.string(table, "name", path, key)
        description = self.string(table, "description", path, "")
        credits = self.integer(table, "credits", path, minimum=1)
        prices = self.plan_prices(table.get("prices", {}), (*path, "prices"))
        if "prices" in table and prices and not any(prices.values()):
            self.add((*path, "prices"), "a credit pack cannot be free: give it a price above 0")
        expires_days = self.integer(table, "expires_days", path, minimum=1, default=None)
        priority = self.integer(table, "priority", path, minimum=-(2**31), default=None)
        stripe_price_id = self.provider_id(table, "stripe_price_id", path)
        if len(self.issues) > before or credits is None:
            return None
        return Pack(
            key=key,
            name=name,
            description=description,
            credits=credits,
            prices=MappingProxyType(prices),
            expires_days=expires_days,
            priority=priority,
            stripe_price_id=stripe_price_id,
        )

    def unique_provider_ids(self, plans: Mapping[str, Plan], packs: Mapping[str, Pack]) -> None:
        """A provider id names one thing: a webhook carrying it must map to one plan or pack."""
        seen: dict[tuple[str, Any], str] = {}
        things: list[tuple[str, Any, Any]] = [
            *((f"plans.{k}", "stripe_price_id", p.stripe_price_id) for k, p in plans.items()),
            *((f"plans.{k}", "github_plan_id", p.github_plan_id) for k, p in plans.items()),
            *((f"packs.{k}", "stripe_price_id", p.stripe_price_id) for k, p in packs.items()),
        ]
        for where, field_name, value in things:
            if value is None:
                continue
            first = seen.setdefault((field_name, value), where)
            if first != where:
                self.add((*where.split("."), field_name), f"{value!r} is already the {field_name} of {first}")

    def allowance(self, value: Any, path: Path_) -> Allowance | None:
        table = self.table(value, path)
        if table is None:
            return None
        self.check_keys(table, _ALLOWANCE_KEYS, path, "an allowance")
        amount = self.integer(table, "amount", path, minimum=0)
        period = self.choice(table, "period", path, PERIODS, "month")
        priority = self.integer(table, "priority", path, minimum=-(2**31), default=10)
        if amount is None or period is None or priority is None:
            return None
        return Allowance(amount=amount, period=period, priority=priority)

    def caps(self, value: Any, path: Path_, meters: tuple[str, ...]) -> tuple[Cap, ...]:
        if not isinstance(value, list):
            self.add(path, f"expected an array of tables ([[plans.<plan>.caps]]), got {_type_name(value)}")
            return ()
        caps: list[Cap] = []
        seen: set[tuple[str, str]] = set()
        for index, raw in enumerate(value):
            cap_path = (*path, index)
            table = self.table(raw, cap_path)
            if table is None:
                continue
            self.check_keys(table, _CAP_KEYS, cap_path, "a cap")
            meter = self.string(table, "meter", cap_path)
            limit = self.decimal(table, "limit", cap_path)
            period = self.choice(table, "period", cap_path, CAP_PERIODS, "month")
            mode = self.choice(table, "mode", cap_path, CAP_MODES, "hard")
            if meter is not None and meter not in meters:
                reason = f"unknown meter {meter!r}"
                close = difflib.get_close_matches(meter, meters, n=1, cutoff=0.6)
                reason += (
                    f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(meters) or 'none'})"
                )
                self.add((*cap_path, "meter"), reason)
                continue
            if meter is None or limit is None or period is None or mode is None:
                continue
            if (meter, period) in seen:
                self.add(cap_path, f"duplicate cap for meter {meter!r} and period {period!r}")
                continue
            seen.add((meter, period))
            caps.append(Cap(meter=meter, limit=limit, period=period, mode=mode))
        return tuple(caps)

    def features(self, value: Any, path: Path_) -> tuple[str, ...]:
        if not isinstance(value, list):
            self.add(path, f"expected an array of strings, got {_type_name(value)}")
            return ()
        out: list[str] = []
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                self.add((*path, index), f"expected a non-empty string, got {_type_name(item)} {item!r}")
            elif item in out:
                self.add((*path, index), f"duplicate feature {item!r}")
            else:
                out.append(item)
        return tuple(out)

    def plan_prices(self, value: Any, path: Path_) -> dict[str, int]:
        table = self.table(value, path)
        if table is None:
            return {}
        out: dict[str, int] = {}
        for currency, amount in table.items():
            if not _CURRENCY_RE.match(currency):
                self.add((*path, currency), "currency must be a 3-letter ISO 4217 code such as usd or eur")
                continue
            code = currency.lower()
            if code in out:
                self.add((*path, currency), f"duplicate currency {code!r}")
                continue
            if isinstance(amount, bool) or not isinstance(amount, int):
                self.add(
                    (*path, currency),
                    "expected an integer amount in minor units (e.g. 2900 for 29.00), "
                    f"got {_type_name(amount)}",
                )
                continue
            if amount < 0:
                self.add((*path, currency), f"must not be negative, got {amount}")
                continue
            out[code] = amount
        return out


# --- the MCP gateway's prices: [gateway] and [tools."<server>/<tool>"] ------------------------

_GATEWAY_KEYS = ("unpriced", "default_price", "description_suffix", "timeout_seconds", "upstreams")
_UPSTREAM_KEYS = ("command", "url")
_UPSTREAM_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")
_TOOL_KEYS = ("price", "free", "meter", "quantity", "hold", "charge_errors", "feature")
_TOOL_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,63}/(\*|[^\s/][^\s]{0,127})$")


class _GatewayParser:
    """``[gateway]`` (the unpriced-tool policy, the description suffix, the upstream timeout)
    and ``[tools."<server>/<tool>"]`` (a tool's price; ``"<server>/*"`` for an upstream's)."""

    def __init__(self, parser: _Parser) -> None:
        self.p = parser

    def tools(
        self, gateway: Any, tools: Any, meters: Mapping[str, Meter], plans: Mapping[str, Plan]
    ) -> ToolsPolicy:
        p = self.p
        path: Path_ = ("gateway",)
        table = p.table(gateway, path) or {}
        p.check_keys(table, _GATEWAY_KEYS, path, "[gateway]")
        unpriced = p.choice(table, "unpriced", path, UNPRICED_POLICIES, "refuse")
        default_price = p.integer(table, "default_price", path, minimum=0, default=None)
        if unpriced == "default" and default_price is None and "default_price" not in table:
            p.add(
                (*path, "default_price"),
                'is required with unpriced = "default" (the price of unlisted tools)',
            )
        suffix = p.string(table, "description_suffix", path, " [{price}]")
        if isinstance(suffix, str) and suffix and "{price}" not in suffix:
            p.add((*path, "description_suffix"), 'must contain "{price}" (or be "" to show no suffix)')
        timeout = p.integer(table, "timeout_seconds", path, minimum=1, default=120)
        features = {f for plan in plans.values() for f in plan.features}
        prices: dict[str, ToolPrice] = {}
        tools_table = p.table(tools, ("tools",)) or {}
        for key, raw in tools_table.items():
            tool = self.tool(key, raw, ("tools", key), meters, features)
            if tool is not None:
                prices[key] = tool
        return ToolsPolicy(
            prices=MappingProxyType(prices),
            unpriced=unpriced or "refuse",
            default_price=default_price,
            description_suffix=suffix if isinstance(suffix, str) else " [{price}]",
            timeout_seconds=timeout or 120,
            upstreams=MappingProxyType(self.upstreams(table.get("upstreams"), (*path, "upstreams"))),
        )

    def upstreams(self, raw: Any, path: Path_) -> dict[str, McpUpstream]:
        """``[gateway.upstreams.<name>]``: ``command = ["python", "server.py"]`` or ``url``."""
        p = self.p
        out: dict[str, McpUpstream] = {}
        if raw is None:
            return out
        for name, entry in (p.table(raw, path) or {}).items():
            where = (*path, name)
            if not _UPSTREAM_NAME_RE.match(name):
                p.add(where, "an upstream name is letters, digits, _ and - (it is the path /mcp/<name>)")
                continue
            table = p.table(entry, where)
            if table is None:
                continue
            p.check_keys(table, _UPSTREAM_KEYS, where, "an MCP upstream")
            command, url = table.get("command"), table.get("url")
            if (command is None) == (url is None):
                p.add(where, 'give one of command = ["program", "arg", ...] or url = "http://..."')
                continue
            if command is not None:
                if (
                    not isinstance(command, list)
                    or not command
                    or not all(isinstance(c, str) and c for c in command)
                ):
                    p.add(
                        (*where, "command"),
                        "must be a non-empty list of strings (the program and its arguments)",
                    )
                    continue
                out[name] = McpUpstream(name, command=tuple(command))
            else:
                if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                    p.add((*where, "url"), "must be an http:// or https:// URL")
                    continue
                out[name] = McpUpstream(name, url=url)
        return out

    def tool(
        self, key: str, raw: Any, path: Path_, meters: Mapping[str, Meter], features: set[str]
    ) -> ToolPrice | None:
        p = self.p
        if not _TOOL_KEY_RE.match(key):
            p.add(path, f'invalid tool key {key!r}: use "<server>/<tool>" or "<server>/*"')
            return None
        table = p.table(raw, path)
        if table is None:
            return None
        p.check_keys(table, _TOOL_KEYS, path, "a tool price")
        before = len(p.issues)
        price = p.integer(table, "price", path, minimum=0, default=None)
        hold = p.integer(table, "hold", path, minimum=0, default=None)
        free = self.flag(table, "free", path)
        charge_errors = self.flag(table, "charge_errors", path)
        meter = p.string(table, "meter", path, None)
        quantity = p.string(table, "quantity", path, None)
        feature = p.string(table, "feature", path, None)
        given = [k for k in ("price", "meter") if k in table] + (["free"] if free else [])
        if not given:
            p.add(path, "needs a price: price = <credits per call>, free = true, or meter + quantity")
        elif len(given) > 1:
            p.add(path, f"give one of price, free = true, or meter + quantity (got {', '.join(given)})")
        if meter is not None:
            if meter not in meters:
                p.add((*path, "meter"), f"unknown meter {meter!r} (known: {', '.join(meters) or 'none'})")
            if quantity is None:
                p.add((*path, "quantity"), 'is required with meter: "arguments.<name>" or "result.<name>"')
        elif quantity is not None or hold is not None:
            p.add(path, "quantity and hold go with a meter")
        if quantity is not None:
            source, _, rest = quantity.partition(".")
            if source not in QUANTITY_SOURCES or not rest or "" in rest.split("."):
                p.add(
                    (*path, "quantity"), f'expected "arguments.<path>" or "result.<path>", got {quantity!r}'
                )
            elif source == "result" and hold is None:
                p.add(
                    (*path, "hold"), "is required with a quantity from the result (what to reserve up front)"
                )
        if feature is not None and feature not in features:
            known = ", ".join(sorted(features)) or "no plan has features"
            p.add((*path, "feature"), f"no plan has the feature {feature!r} (known: {known})")
        if len(p.issues) > before:
            return None
        return ToolPrice(
            key=key,
            price=0 if free else price,
            free=free or price == 0,
            meter=meter,
            quantity=quantity,
            hold=hold,
            charge_errors=charge_errors,
            feature=feature,
        )

    def flag(self, table: Mapping[str, Any], key: str, path: Path_) -> bool:
        value = table.get(key, False)
        if not isinstance(value, bool):
            self.p.add((*path, key), f"expected true or false, got {_type_name(value)}")
            return False
        return value
