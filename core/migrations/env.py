"""Alembic environment: runs against the engine handed over by core.db.migrate."""

from alembic import context
from sqlmodel import SQLModel

from core import models  # noqa: F401 - registers every table on SQLModel.metadata
from core.db import get_engine

config = context.config
target_metadata = SQLModel.metadata


def run_migrations_online() -> None:
    engine = config.attributes.get("engine") or get_engine()
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=engine.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations_online()
