"""An app for the multi-process tests: a PostgreSQL store whose registry shreds.

Configured from the environment (``SHRED_DSN``, ``SHRED_SCHEMA``), so a subprocess can
load it with ``eventcore ... --app tests.shred.pg_app:app``.
"""

from __future__ import annotations

import os

from eventcore.postgres import PostgresStore
from eventcore.shredding.postgres import PostgresKeyStore
from tests.shred.domain import make_registry


class App:
    """The ``--app`` object: a PostgresStore with the shredding registry, and its keys."""

    def __init__(self) -> None:
        dsn, schema = os.environ["SHRED_DSN"], os.environ["SHRED_SCHEMA"]
        self.keys = PostgresKeyStore(dsn, schema=schema)
        self.store = PostgresStore(dsn, schema=schema, registry=make_registry(self.keys))


def app() -> App:
    """Built when the CLI loads it (the environment is read then)."""
    return App()
