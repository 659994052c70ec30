"""Customers: who pays (external id, contact, status), anonymous install ids.

The service is imported lazily: other domains' repositories join the ``customers`` table
(``tollkeep.customers.models``), and importing the package must not pull in the service and
its dependencies (the ledger, plans) while those are still loading.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tollkeep.customers.events import CustomerCreated, CustomerStatusChanged  # only kit

if TYPE_CHECKING:
    from tollkeep.customers.queries import customer_view
    from tollkeep.customers.service import CustomerService

__all__ = ["CustomerCreated", "CustomerService", "CustomerStatusChanged", "customer_view"]


def __getattr__(name: str) -> Any:
    if name == "CustomerService":
        from tollkeep.customers.service import CustomerService

        return CustomerService
    if name == "customer_view":
        from tollkeep.customers.queries import customer_view

        return customer_view
    raise AttributeError(name)
