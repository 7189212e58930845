"""The PostgreSQL store (needs ``asyncpg``: ``pip install 'eventcore-py[postgres]'``).

>>> store = await PostgresStore.connect("postgresql://app@db/app")  # doctest: +SKIP
>>> await store.migrate()  # doctest: +SKIP

What lives where: :mod:`eventcore.postgres.store` the store (appends, reads, folds,
migrations), ``_sync`` :class:`SyncPostgresStore` (the store for synchronous code),
:mod:`eventcore.postgres.checkpoint` projection checkpoints, dead letters and
leader leases, ``_notify`` the post-commit NOTIFY and the LISTEN side, ``_pool`` the
connection pool, ``_sql`` every statement, ``migrations/`` the versioned schema.

The names load on first use, so ``eventcore.postgres.checkpoint`` (re-exported by
``eventcore.projection``) imports without asyncpg.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventcore.postgres._sync import SyncPostgresStore
    from eventcore.postgres.checkpoint import PostgresCheckpointStore
    from eventcore.postgres.store import (
        MAX_EVENTS_PER_APPEND,
        MAX_PAYLOAD_BYTES,
        LogHoldback,
        PostgresStore,
        ReplicaStatus,
    )

__all__ = [
    "MAX_EVENTS_PER_APPEND",
    "MAX_PAYLOAD_BYTES",
    "LogHoldback",
    "PostgresCheckpointStore",
    "PostgresStore",
    "ReplicaStatus",
    "SyncPostgresStore",
]

_WHERE = {
    "MAX_EVENTS_PER_APPEND": "eventcore.postgres.store",
    "MAX_PAYLOAD_BYTES": "eventcore.postgres.store",
    "LogHoldback": "eventcore.postgres.store",
    "PostgresStore": "eventcore.postgres.store",
    "ReplicaStatus": "eventcore.postgres.store",
    "PostgresCheckpointStore": "eventcore.postgres.checkpoint",
    "SyncPostgresStore": "eventcore.postgres._sync",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'eventcore.postgres' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
