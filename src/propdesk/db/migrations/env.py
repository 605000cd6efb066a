"""Alembic environment: raw-SQL migrations run as the migration owner role.

The caller (``propdesk.db.migrate``) passes an open SQLAlchemy connection in ``config.attributes`` after
``SET ROLE <prefix>_owner`` so every object is owned by the owner role, never by the login user.
"""

from alembic import context

config = context.config
connection = config.attributes["connection"]
context.configure(connection=connection, transaction_per_migration=True)
with context.begin_transaction():
    context.run_migrations()
