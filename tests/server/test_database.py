"""The database layer's own failures: someone else's schema, and a database that cannot be reached."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError

from hokusai.errors import HokusaiConfigurationError
from hokusai.server.db import Database


def test_a_database_with_another_applications_schema_version_is_refused_in_one_sentence(tmp_path: Path) -> None:
    # MLflow's tracking store keeps its schema version in the same `alembic_version` table as Hokusai.
    path = tmp_path / "mlflow.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)")
        connection.execute("INSERT INTO alembic_version VALUES ('dc11669786a5')")

    with pytest.raises(HokusaiConfigurationError) as refused:
        Database(f"sqlite:///{path}")

    assert str(refused.value).startswith("The database of HOKUSAI_DATABASE_URL is not a Hokusai database this ")
    assert "dc11669786a5" in str(refused.value) and refused.value.__cause__ is None


def test_ping_says_when_the_database_cannot_be_reached(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'hokusai.db'}")
    database.ping()
    database.engine.dispose()  # no pooled connection keeps the old file open
    (tmp_path / "hokusai.db").unlink()
    (tmp_path / "hokusai.db").mkdir()  # a directory where the file was: SQLite cannot open it

    with pytest.raises(OperationalError):
        database.ping()
