"""Driver errors mapped to eventcore's hierarchy, by class (never by message text)."""

from __future__ import annotations

import asyncpg.exceptions as pgerr
from asyncpg.exceptions import _base as pgbase

from eventcore.errors import EventCoreError, StoreError, StoreUnavailable

_UNAVAILABLE = (
    OSError,  # refused, reset, and TimeoutError (asyncio.TimeoutError) too
    pgerr.PostgresConnectionError,  # class 08, including ConnectionDoesNotExistError
    pgerr.OperatorInterventionError,  # class 57: admin shutdown, crash, cannot connect now,
    # and query_canceled (statement_timeout)
    pgerr.TooManyConnectionsError,
    pgerr.TransactionRollbackError,  # class 40: serialization failure, deadlock
    pgbase.InterfaceError,  # the connection closed under us (asyncpg may then raise its
    # InternalClientError "cannot switch to state ..."): retrying an idempotent append is safe
    pgbase.InternalClientError,
)
_NOT_UNAVAILABLE = (pgbase.DataError,)  # bad query input, raised before anything is sent


def translate(exc: BaseException, action: str) -> EventCoreError:
    """Map a driver error to eventcore's hierarchy, by class (never by message text)."""
    if isinstance(exc, EventCoreError):
        return exc
    if isinstance(exc, _UNAVAILABLE) and not isinstance(exc, _NOT_UNAVAILABLE):
        return StoreUnavailable(f"PostgreSQL unavailable during {action}: {exc!r}")
    if isinstance(
        exc, pgerr.UndefinedTableError | pgerr.UndefinedFunctionError | pgerr.InvalidSchemaNameError
    ):
        return StoreError(
            f"PostgreSQL store schema is missing during {action} ({exc}); "
            "run `await store.migrate()` first"
        )
    return StoreError(f"PostgreSQL error during {action}: {exc!r}")
