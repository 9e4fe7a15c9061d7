"""The migrations and the models must describe the same schema, on both databases."""

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlmodel import SQLModel

from core import models  # noqa: F401


def test_migrations_match_models(engine):
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                SQLModel.metadata)
    assert diff == [], f"models and migrations disagree: {diff}"


def test_migrate_is_idempotent_and_reaches_head(engine):
    from alembic.script import ScriptDirectory

    from core.db import alembic_config, migrate

    head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
    assert migrate(engine) == head
    assert migrate(engine) == head
