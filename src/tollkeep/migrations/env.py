from __future__ import annotations

from alembic import context

from tollkeep.kit.schema import metadata

target_metadata = metadata
connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - run through tollkeep.kit.migrate
    raise RuntimeError("run migrations with `tollkeep migrate`")

context.configure(
    connection=connection,
    target_metadata=target_metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
