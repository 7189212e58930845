"""Driver errors mapped to eventcore's hierarchy, by class (never by message text)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg.exceptions as pgerr
from asyncpg.exceptions import _base as pgbase

from eventcore.errors import EventCoreError, OutcomeUnknown, StoreError, StoreUnavailable

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


# After the request was sent, a lost link leaves the outcome unknown: the server may have
# committed and the reply never arrived. An error the server reported (any PostgresError
# but the client-side ConnectionDoesNotExistError) means the statement failed and, in
# its own implicit transaction, rolled back: nothing written.
_LINK_LOST = (
    OSError,  # reset, broken pipe, and TimeoutError (command_timeout: the client gave up)
    pgerr.ConnectionDoesNotExistError,  # "connection was closed in the middle of operation"
    pgbase.InterfaceError,
    pgbase.InternalClientError,
)


def translate(exc: BaseException, action: str, sent: Sequence[Any] | None = None) -> EventCoreError:
    """Map a driver error to eventcore's hierarchy, by class (never by message text).

    ``sent``: the event ids of an append whose request may have reached the server; a
    lost link then becomes :class:`OutcomeUnknown` carrying them. ``None`` = nothing was
    sent (e.g. no connection could be had), so a failure means nothing was written.
    """
    if isinstance(exc, EventCoreError):
        return exc
    if sent is not None and isinstance(exc, _LINK_LOST):
        return OutcomeUnknown(
            f"PostgreSQL link lost during {action}; it may have been written: {exc!r}", sent
        )
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
