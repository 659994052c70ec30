"""Every domain's tables on the one MetaData (for Alembic and tests): import this module to
have them all registered."""

from __future__ import annotations

from tollkeep.audit import models as _audit
from tollkeep.catalog import models as _catalog
from tollkeep.customers import models as _customers
from tollkeep.funnel import models as _funnel
from tollkeep.gateway import models as _gateway
from tollkeep.keys import models as _keys
from tollkeep.kit.models import Base
from tollkeep.ledger import models as _ledger
from tollkeep.licensing import models as _licensing
from tollkeep.operators import models as _operators
from tollkeep.outbox import models as _outbox
from tollkeep.payments import models as _payments
from tollkeep.subscriptions import models as _subscriptions
from tollkeep.webhooks import models as _webhooks

__all__ = ["metadata"]

metadata = Base.metadata
DOMAINS = (
    _audit,
    _catalog,
    _customers,
    _funnel,
    _gateway,
    _keys,
    _ledger,
    _licensing,
    _operators,
    _outbox,
    _payments,
    _subscriptions,
    _webhooks,
)
