"""Payment provider adapters behind one protocol (:mod:`.base`), and the registry of the ones
this server is configured for."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable

from tollkeep.config import Settings
from tollkeep.kit.errors import NotFound
from tollkeep.payments.providers.base import Provider, ProviderNotConfigured
from tollkeep.payments.providers.local import LocalProvider
from tollkeep.subscriptions import InvoiceProvider

__all__ = ["KNOWN", "Providers", "local_enabled", "public_url"]

log = logging.getLogger("tollkeep.payments")

# provider name -> the module with its ``from_settings(settings) -> Provider | None``
KNOWN: dict[str, str] = {
    "stripe": "tollkeep.payments.providers.stripe",
    "btcpay": "tollkeep.payments.providers.btcpay",
    "zaprite": "tollkeep.payments.providers.zaprite",
    "github": "tollkeep.payments.providers.github",
}


def public_url(settings: Settings) -> str:
    if settings.public_url:
        return settings.public_url.rstrip("/")
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    return f"http://{host}:{settings.port}"


def local_enabled(settings: Settings, real: int) -> bool:
    """The local provider: on when asked; unset, on in development when no real provider is."""
    if settings.local_payments is not None:
        return settings.local_payments
    return settings.env != "production" and real == 0


class Providers:
    """The configured providers, by name. ``register`` adds one (tests, embedding code)."""

    def __init__(self, settings: Settings) -> None:
        self._by_name: dict[str, Provider] = {}
        for name, module in KNOWN.items():
            try:
                factory: Callable[[Settings], Provider | None] = importlib.import_module(module).from_settings
            except ModuleNotFoundError:
                continue
            provider = factory(settings)
            if provider is not None:
                self._by_name[name] = provider
        if local_enabled(settings, len(self._by_name)):
            self._by_name["local"] = LocalProvider(public_url(settings))

    def register(self, provider: Provider) -> None:
        self._by_name[provider.name] = provider

    def get(self, name: str) -> Provider:
        provider = self._by_name.get(name)
        if provider is not None:
            return provider
        if name in KNOWN or name == "local":
            raise ProviderNotConfigured(
                f"payment provider {name!r} is not configured on this server (see docs/payments.md)",
                details={"provider": name},
            )
        raise NotFound(
            f"unknown payment provider {name!r} (known: {', '.join([*KNOWN, 'local'])})",
            code="unknown_provider",
            details={"provider": name},
        )

    def invoice_providers(self) -> list[InvoiceProvider]:
        """The configured providers that also create subscriptions' renewal and upgrade invoices
        (BTCPay, Zaprite: ``create_invoice``); Stripe bills its own subscriptions."""
        return [p for p in self._by_name.values() if isinstance(p, InvoiceProvider)]

    def names(self) -> list[str]:
        return list(self._by_name)

    def default(self) -> str | None:
        """The provider a checkout uses when none is named: the first configured that sells
        through checkouts (GitHub sells on its Marketplace)."""
        for name in ("stripe", "btcpay", "zaprite", "local"):
            if name in self._by_name:
                return name
        return None
