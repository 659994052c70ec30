"""Catalog loading and validation."""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal as D
from pathlib import Path

import pytest

from tollkeep.catalog import (
    DEFAULT_CATALOG_TEXT,
    CatalogError,
    Tier,
    catalog_version,
    default_catalog,
    load_catalog,
    parse_catalog,
)
from tollkeep.kit.errors import TollkeepError

MINIMAL = """
[meters.api_call]
aggregation = "count"
[meters.api_call.price]
model = "flat"
amount = 1
"""


def issues_of(text: str, source: str = "t.toml") -> list[dict[str, object]]:
    with pytest.raises(CatalogError) as info:
        parse_catalog(text, source=source)
    err = info.value
    assert err.code == "invalid_catalog" and err.status == 422
    assert isinstance(err, TollkeepError)
    issues = err.details["issues"]
    assert issues and all({"file", "key", "reason"} <= set(i) for i in issues)
    assert all(i["file"] == source for i in issues)
    for issue in issues:  # the message lists every issue readably
        assert str(issue["reason"]) in err.message
    return issues


def keys(issues: list[dict[str, object]]) -> set[object]:
    return {i["key"] for i in issues}


# --- default catalog -------------------------------------------------------------


def test_default_catalog_contents() -> None:
    catalog = default_catalog()
    assert catalog.text == DEFAULT_CATALOG_TEXT
    assert catalog.credits.name == "credit" and catalog.credits.per_credit == 1
    assert catalog.credits.rounding == "up"
    api = catalog.meters["api_call"]
    assert api.aggregation == "count" and api.price is not None
    assert api.price.model == "flat" and api.price.amount == D(1)
    assert catalog.meters["search"].price.model == "per_unit"  # type: ignore[union-attr]
    tokens = catalog.meters["llm_tokens"].price
    assert tokens is not None and tokens.model == "tokens" and tokens.per == D(1_000_000)
    assert "gpt-4o" in tokens.models
    assert any(m.price is not None and m.price.model == "graduated" for m in catalog.meters.values())
    assert any(m.aggregation == "unique_count" and m.property for m in catalog.meters.values())
    assert catalog.default_plan is None  # new customers start with only what is granted
    assert catalog.anonymous.allowance == 0  # anonymous use is off until a seller turns it on
    free, pro = catalog.plans["free"], catalog.plans["pro"]
    assert free.is_free and free.allowance is not None
    assert (free.allowance.amount, free.allowance.period) == (100, "lifetime")
    assert free.caps and free.caps[0].meter == "search" and free.caps[0].mode == "allowance"
    assert free.features == ("basic",)
    assert not pro.is_free and dict(pro.prices) == {"usd": 2900, "eur": 2700} and pro.period == "month"
    assert pro.allowance is not None and (pro.allowance.amount, pro.allowance.period) == (10000, "month")
    assert pro.features == ("basic", "priority")


def test_version_is_label_plus_hash() -> None:
    catalog = default_catalog()
    digest = hashlib.sha256(DEFAULT_CATALOG_TEXT.encode()).hexdigest()[:12]
    assert catalog.label == "2026-01-01"
    assert catalog.version == f"2026-01-01+{digest}"
    plain = parse_catalog(MINIMAL)
    assert plain.label is None
    assert plain.version == hashlib.sha256(MINIMAL.encode()).hexdigest()[:12]
    assert catalog_version(MINIMAL, "x") == "x+" + plain.version
    assert parse_catalog(MINIMAL + "\n").version != plain.version


def test_version_label_as_toml_date() -> None:
    catalog = parse_catalog("version = 2026-11-01\n" + MINIMAL)
    assert catalog.label == "2026-11-01" and catalog.version.startswith("2026-11-01+")


def test_public_dict_is_json_safe() -> None:
    public = default_catalog().to_public_dict()
    round_trip = json.loads(json.dumps(public))
    assert round_trip == public
    assert public["credits"] == {
        "unit": "credit",
        "per_credit": 1,
        "rounding": "up",
        "ledger_unit": "credit",
        "value": {},
    }
    meters = {m["key"]: m for m in public["meters"]}
    assert meters["api_call"]["price"] == {"model": "flat", "amount": "1"}
    assert meters["llm_tokens"]["price"]["models"]["gpt-4o"] == {"input": "2500", "output": "10000"}
    plans = {p["key"]: p for p in public["plans"]}
    assert plans["pro"]["prices"] == {"usd": 2900, "eur": 2700}
    assert plans["free"]["caps"][0]["limit"] == "25"
    assert public["anonymous"] == {"allowance": 0}


def test_load_catalog_from_file(tmp_path: Path) -> None:
    path = tmp_path / "tollkeep.toml"
    path.write_text(MINIMAL, encoding="utf-8")
    catalog = load_catalog(path)
    assert catalog.source == str(path)
    assert catalog.meters["api_call"].price is not None


def test_load_missing_file_is_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError) as info:
        load_catalog(tmp_path / "missing.toml")
    assert "cannot read file" in info.value.message


# --- numbers ---------------------------------------------------------------------


def test_prices_as_strings_and_decimals_never_floats() -> None:
    catalog = parse_catalog(
        """
[meters.a.price]
model = "per_unit"
unit_price = "0.0025"
[meters.b.price]
model = "per_unit"
unit_price = 0.1
per = 1_000
"""
    )
    a, b = catalog.meters["a"].price, catalog.meters["b"].price
    assert a is not None and a.unit_price == D("0.0025") and isinstance(a.unit_price, D)
    assert b is not None and b.unit_price == D("0.1") and b.per == D(1000)


def test_tiers_parse_with_inf_and_omitted_last_up_to() -> None:
    for last in ('up_to = "inf", ', "up_to = inf, ", ""):
        catalog = parse_catalog(
            f"""
[meters.g]
aggregation = "sum"
[meters.g.price]
model = "graduated"
tiers = [{{up_to = 10, unit_price = 0}}, {{{last}unit_price = "0.5", flat = 2}}]
"""
        )
        price = catalog.meters["g"].price
        assert price is not None
        assert price.tiers == (Tier(D(10), D(0), D(0)), Tier(None, D("0.5"), D(2)))


# --- validation errors -----------------------------------------------------------


def test_syntax_error_has_line_and_column() -> None:
    issues = issues_of('[credits]\nunit = "credit"\nper_credit = = 1\n')
    assert len(issues) == 1
    assert issues[0]["line"] == 3 and "column" in issues[0]
    assert "TOML syntax error" in str(issues[0]["reason"])


def test_unknown_keys_with_did_you_mean() -> None:
    issues = issues_of(
        """
versoin = "x"
[credits]
rounding_rule = "up"
[meters.api_call]
aggregaton = "count"
[meters.api_call.price]
model = "flat"
amount = 1
amout = 2
"""
    )
    by_key = {i["key"]: str(i["reason"]) for i in issues}
    assert "did you mean 'version'" in by_key["versoin"]
    assert "did you mean 'rounding'" in by_key["credits.rounding_rule"]
    assert "did you mean 'aggregation'" in by_key["meters.api_call.aggregaton"]
    assert "did you mean 'amount'" in by_key["meters.api_call.price.amout"]


def test_all_issues_collected_at_once() -> None:
    issues = issues_of(
        """
default_plan = "gold"
[credits]
rounding = "nearest"
per_credit = 0
[anonymous]
allowance = -5
[meters.api_call.price]
model = "flat"
amount = -1
[meters.u]
aggregation = "unique_count"
[meters.s]
aggregation = "sum"
property = "x"
[meters.p.price]
model = "per_unit"
unit_price = "abc"
[meters.pk.price]
model = "package"
package_size = 0
package_price = 1
[meters.typo.price]
model = "flatt"
"""
    )
    assert keys(issues) >= {
        "default_plan",
        "credits.rounding",
        "credits.per_credit",
        "anonymous.allowance",
        "meters.api_call.price.amount",
        "meters.u.property",
        "meters.s.property",
        "meters.p.price.unit_price",
        "meters.pk.price.package_size",
        "meters.typo.price.model",
    }
    reasons = {i["key"]: str(i["reason"]) for i in issues}
    assert "negative" in reasons["meters.api_call.price.amount"]
    assert "did you mean 'flat'" in reasons["meters.typo.price.model"]


def test_wrong_types() -> None:
    issues = issues_of(
        """
[credits]
unit = 5
per_credit = "1"
[meters.a]
aggregation = "count"
description = ["x"]
[meters.a.price]
model = "flat"
amount = true
[plans.p]
features = "basic"
prices = { usd = 29.5 }
trial_days = "3"
"""
    )
    assert keys(issues) >= {
        "credits.unit",
        "credits.per_credit",
        "meters.a.description",
        "meters.a.price.amount",
        "plans.p.features",
        "plans.p.prices.usd",
        "plans.p.trial_days",
    }


def test_tier_rules() -> None:
    issues = issues_of(
        """
[meters.g.price]
model = "graduated"
tiers = [{up_to = 100, unit_price = 1}, {up_to = 50, unit_price = 1}, {up_to = 200, unit_price = 1}]
[meters.h.price]
model = "volume"
tiers = [{up_to = "inf", unit_price = 1}, {unit_price = 2}]
[meters.e.price]
model = "graduated"
tiers = []
[meters.n.price]
model = "graduated"
tiers = [{unit_price = 1}, {up_to = "inf", unit_price = -1}]
"""
    )
    reasons = {i["key"]: str(i["reason"]) for i in issues}
    assert "ascending" in reasons["meters.g.price.tiers[1].up_to"]
    assert "open-ended" in reasons["meters.g.price.tiers[2].up_to"]
    assert "only the last tier" in reasons["meters.h.price.tiers[0].up_to"]
    assert "non-empty" in reasons["meters.e.price.tiers"]
    assert "required" in reasons["meters.n.price.tiers[0].up_to"]
    assert "negative" in reasons["meters.n.price.tiers[1].unit_price"]


def test_price_model_field_rules() -> None:
    issues = issues_of(
        """
[meters.a.price]
model = "flat"
unit_price = 1
[meters.b.price]
model = "per_unit"
[meters.c.price]
amount = 1
"""
    )
    reasons = {i["key"]: str(i["reason"]) for i in issues}
    assert 'not used by price model "flat"' in reasons["meters.a.price.unit_price"]
    assert "required" in reasons["meters.a.price.amount"]
    assert "required" in reasons["meters.b.price.unit_price"]
    assert "required" in reasons["meters.c.price.model"]


def test_tokens_validation() -> None:
    issues = issues_of(
        """
[meters.t]
aggregation = "count"
[meters.t.price]
model = "tokens"
per = 1000000
[meters.t.price.models."gpt-4.1"]
input = 1
output = 2
[meters.u]
aggregation = "sum"
[meters.u.price]
model = "tokens"
[meters.v]
aggregation = "sum"
[meters.v.price]
model = "tokens"
[meters.v.price.models.m]
input = "x"
outptu = 1
"""
    )
    reasons = {i["key"]: str(i["reason"]) for i in issues}
    assert "sum" in reasons["meters.t.aggregation"]
    assert "at least one model" in reasons["meters.u.price.models"]
    assert "meters.v.price.models.m.input" in reasons
    assert "meters.v.price.models.m.output" in reasons
    assert "did you mean 'output'" in reasons["meters.v.price.models.m.outptu"]
    # keys needing quotes are quoted in issue keys
    ok = parse_catalog(
        """
[meters.t]
aggregation = "sum"
[meters.t.price]
model = "tokens"
[meters.t.price.models."gpt-4.1"]
input = 1
output = 2
"""
    )
    assert "gpt-4.1" in ok.meters["t"].price.models  # type: ignore[union-attr]
    bad = issues_of(
        """
[meters.t]
aggregation = "sum"
[meters.t.price]
model = "tokens"
[meters.t.price.models."gpt-4.1"]
input = 1
output = -2
"""
    )
    assert keys(bad) == {'meters.t.price.models."gpt-4.1".output'}


def test_plan_rules() -> None:
    issues = issues_of(
        MINIMAL
        + """
[plans.free]
period = "week"
max_machines = 0
features = ["a", "a"]
prices = { dollars = 5 }
[plans.free.allowance]
amount = -1
period = "year"
[[plans.free.caps]]
meter = "api_cal"
limit = 5
[[plans.free.caps]]
meter = "api_call"
limit = -5
mode = "soft"
period = "week"
[[plans.free.caps]]
meter = "api_call"
limit = 5
[[plans.free.caps]]
meter = "api_call"
limit = 6
"""
    )
    reasons = {i["key"]: str(i["reason"]) for i in issues}
    assert "plans.free.period" in reasons
    assert "plans.free.max_machines" in reasons
    assert "duplicate feature" in reasons["plans.free.features[1]"]
    assert "ISO 4217" in reasons["plans.free.prices.dollars"]
    assert "plans.free.allowance.amount" in reasons
    assert "plans.free.allowance.period" in reasons
    assert "did you mean 'api_call'" in reasons["plans.free.caps[0].meter"]
    assert "negative" in reasons["plans.free.caps[1].limit"]
    assert "plans.free.caps[1].mode" in reasons
    assert "plans.free.caps[1].period" in reasons
    assert "duplicate cap" in reasons["plans.free.caps[3]"]


def test_default_plan_existing_but_invalid_is_not_reported_as_unknown() -> None:
    issues = issues_of('default_plan = "free"\n[meters.m]\n[plans.free]\nperiod = "week"\n')
    assert keys(issues) == {"plans.free.period"}


def test_invalid_names() -> None:
    issues = issues_of('[meters."bad key"]\naggregation = "count"\n[plans."a b"]\n')
    assert keys(issues) == {'meters."bad key"', 'plans."a b"'}


def test_plan_defaults_and_is_free() -> None:
    catalog = parse_catalog(
        MINIMAL
        + """
[plans.zero]
prices = { usd = 0 }
[plans.paid]
period = "year"
prices = { USD = 29000 }
[[plans.paid.caps]]
meter = "api_call"
limit = 1000
"""
    )
    zero, paid = catalog.plans["zero"], catalog.plans["paid"]
    assert zero.is_free and zero.name == "zero" and zero.allowance is None
    assert not paid.is_free and dict(paid.prices) == {"usd": 29000} and paid.period == "year"
    assert paid.caps[0].mode == "hard" and paid.caps[0].period == "month" and paid.caps[0].limit == D(1000)
    assert paid.caps_for("api_call") == paid.caps
    assert catalog.default_plan is None and catalog.anonymous.allowance == 0


def test_issue_file_defaults_to_placeholder() -> None:
    with pytest.raises(CatalogError) as info:
        parse_catalog("[credits]\nrounding = 1\n")
    assert info.value.details["issues"][0]["file"] == "<catalog>"


def test_an_empty_catalog_is_not_valid() -> None:
    assert keys(issues_of("")) == {"meters"}
    assert keys(issues_of('version = "v1"\n')) == {"meters"}


def test_the_first_example_of_the_catalog_docs_is_valid() -> None:
    import re

    docs = (Path(__file__).parents[2] / "docs" / "catalog.md").read_text()
    first = re.findall(r"```toml\n(.*?)```", docs, re.S)[0]
    catalog = parse_catalog(first)
    assert catalog.default_plan == "free" and set(catalog.plans) == {"free", "pro"}
