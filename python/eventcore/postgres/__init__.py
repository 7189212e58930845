"""The PostgreSQL event store (needs ``asyncpg``: ``pip install 'eventcore-py[postgres]'``).

>>> store = await PostgresStore.connect("postgresql://app@db/app")  # doctest: +SKIP
>>> await store.migrate()  # doctest: +SKIP
"""

from __future__ import annotations

from eventcore.postgres.store import (
    MAX_EVENTS_PER_APPEND,
    MAX_PAYLOAD_BYTES,
    LogHoldback,
    PostgresStore,
)

__all__ = ["MAX_EVENTS_PER_APPEND", "MAX_PAYLOAD_BYTES", "LogHoldback", "PostgresStore"]
