"""Alembic environment for objstore's databases.

objstore runs migrations itself (``objstore.db.migrate``), handing a connection in
``config.attributes["connection"]`` whose transaction it already began, so that a whole upgrade is one
transaction and concurrent first opens serialise. To write a new revision by hand:
``alembic -c migrations/alembic.ini -x url=sqlite:////tmp/dev.db revision -m "..."``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from objstore.db.schema import VERSION_TABLE, metadata  # the schema, for comparisons

config = context.config


def _configure(connection: object) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,  # private: never collides with a host application's alembic_version
        render_as_batch=True,  # SQLite cannot ALTER most things; batch mode rebuilds tables instead
        transactional_ddl=True,
        compare_type=True,
    )


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("pass the database with: alembic -x url=sqlite:////path/to/db ...")
    engine = create_engine(url)
    with engine.begin() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("objstore migrations run online only")
run_migrations_online()
