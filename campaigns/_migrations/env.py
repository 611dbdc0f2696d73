"""Alembic environment for the campaign store; run programmatically by ``_migrate.upgrade``.

The caller passes an open SQLAlchemy connection in ``config.attributes['connection']``.
"""

from alembic import context

from campaigns._schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
