"""The catalog's [gateway] and [tools."<server>/<tool>"] sections: parsed, validated with clear
errors, and resolved (own price, upstream's, default, refused)."""

from __future__ import annotations

import pytest

from tollkeep.catalog import CatalogError, default_catalog, parse_catalog

BASE = """
[meters.api_call]
aggregation = "count"
[meters.results]
aggregation = "sum"
[meters.results.price]
model = "per_unit"
unit_price = 1
[plans.pro]
features = ["pro"]
"""


def issues(text: str) -> list[str]:
    with pytest.raises(CatalogError) as exc:
        parse_catalog(BASE + text)
    return [f"{i['key']}: {i['reason']}" for i in exc.value.issues]


def test_prices_resolve_own_then_upstream_then_default() -> None:
    cat = parse_catalog(
        BASE
        + """
[gateway]
unpriced = "default"
default_price = 2
description_suffix = " (costs {price})"
[tools."docs/search"]
price = 5
[tools."docs/*"]
price = 1
[tools."docs/echo"]
free = true
[tools."docs/fetch"]
meter = "results"
quantity = "arguments.page.size"
feature = "pro"
[tools."docs/scan"]
meter = "results"
quantity = "result.count"
hold = 10
charge_errors = true
"""
    )
    tools = cat.tools
    assert tools.price_of("docs", "search").price == 5  # type: ignore[union-attr]
    assert tools.price_of("docs", "other").price == 1  # type: ignore[union-attr]
    assert tools.price_of("web", "x").price == 2  # type: ignore[union-attr]
    echo = tools.price_of("docs", "echo")
    assert echo is not None and echo.free and echo.price == 0
    fetch = tools.price_of("docs", "fetch")
    assert (
        fetch is not None and fetch.quantity_source == "arguments" and fetch.quantity_path == ("page", "size")
    )
    scan = tools.price_of("docs", "scan")
    assert scan is not None and scan.hold == 10 and scan.charge_errors
    assert tools.description_suffix == " (costs {price})"


def test_unpriced_tools_are_refused_by_default() -> None:
    assert default_catalog().tools.price_of("any", "tool") is None
    assert parse_catalog(BASE).tools.unpriced == "refuse"


def test_mistakes_are_reported_with_the_key_and_the_reason() -> None:
    found = issues(
        """
[gateway]
unpriced = "defualt"
description_suffix = "no placeholder"
[tools."no-slash"]
price = 1
[tools."a/both"]
price = 1
free = true
[tools."a/none"]
charge_errors = true
[tools."a/meter"]
meter = "nope"
[tools."a/result"]
meter = "results"
quantity = "result.count"
[tools."a/bad-source"]
meter = "results"
quantity = "headers.n"
[tools."a/feature"]
price = 1
feature = "gold"
[tools."a/typo"]
prise = 1
"""
    )
    text = "\n".join(found)
    assert "gateway.unpriced: must be one of 'refuse', 'default'" in text and "did you mean 'default'" in text
    assert 'gateway.description_suffix: must contain "{price}"' in text
    assert "tools.no-slash: invalid tool key" in text
    assert 'tools."a/both": give one of price, free = true, or meter + quantity' in text
    assert 'tools."a/none": needs a price' in text
    assert "tools.\"a/meter\".meter: unknown meter 'nope'" in text
    assert 'tools."a/meter".quantity: is required with meter' in text
    assert 'tools."a/result".hold: is required with a quantity from the result' in text
    assert 'tools."a/bad-source".quantity: expected "arguments.<path>" or "result.<path>"' in text
    assert "tools.\"a/feature\".feature: no plan has the feature 'gold' (known: pro)" in text
    assert "tools.\"a/typo\".prise: unknown key in a tool price; did you mean 'price'?" in text


def test_default_pricing_needs_a_default_price() -> None:
    assert any("gateway.default_price: is required" in i for i in issues('[gateway]\nunpriced = "default"\n'))
