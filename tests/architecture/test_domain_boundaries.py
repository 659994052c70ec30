"""The layout's rules, checked on the source: each domain writes only its own tables, SQL
writes live in repositories, and a domain reaches another only through its public surface.

What each domain owns is written in its README's Boundaries paragraph; this is that table,
enforced. A change that needs another domain's table goes through that domain's functions.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "tollkeep"
DOMAINS = (
    "audit",
    "catalog",
    "customers",
    "funnel",
    "gateway",
    "keys",
    "ledger",
    "licensing",
    "operators",
    "outbox",
    "payments",
    "plans",
    "pricing",
    "subscriptions",
    "webhooks",
)
# table -> the domains that may write it (column-level sharing is asserted in the repositories:
# plans writes only customers.plan/plan_changed_at and wallets.allowance_until/carryover_done)
WRITERS = {
    "catalog_versions": {"catalog"},
    "customers": {"customers", "plans"},
    "api_keys": {"keys"},
    "wallets": {"ledger", "plans"},
    "grants": {"ledger"},
    "operations": {"ledger"},
    "journal_entries": {"ledger"},
    "holds": {"ledger"},
    "usage_counters": {"ledger"},
    "unique_values": {"ledger"},
    "key_spend": {"ledger"},
    "outbox_events": {"outbox"},
    "operator_keys": {"operators"},
    "audit_log": {"audit"},
    "inbox_events": {"payments"},
    "checkouts": {"payments"},
    "payments": {"payments"},
    "payment_refunds": {"payments"},
    "provider_customers": {"payments"},
    "funnel_events": {"funnel"},
    "funnel_cursors": {"funnel"},
    "webhook_endpoints": {"webhooks"},
    "webhook_deliveries": {"webhooks"},
    "webhook_attempts": {"webhooks"},
    "license_signing_keys": {"licensing"},
    "licenses": {"licensing"},
    "license_machines": {"licensing"},
    "gateway_calls": {"gateway"},
    "subscriptions": {"subscriptions"},
    "invoices": {"subscriptions"},
    "plan_changes": {"subscriptions"},
    "codes": {"subscriptions"},
    "code_redemptions": {"subscriptions"},
}
# what a domain may import from another domain: its package (the public surface, __all__) and
# its tables (read models and joins)
ALLOWED_SUBMODULES = {"models"}


def domain_of(path: Path) -> str | None:
    rel = path.relative_to(SRC).parts
    return rel[0] if len(rel) > 1 and rel[0] in DOMAINS else None


def modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "migrations" not in p.parts)


def table_aliases(tree: ast.Module, module: str) -> dict[str, str]:
    """``K = table_of(ApiKey)`` → {"K": "api_keys"}, resolving the model by its import."""
    imported: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.endswith(".models"):
            for a in node.names:
                imported[a.asname or a.name] = node.module
    out: dict[str, str] = {}
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
            and node.value.func.id == "table_of"
            and isinstance(node.value.args[0], ast.Name)
        ):
            model_name = node.value.args[0].id
            mod = importlib.import_module(imported.get(model_name, module))
            table = getattr(mod, model_name).__tablename__
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = table
    return out


def writes(path: Path) -> list[tuple[int, str]]:
    """(line, table) of every insert/update/delete of a known table in a module."""
    tree = ast.parse(path.read_text())
    module = "tollkeep." + ".".join(path.relative_to(SRC).with_suffix("").parts)
    aliases = table_aliases(tree, module)
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in {"insert", "update", "delete", "_insert_all"}
            and node.args
            and isinstance(node.args[0], ast.Name)
            and node.args[0].id in aliases
        ):
            found.append((node.lineno, aliases[node.args[0].id]))
    return found


def test_every_table_has_its_writers_declared() -> None:
    from tollkeep.kit.schema import metadata

    assert set(metadata.tables) <= set(WRITERS), set(metadata.tables) - set(WRITERS)


def test_sql_writes_live_in_repositories_of_the_owning_domain() -> None:
    problems = []
    seen = 0
    for path in modules():
        for line, table in writes(path):
            seen += 1
            where = f"{path.relative_to(SRC)}:{line}"
            if path.name != "repository.py":
                problems.append(f"{where} writes {table} outside a repository.py")
            if domain_of(path) not in WRITERS.get(table, set()):
                problems.append(f"{where} writes {table}, owned by {sorted(WRITERS.get(table, ()))}")
    assert seen > 10, "the check found (almost) no writes: it is not looking at the code"
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("domain", DOMAINS)
def test_a_domain_uses_another_only_through_its_public_surface(domain: str) -> None:
    problems = []
    for path in (SRC / domain).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom) or not node.module:
                continue
            parts = node.module.split(".")
            if parts[0] != "tollkeep" or len(parts) < 2 or parts[1] not in DOMAINS or parts[1] == domain:
                continue
            if len(parts) > 2 and parts[2] not in ALLOWED_SUBMODULES:
                problems.append(f"{path.relative_to(SRC)}:{node.lineno} imports {node.module}")
            if len(parts) == 2:
                surface = set(getattr(importlib.import_module(node.module), "__all__", ()))
                for a in node.names:
                    if a.name not in surface:
                        problems.append(
                            f"{path.relative_to(SRC)}:{node.lineno} uses private {node.module}.{a.name}"
                        )
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("domain", DOMAINS)
def test_each_domain_declares_its_public_surface_and_boundaries(domain: str) -> None:
    pkg = importlib.import_module(f"tollkeep.{domain}")
    assert getattr(pkg, "__all__", None), f"tollkeep.{domain} has no __all__"
    readme = SRC / domain / "README.md"
    assert readme.exists(), f"{domain} has no README.md"
    assert "Boundaries" in readme.read_text(), f"{domain}/README.md has no Boundaries paragraph"


def test_no_test_imports_another_test_module() -> None:
    tests = SRC.parents[1] / "tests"
    problems = []
    for path in tests.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            for name in names:
                if any(part.startswith("test_") for part in name.split(".")):
                    problems.append(f"{path.relative_to(tests)}:{node.lineno} imports {name}")
    assert not problems, "\n".join(problems)
