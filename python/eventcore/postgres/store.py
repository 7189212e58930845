"""The PostgreSQL event store (asyncpg): atomic multi-stream appends and a gap-free global log.

Append
    One round trip: the ``append_events`` function (created by the migrations) checks
    idempotency, locks every stream involved in one fixed order (written streams
    exclusively, streams that were only read shared, so a read-only check stays true
    until commit), checks every expected version, and either returns the conflicts as
    rows of data (nothing written) or inserts the events and bumps the stream versions.
    Only locks on the streams involved are taken, so writers on distinct streams run
    concurrently. The common case (every checked stream is also written) is the stream
    locks plus ONE statement; the function's statements are planned once per connection
    (``plan_cache_mode = force_generic_plan``), not on every call. ``NOTIFY`` is sent
    after the commit, from the store's own connection, coalesced (see
    :class:`eventcore.postgres._notify.Notifier`): inside the append transaction it would
    serialize all commits on PostgreSQL's notify lock.

The global log never skips
    Positions are not taken from a sequence. An event's position is
    ``transaction id (xid8) * 2**20 + its index within the transaction``, computed inside
    the append function. Transaction ids are handed out in increasing order, so the
    position order *is* the transaction-id order, and the public cursor stays a single
    integer.

    :meth:`PostgresStore.read_all` and :meth:`PostgresStore.head` only see events below
    ``horizon * 2**20``, where the horizon is the oldest append of THIS store still in
    flight (migration 0003, ``log_horizon``):

    1. ``append_events`` locks the events table (``ROW EXCLUSIVE``) before its
       transaction takes an id, and refuses to run in a transaction that already holds
       one (:class:`~eventcore.ConfigurationError`). Every transaction that may still
       commit events therefore holds that lock from before its id until it ends.
    2. The reader takes a snapshot, then (same statement) scans ``pg_locks`` once:
       ``horizon = least(snapshot xmax, the smallest id among holders of that lock)``.
       An append without an id yet will get one at least ``xmax``; one with a smaller id
       is in the lock table, unless it has already ended.
    3. It reads the events in a SECOND statement, whose snapshot is newer than the scan,
       so an append that ended before the scan is visible to it.

    So every event below the bound that will ever commit is already visible: a reader
    that pages with ``after_position = last position seen`` never passes over an event
    that commits later, and writers are never serialized. Transactions that do not
    append to this store (another database, an idle session, a migration, a prepared
    transaction) do not hold readers back.

    Where that argument does not hold the bound falls back to the old, cluster-wide one,
    ``pg_snapshot_xmin(pg_current_snapshot())``, safe for any snapshot: inside a
    REPEATABLE READ or SERIALIZABLE transaction (the read reuses an older snapshot) and
    on a hot standby (its lock table does not show the primary's writers). PgBouncer's
    transaction pooling changes nothing: each read is one autocommit statement with no
    session state.

    Trade-offs:

    - Readers of the global log lag behind the oldest append of this store still in
      flight: a slow append, or a direct SQL caller that leaves a transaction open after
      calling ``append_events`` (or prepares it), withholds the events of later appends
      from :meth:`read_all`, :meth:`iter_all` and :meth:`head` (not lost) until it ends.
      :meth:`log_holdback` names it and its age; ``idle_in_transaction_session_timeout``
      and ``statement_timeout`` bound it. Finding the horizon reads the lock table (it
      takes every lock-manager partition lock, shared, for a moment): once per page or
      head poll.
    - Positions are strictly increasing but not contiguous, do not start at 1, and are
      large (about ``2**20`` per transaction). Within one append they are consecutive.
    - The delivery order is the order in which transactions began to write, not the
      commit order. Events of one stream are still delivered in version order: the append
      function takes per-stream advisory locks *before* its transaction gets an id, so a
      writer that waits for a stream gets its id (and positions) only after the previous
      writer of that stream has committed.
    - One transaction may write at most ``2**20`` events, and positions fit a bigint as
      long as the cluster's transaction ids stay below ``2**43`` (about 8.8 trillion).
    - :meth:`read_stream` and the command reads (:meth:`read_fold`) are not held
      back: they see every committed event.
    - :meth:`head` returns the highest position a reader may safely read up to (the last
      event below the bound), which can be lower than the newest committed position
      (:meth:`latest_position`).

Errors
    Driver errors never leak: a lost connection, a server restart, a statement timeout
    or a refused connection is :class:`~eventcore.StoreUnavailable` (retried by the
    executor; :class:`~eventcore.OutcomeUnknown`, with the event ids, when an append's
    link broke after its request was sent, so it may have committed), a conflict is
    :class:`~eventcore.ConcurrencyConflict` built from the
    function's answer, an event id reused for other content is
    :class:`~eventcore.DuplicateEventId`, a malformed DSN, a system schema or an append
    inside a caller's transaction :class:`~eventcore.ConfigurationError` (never retried),
    anything else :class:`~eventcore.StoreError`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from itertools import repeat
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import asyncpg
import asyncpg.exceptions as pgerr
import msgspec
from asyncpg.exceptions import _base as pgbase

from eventcore import _core
from eventcore._lifecycle import check_before, check_expected, check_purge, out_of_range
from eventcore.errors import (
    ConcurrencyConflict,
    ConditionFailed,
    ConfigurationError,
    DuplicateEventId,
    EventCoreError,
    StoreError,
    ValidationError,
)
from eventcore.metadata import EMPTY_METADATA, Metadata
from eventcore.postgres import _migrate
from eventcore.postgres._errors import translate
from eventcore.postgres._input import (
    MAX_EVENTS_PER_APPEND,
    MAX_PAYLOAD_BYTES,
    check_event_types,
    check_limit,
    check_stream_ids,
    prepare_events,
    prepare_expected,
    prepare_tags,
)
from eventcore.postgres._notify import Listener, Notifier
from eventcore.postgres._pool import ConnectionPool, PooledConnection, Slots
from eventcore.postgres._replicas import (
    PRIMARY_LSN,
    TIMELINE,
    ReadFrom,
    ReplicaSet,
    ReplicaStatus,
    is_replica_failure,
)
from eventcore.postgres._snapshot import PostgresSnapshotStore, SnapshotTail
from eventcore.postgres._sql import (
    DIRECT_READ_TAGS,
    Queries,
    channel,
    check_schema_name,
    migrations,
    query_arrays,
)
from eventcore.query import (
    AppendCondition,
    Query,
    QueryItem,
    QueryResult,
    lock_keys,
    query_arg,
)
from eventcore.recorded import (
    AppendResult,
    NewEvent,
    RecordedEvent,
    WriteToken,
    as_uuid,
    recorded_events,
)
from eventcore.registry import EventRegistry, default_registry
from eventcore.snapshot import SNAPSHOT_EVERY, Snapshotter
from eventcore.state_cache import DEFAULT_MAX_ENTRIES, StateCache, make_state_cache
from eventcore.store import (
    ColumnBuffers,
    Expected,
    FoldRows,
    LogHoldback,
    PurgeRecord,
    StreamBounds,
)

if TYPE_CHECKING:
    from eventcore.postgres.checkpoint import PostgresCheckpointStore

__all__ = [
    "MAX_EVENTS_PER_APPEND",
    "MAX_PAYLOAD_BYTES",
    "LogHoldback",
    "PostgresStore",
    "ReadFrom",
    "ReplicaStatus",
]


_json_encode = msgspec.json.encode
validate_stream_id = _core.validate_stream_id

# SQLSTATEs raised by append_events (migration 0003): called in a transaction that already
# holds a transaction id; input the API would have refused (a direct SQL caller).
_IN_CALLERS_TRANSACTION = "EC001"
_INPUT_REFUSED = "EC002"


def check_dsn(dsn: str) -> str:
    """Return ``dsn`` if it is a ``postgresql://`` URL asyncpg can parse, else raise.

    Several hosts are allowed (``postgresql://u@h1:5432,h2:5432/db``); with
    ``?target_session_attrs=read-write`` a connection goes to the one that accepts writes
    (libpq's semantics, which asyncpg follows): the store follows a failover.

    Raises:
        ConfigurationError: not a str, another scheme, a bad port or host syntax (the
            rest, such as a bad ``sslmode``, is refused the same way on first connect).
    """
    if not isinstance(dsn, str):
        raise ConfigurationError(f"dsn: must be a str, got {type(dsn).__name__}")
    try:
        parts = urlsplit(dsn)
        # Several hosts (host1:port1,host2:port2: tried in turn, for failover): each
        # port checked alone. .port raises ValueError for a bad or out-of-range one.
        for host in parts.netloc.rpartition("@")[2].split(","):
            _ = urlsplit(f"//{host}").port
    except ValueError as exc:
        raise ConfigurationError(f"malformed PostgreSQL DSN: {exc}") from exc
    if parts.scheme not in ("postgresql", "postgres"):
        raise ConfigurationError(
            "malformed PostgreSQL DSN: expected postgresql://user@host:port/database, "
            f"got the scheme {parts.scheme!r}"
        )
    return dsn


CARRIED_READ_LIMIT = 100
"""A failed condition carries the read after its position when it matches at most this
many events (a query command's retry then needs no read); more: the retry reads."""


def _stream_args(
    batch: list[tuple[str, str, bytes, Any]],
    expect: int,
    meta: Metadata,
    user_id: str | None,
    custom: str | None,
    *,
    one: bool = False,
) -> tuple[Any, ...]:
    """append_stream's nine parameters (migration 0013) for ``batch``, all of one stream;
    ``one``: the one event's id, type and payload as values, not arrays (the direct
    statements' one-event form), with no list built."""
    if one:
        e = batch[0]
        return (
            e[0],
            expect,
            _pg_id(e[3]),
            e[1],
            e[2],
            meta.causation_id,
            meta.correlation_id,
            user_id,
            custom,
        )
    return (
        batch[0][0],
        expect,
        [_pg_id(e[3]) for e in batch],
        [e[1] for e in batch],
        [e[2] for e in batch],
        meta.causation_id,
        meta.correlation_id,
        user_id,
        custom,
    )


def _events_args(
    batch: list[tuple[str, str, bytes, Any]],
    checks: list[tuple[str, int]],
    meta: Metadata,
    user_id: str | None,
    custom: str | None,
) -> tuple[Any, ...]:
    """append_events' ten parameters (the expected versions, then a stream per event) that
    append_events_tagged and append_tagged_streams begin with."""
    return (
        [c[0] for c in checks],
        [c[1] for c in checks],
        [_pg_id(e[3]) for e in batch],
        [e[0] for e in batch],
        [e[1] for e in batch],
        [e[2] for e in batch],
        meta.causation_id,
        meta.correlation_id,
        user_id,
        custom,
    )


_UUID_END = 1 << 128


def _pg_id(event_id: Any) -> Any:
    """An event id as asyncpg encodes it cheapest: an int as its 32 hex digits (parsed in
    C; a UUID object is encoded through its Python ``bytes`` property), a UUID as it is.
    An int out of range stays a UUID object, which fails to encode as it always did."""
    if type(event_id) is int and 0 <= event_id < _UUID_END:
        return f"{event_id:032x}"
    return as_uuid(event_id)


def _tag_condition_args(
    tags: list[tuple[str, ...]] | None, condition: AppendCondition | None
) -> tuple[Any, ...]:
    """The tag and condition parameters that append_events_tagged (0014) and
    append_tagged_stream (0017) share: the tags with their events' 1-based indexes, the
    condition's query as four arrays (NULLs without one), and its position."""
    flat = [(tag, i + 1) for i, event_tags in enumerate(tags or ()) for tag in event_tags]
    return (
        [t for t, _ in flat],
        [i for _, i in flat],
        *(
            (None, None, None, None)
            if condition is None
            else query_arrays(query_arg(condition.query))
        ),
        None if condition is None else _check_after(condition.after),
    )


def _lock_key_args(
    batch: list[tuple[str, str, bytes, Any]],
    tags: list[tuple[str, ...]] | None,
    condition: AppendCondition | None,
) -> tuple[list[str], list[bool]]:
    """The advisory keys of a tagged append as migration 0008's lock_written spells them,
    and whether each is exclusive: shared the whole log and each written type and tag,
    exclusive the condition's (:func:`eventcore.query.lock_keys`)."""
    keys = ["all:", *{f"type:{e[1]}" for e in batch}]
    keys += [f"tag:{tag}" for event_tags in tags or () for tag in event_tags]
    shared = len(keys)
    if condition is not None:
        keys += [f"{kind}:{value}" for kind, value in lock_keys(query_arg(condition.query))]
    return keys, [i >= shared for i in range(len(keys))]


def _stream_conflict(
    batch: list[tuple[str, str, bytes, Any]],
    checks: list[tuple[str, int]],
    expect: int,
    version: int,
    tail: Sequence[Any],
) -> ConcurrencyConflict:
    """A one-stream append's conflict: the stream is at ``version``; ``tail``: its events
    after ``expect`` as four arrays (types, payloads, versions, positions), or NULLs."""
    stream = batch[0][0]
    conflict = ConcurrencyConflict([(stream, expect, version)])
    if tail[0] is not None:
        conflict._set_tail(checks, zip(repeat(stream), *tail))
    return conflict


def _one_stream_expected(
    batch: list[tuple[str, str, bytes, Any]], checks: list[tuple[str, int]]
) -> int | None:
    """The expected version of the one stream ``batch`` writes (-1: any), or None when it
    writes several streams, none, or checks a stream it does not write."""
    if not batch:
        return None
    stream = batch[0][0]
    for e in batch:
        if e[0] != stream:
            return None
    if not checks:
        return -1
    if len(checks) == 1 and checks[0][0] == stream:
        return checks[0][1]
    return None


def _sent_ids(batch: list[tuple[str, str, bytes, Any]] | None) -> list[Any] | None:
    """The ids of the events of an append whose request may have reached the server (for
    OutcomeUnknown), as UUIDs; None when nothing was sent."""
    return None if batch is None else [as_uuid(e[3]) for e in batch]


def _check_after(after: object) -> int:
    """``after`` if it is a non-negative int (a position)."""
    if not isinstance(after, int) or isinstance(after, bool) or after < 0:
        raise ValidationError("after", "must be a non-negative int", after)
    return after


class PostgresStore:
    """The PostgreSQL event store: an :class:`~eventcore.store.EventStore` on asyncpg.

    Create it from a DSN (it then owns a connection pool) or from an existing asyncpg
    pool, then ``await store.migrate()`` once (idempotent, safe to run from many
    processes at once). Use it as ``async with PostgresStore(dsn) as store:`` or
    ``store = await PostgresStore.connect(dsn)`` ... ``await store.close()``.

    Args:
        dsn: a libpq connection string; mutually exclusive with ``pool``.
        pool: an existing ``asyncpg.Pool`` (not closed by :meth:`close`).
        schema: the schema holding the store's tables; an SQL identifier.
        min_size: the owned pool's minimum number of connections.
        max_size: the owned pool's maximum number of connections.
        statement_timeout: seconds a statement may run on the owned pool's connections
            before PostgreSQL cancels it (``StoreUnavailable``); ``None`` = server default.
        connect_timeout: seconds to wait for a new connection.
        poll_interval: seconds between head polls in :meth:`wait_for_append` when no
            notification arrives.
        registry: decodes payloads for :attr:`RecordedEvent.data` (default registry).
        state_cache: the executor's folded-state cache: a bound in entries, a
            :class:`~eventcore.state_cache.StateCache`, or ``0``/``None`` to turn it off.
        snapshots: keep durable snapshots of commands' folded states in the schema's
            ``snapshots`` table (see :mod:`eventcore.snapshot`); False: none.
        snapshot_every: events folded beyond a command's last snapshot before the next is
            written, for command classes that do not set ``snapshot_every``.
        replicas: libpq URLs of streaming replicas (hot standbys) of the primary ``dsn``.
            Commands (folds, appends, the idempotency lookup :meth:`read_events_by_id`),
            checkpoints and :meth:`log_holdback` use the primary; the other reads
            (``read_*``, :meth:`head`, :meth:`stream_version`,
            :meth:`list_streams`, :meth:`wait_for_append`, so projection catch-up and
            subscriptions) go where ``read_from`` says. See :meth:`write_token` for
            read-your-writes.
        read_from: the store's default for reads: ``"replica"`` (the default when
            ``replicas`` are given: a replica in rotation, else the primary) or
            ``"primary"``. Every read method also takes ``read_from=`` per call.
        replica_wait: seconds a read that must see a write waits for a replica to
            replay it before it reads from the primary instead.
        replica_max_lag: replay lag (seconds) past which a replica leaves the rotation
            (it comes back when a probe finds it caught up).
        pgbouncer: ``dsn`` (and the replicas) go through PgBouncer in transaction (or
            statement) pooling mode: no named prepared statements (asyncpg's statement
            cache off) and no ``statement_timeout`` startup parameter (PgBouncer refuses
            it: set it on the role, ``ALTER ROLE app SET statement_timeout = '30s'``; the
            client still gives up after ``statement_timeout + 5`` seconds). Connections
            that hold session state (the LISTEN connection, projection leader leases) go
            to ``direct_dsn``; without one the store polls instead of LISTENing and its
            checkpoints offer no leases (projections run non-exclusive).
        direct_dsn: a direct connection to the primary (not through PgBouncer), for
            LISTEN and session advisory locks. Only with ``pgbouncer=True``.

    Raises:
        ConfigurationError: a malformed DSN or a schema name that is not allowed (not an
            identifier, or a system schema such as ``pg_catalog``).
        ValidationError: an invalid option.
    """

    warm_append_first = True
    """A command with a cached state appends without reading first (one round trip): the
    expected versions check the state, and a conflict returns the events it missed
    (:attr:`~eventcore.ConcurrencyConflict.tail`), folded before deciding again. A query
    command's condition checks its cached state the same way (a failed one carries the
    read it missed, :attr:`~eventcore.ConditionFailed.read`, when it can)."""

    _pool_slots: Slots | None = None
    """A connection bound the owned pool shares with others (SyncPostgresStore's threads)."""

    def __init__(
        self,
        dsn: str | None = None,
        *,
        pool: asyncpg.Pool | None = None,
        schema: str = "eventcore",
        min_size: int = 1,
        max_size: int = 10,
        statement_timeout: float | None = 30.0,
        connect_timeout: float = 10.0,
        poll_interval: float = 1.0,
        registry: EventRegistry | None = None,
        state_cache: int | StateCache | None = DEFAULT_MAX_ENTRIES,
        snapshots: bool = True,
        snapshot_every: int | None = SNAPSHOT_EVERY,
        replicas: Sequence[str] = (),
        read_from: ReadFrom = "replica",
        replica_wait: float = 1.0,
        replica_max_lag: float = 5.0,
        pgbouncer: bool = False,
        direct_dsn: str | None = None,
    ) -> None:
        if (dsn is None) == (pool is None):
            raise ValidationError("dsn", "give exactly one of dsn= or pool=", dsn)
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValidationError("max_size", "need 0 <= min_size <= max_size, max_size >= 1")
        if dsn is not None:
            check_dsn(dsn)
        if isinstance(replicas, str):
            raise ValidationError("replicas", "must be a sequence of DSNs, not one str", replicas)
        for replica in replicas:
            check_dsn(replica)
        if direct_dsn is not None:
            if not pgbouncer:
                raise ValidationError("direct_dsn", "only with pgbouncer=True", direct_dsn)
            check_dsn(direct_dsn)
        if read_from not in ("primary", "replica"):
            raise ValidationError("read_from", "must be 'primary' or 'replica'", read_from)
        if not replica_wait >= 0 or not replica_max_lag > 0:
            raise ValidationError("replica_wait", "need replica_wait >= 0, replica_max_lag > 0")
        self.schema = check_schema_name(schema)
        """The schema holding the store's tables."""
        self.registry = registry if registry is not None else default_registry
        """The registry that decodes payloads for :attr:`RecordedEvent.data`."""
        self.state_cache: StateCache | None = make_state_cache(state_cache)
        """The executor's folded-state cache for this store (``None``: off)."""
        self._dsn = dsn
        self._pool: asyncpg.Pool | ConnectionPool | None = pool
        self._owns_pool = pool is None
        self._pool_sizes = (min_size, max_size)
        self._statement_timeout = statement_timeout
        self._connect_timeout = connect_timeout
        self.poll_interval = poll_interval
        """Seconds between polls of :meth:`head` while waiting without notifications."""
        self._q = Queries(schema)
        self._open_lock = asyncio.Lock()
        self._checked = False
        self._listener = Listener(self, channel(schema))
        self._notifier = Notifier(self, channel(schema))
        self.snapshots = (
            Snapshotter(PostgresSnapshotStore(self), self.registry.codec, snapshot_every)
            if snapshots
            else None
        )
        """The store's snapshot policy (:mod:`eventcore.snapshot`); None: no snapshots."""
        self.read_from: ReadFrom = read_from
        """Where reads go by default (``"replica"`` only matters with replicas)."""
        self._replicas = (
            ReplicaSet(
                list(replicas),
                self._open_connection,
                self._primary_lsn,
                max_size=max_size,
                wait=replica_wait,
                max_lag=replica_max_lag,
            )
            if replicas
            else None
        )
        self.pgbouncer = pgbouncer
        """Whether the store's pool goes through PgBouncer (transaction pooling)."""
        self._direct_dsn = direct_dsn
        self._unseen_write = False  # an append acknowledged since the last write_token()
        # The plain append's path (see _append_plain): "direct" (one statement), then
        # "function" (append_stream) when this role may not write the tables, then None
        # (append_events) when it may not call append_stream either.
        self._plain: Literal["direct", "function"] | None = "direct"
        self._append_tagged_stream = (
            True  # False: this role may not call append_tagged_stream (0017)
        )
        # False: this role may not call append_tagged_streams (0019).
        self._append_tagged_streams = True
        # False: this role may not send its direct statement (0019), or PgBouncer.
        self._tagged_streams_direct = not pgbouncer
        # False: this role may not send the direct tagged append (0018), or PgBouncer.
        self._tagged_direct = not pgbouncer
        # A query read of one item with tags as one statement (read_query_direct), else
        # the read_query function; under PgBouncer the function (its unnamed statements
        # would be planned on every call, the function's once per server session).
        self._read_direct = not pgbouncer
        self._own_token = 0  # this store's newest write token: its reads wait for it
        self._own_position = 0  # the newest position read_after() was given
        # The primary's timeline, as its newest connection saw it (0: not known, e.g. a
        # borrowed pool): carried by write tokens, it tells a token from before a failover.
        self._timeline = 0
        # The highest head this store has read: a later read of the global log goes only
        # to a replica known to be past it (else the primary), so a reader that takes the
        # head from one replica and the page from another never moves past an event.
        self._log_seen = 0

    # -- lifecycle -----------------------------------------------------------------

    @classmethod
    async def connect(cls, dsn: str, **options: Any) -> PostgresStore:
        """Create a store from ``dsn`` and open its pool (see the class for ``options``)."""
        store = cls(dsn, **options)
        await store.open()
        return store

    async def open(self) -> PostgresStore:
        """Open the connection pool (if owned) and check the schema version.

        Called automatically on first use. Raises StoreUnavailable when the server cannot
        be reached, StoreError when the schema is newer than this eventcore knows or older
        than it needs (then :meth:`migrate` brings it up to date).
        """
        async with self._open_lock:
            pool = await self._open_pool()
            if not self._checked:
                try:
                    async with pool.acquire() as conn:
                        version = await _migrate.installed_version(conn, self._q, self.schema)
                except Exception as exc:
                    raise translate(exc, "open") from exc
                latest = self.latest_schema_version()
                if version is not None and version < latest:
                    raise StoreError(
                        f"the database schema {self.schema!r} is at version {version}; this "
                        f"eventcore needs version {latest}: run `await store.migrate()` (or "
                        f"`eventcore migrate --dsn ... --schema {self.schema}`) as the "
                        "schema's owner"
                    )
                self._checked = True
        return self

    async def _open_pool(self) -> asyncpg.Pool | ConnectionPool:
        """The pool, opened if this store owns it and it is not open yet."""
        if self._pool is None:
            low, high = self._pool_sizes
            pool = ConnectionPool(
                self._open_connection, min_size=low, max_size=high, slots=self._pool_slots
            )
            try:
                await pool.open()
            except Exception as exc:
                raise translate(exc, "connect") from exc
            self._pool = pool
        return self._pool

    async def _open_connection(self, dsn: str | None = None) -> asyncpg.Connection:
        """One new connection of the owned pool (or a replica's: ``dsn``), with the store's
        session settings."""
        settings = {"application_name": "eventcore"}
        timeout = self._statement_timeout
        if timeout is not None and not self.pgbouncer:
            settings["statement_timeout"] = str(int(timeout * 1000))
        try:
            conn = await asyncpg.connect(
                dsn or self._dsn,
                timeout=self._connect_timeout,
                command_timeout=timeout + 5.0 if timeout is not None else None,
                server_settings=settings,
                connection_class=PooledConnection,
                # PgBouncer hands each transaction any server connection: no named
                # statement outlives it, so asyncpg's cache of them is off.
                **({"statement_cache_size": 0} if self.pgbouncer else {}),
            )
        except ValueError as exc:
            # Only the DSN's parsing raises ValueError here (asyncpg's
            # ClientConfigurationError is one): network failures are OSError, the
            # server's refusals PostgresError.
            raise ConfigurationError(f"malformed PostgreSQL DSN: {exc}") from exc
        if dsn is None:
            try:
                self._timeline = int(await conn.fetchval(TIMELINE))
            except BaseException:
                conn.terminate()
                raise
        return conn

    async def _get_pool(self) -> asyncpg.Pool | ConnectionPool:
        if self._pool is None or not self._checked:
            await self.open()
        return self._pool

    async def close(self) -> None:
        """Stop listening and notifying, and close the pool if this store created it."""
        await self._listener.close()
        await self._notifier.close()
        if self.snapshots is not None:
            await self.snapshots.close()  # background snapshot writes end here
        if self._replicas is not None:
            await self._replicas.close()
        pool, self._pool = self._pool, None
        self._checked = False
        if pool is not None and self._owns_pool:
            try:
                await asyncio.wait_for(pool.close(), 10)
            except (TimeoutError, OSError, asyncpg.PostgresError, pgbase.InterfaceError):
                pool.terminate()

    async def __aenter__(self) -> PostgresStore:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"PostgresStore(schema={self.schema!r})"

    # -- migrations ----------------------------------------------------------------

    @staticmethod
    def latest_schema_version() -> int:
        """The schema version this eventcore creates and understands."""
        return len(migrations())

    async def migrate(self) -> int:
        """Apply the missing migrations and return the schema version.

        Idempotent and safe when several processes run it at once: the work happens in
        one transaction under a transaction-level advisory lock. A schema that already
        holds same-named tables not created by eventcore is refused and left untouched.

        Raises:
            StoreError: foreign tables of the same names, a schema newer than this
                eventcore, or a failed migration (rolled back whole).
            StoreUnavailable: the server could not be reached.
        """
        async with self._open_lock:
            pool = await self._open_pool()
        try:
            async with pool.acquire() as conn:
                version = await _migrate.migrate(conn, self._q, self.schema)
        except Exception as exc:
            raise translate(exc, "migrate") from exc
        self._checked = True
        self._unseen_write = self._replicas is not None  # replica reads wait for the schema
        return version

    # -- append --------------------------------------------------------------------

    async def append(
        self,
        events: Sequence[NewEvent] | Sequence[tuple[str, str, bytes, Any]],
        *,
        expected: Expected = (),
        metadata: Metadata | None = None,
        condition: AppendCondition | None = None,
    ) -> AppendResult:
        """Append atomically across streams, in one round trip; see :meth:`EventStore.append`.

        Tags and a ``condition`` are checked under advisory locks keyed by the query (see
        migration 0008), so two appends that only one may pass never both pass: into one
        stream through ``append_tagged_stream`` (0017, 0018), into several through
        ``append_tagged_streams`` (0019), or each as one statement; a replay through
        ``append_events_tagged``.

        Events without an id get a UUIDv7. Appending the same ids again (with the same
        streams, types and payloads) returns the original positions and versions.

        Raises:
            ConcurrencyConflict: an expected version did not match; nothing written.
            ConditionFailed: an event matching ``condition`` lies after its position;
                nothing written.
            DuplicateEventId: an event id is stored with other content (or tags),
                appears twice in the batch, or only part of the batch was stored before.
            InvalidStreamId: a stream id broke the rules.
            InvalidTag: a tag broke the rules.
            ValidationError: a payload over :data:`MAX_PAYLOAD_BYTES`, too many events,
                or a malformed event, expected version or metadata.
            StoreUnavailable: the server could not be reached or the statement timed out.
            ConfigurationError: the connection was inside a transaction that already
                holds a transaction id (a borrowed pool's connection in a caller's write
                transaction): an append must run in a transaction of its own.
            StoreError: any other failure.
        """
        batch = prepare_events(events, metadata)
        checks = prepare_expected(expected)
        meta = metadata if metadata is not None else EMPTY_METADATA
        if not isinstance(meta, Metadata):
            raise ValidationError("metadata", "must be an eventcore.Metadata or None", meta)
        user_id = meta.user_id
        if user_id is not None and "\x00" in user_id:
            raise ValidationError("user_id", "must not contain NUL characters", user_id)
        custom = _json_encode(dict(meta.custom)).decode() if meta.custom else None
        tags = prepare_tags(events)
        pool = await self._get_pool()
        if tags is None and condition is None and self._plain is not None:
            # One stream, at most its own version checked: the plain append (migrations
            # 0013 and 0016). It answers ok or conflict; a stored event id goes on to
            # append_events.
            expect = _one_stream_expected(batch, checks)
            if expect is not None:
                plain = await self._append_plain(pool, batch, expect, meta, user_id, custom, checks)
                if plain is not None and plain[0] is not None:
                    return self._appended(batch, plain[0], plain[1])
                if plain is not None and plain[1] is not None:
                    raise _stream_conflict(batch, checks, expect, plain[1], plain[2:6])
        if (tags is not None or condition is not None) and batch:
            one = _one_stream_expected(batch, checks)
            done = None
            if one is not None and self._append_tagged_stream:
                done = await self._append_one_stream_tagged(
                    pool, batch, checks, one, meta, user_id, custom, tags, condition
                )
            elif one is None and (self._tagged_streams_direct or self._append_tagged_streams):
                done = await self._append_streams_tagged(
                    pool, batch, checks, meta, user_id, custom, tags, condition
                )
            if done is not None:
                return done
        query = self._q.append
        args = _events_args(batch, checks, meta, user_id, custom)
        if tags is not None or condition is not None:
            query = self._q.append_tagged
            args = (*args, *_tag_condition_args(tags, condition))
        row = await self._send_append(pool, query, args, checks, batch)
        status = row[0]
        if status == "ok" or status == "replay":
            positions = row[1]
            versions = list(zip(row[2] or (), row[3] or (), strict=True))
            if status == "ok" and positions:
                # Consecutive: AppendResult expands the first position on demand.
                return self._written(batch, positions[0], versions)
            return AppendResult(positions, versions, batch, self._timeline)
        if status == "conflict":
            conflict = ConcurrencyConflict(zip(row[2], row[4], row[3], strict=True))
            if row[7] is not None:
                conflict._set_tail(
                    checks, zip(row[7], row[8], row[9], row[10], row[11], strict=True)
                )
            raise conflict
        if status == "duplicate":
            raise DuplicateEventId(row[5], row[6])
        if status == "condition" and condition is not None:
            raise ConditionFailed(condition.after, row[1][0])
        raise StoreError(f"unexpected answer from append_events: {status!r}")

    def _appended(
        self, batch: list[tuple[str, str, bytes, Any]], first: int, version: int
    ) -> AppendResult:
        """The result of a one-stream append whose events start at ``first``, the stream
        now at ``version`` (announced to listeners)."""
        return self._written(batch, first, [(batch[0][0], version)])

    def _written(
        self, batch: list[tuple[str, str, bytes, Any]], first: int, versions: list[tuple[str, int]]
    ) -> AppendResult:
        """The result of an append whose events start at ``first`` and leave its streams at
        ``versions``, announced to listeners."""
        self._notifier.announce(first + len(batch) - 1)
        self._unseen_write = True
        return AppendResult(first, versions, batch, self._timeline)

    async def _append_plain(
        self,
        pool: asyncpg.Pool | ConnectionPool,
        batch: list[tuple[str, str, bytes, Any]],
        expect: int,
        meta: Metadata,
        user_id: str | None,
        custom: str | None,
        checks: list[tuple[str, int]],
    ) -> Any:
        """The plain append of ``batch`` (one stream, at ``expect``) by this store's path.

        Returns append_stream's row (first position, version, the tail's four arrays), or
        None: an event id is stored already, or this role may take neither path.

        The path is chosen once, by the first append: the direct statement
        (``Queries.append_direct``) while the role may write the tables, else
        ``append_stream``, else none (``append_events``, for the GRANTs of before schema
        13). A refusal for lack of privilege writes nothing and moves to the next path.
        """
        while self._plain == "direct":
            one = len(batch) == 1
            query = self._q.append_direct[one, expect > 0 or expect == -2]
            sent = _stream_args(batch, expect, meta, user_id, custom, one=one)
            row = await self._send_append(pool, query, sent, checks, batch, lean=True)
            if row is None:
                if self._plain == "direct":
                    return None  # a stored event id
                continue  # no privilege: append_stream
            c = row[2]  # stream_conflict's row when nothing was written
            return row if c is None else (None, c[0], c[1], c[2], c[3], c[4])
        if self._plain == "function":
            return await self._send_append(
                pool,
                self._q.append_stream,
                _stream_args(batch, expect, meta, user_id, custom),
                checks,
                batch,
                lean=True,
            )
        return None

    async def _append_one_stream_tagged(
        self,
        pool: asyncpg.Pool | ConnectionPool,
        batch: list[tuple[str, str, bytes, Any]],
        checks: list[tuple[str, int]],
        expect: int,
        meta: Metadata,
        user_id: str | None,
        custom: str | None,
        tags: list[tuple[str, ...]] | None,
        condition: AppendCondition | None,
    ) -> AppendResult | None:
        """A tagged or conditional append into one stream: its result, or its typed failure
        raised; None when append_events_tagged must answer (an event id is stored already,
        or this role may take neither path).

        The path is chosen once, by the first such append, as for the plain append (see
        _append_plain): the direct statement (``Queries.append_tagged_direct``, migration
        0018) while the role may write the tables (and not behind PgBouncer, whose unnamed
        statements are planned on every call), else append_tagged_stream (migration 0017),
        else none. Both answer alike; their rows are read here into one shape.
        """
        args = (
            *_stream_args(batch, expect, meta, user_id, custom),
            *_tag_condition_args(tags, condition),
            CARRIED_READ_LIMIT + 1,
        )
        rows: Any = None
        while self._tagged_direct:
            one = len(batch) == 1
            # A condition of one item with one tag (a decision's) is checked inline.
            inline = args[12] is not None and len(args[12]) == 1 and args[14] == [1]
            query = self._q.append_tagged_direct[one, expect > 0 or expect == -2, inline]
            head = (
                _stream_args(batch, expect, meta, user_id, custom, one=True)[:5]
                if one
                else args[:5]
            )
            sent = (*head, *args[5:], *_lock_key_args(batch, tags, condition))
            rows = await self._send_append(pool, query, sent, checks, batch, lean=True, rows=True)
            if rows:
                # stream_conflict's row (when nothing was written) in column 4, read_query's
                # rows in columns 5 on.
                first, version, matched, c = rows[0][0], rows[0][1], rows[0][2], rows[0][3]
                tail = (None,) * 4 if c is None else (c[1], c[2], c[3], c[4])
                version = version if c is None else c[0]
                read = [tuple(r)[4:] for r in rows[1:]]
                break
            if self._tagged_direct:
                return None  # a stored event id
        else:
            if not self._append_tagged_stream:
                return None
            rows = await self._send_append(
                pool, self._q.append_tagged_stream, args, checks, batch, lean=True, rows=True
            )
            if not rows:
                return None
            first, version, matched = rows[0][0], rows[0][1], rows[0][2]
            tail = tuple(rows[0][3:7])
            read = [tuple(r)[7:] for r in rows[1:]]
        if first is not None:
            return self._appended(batch, first, version)
        if matched is not None and matched > 0 and condition is not None:
            raise self._condition_failed(condition, matched, read)
        if version is not None and matched is None:
            raise _stream_conflict(batch, checks, expect, version, tail)
        return None  # matched -1 (direct) or every column NULL: a replay or a duplicate

    async def _append_streams_tagged(
        self,
        pool: asyncpg.Pool | ConnectionPool,
        batch: list[tuple[str, str, bytes, Any]],
        checks: list[tuple[str, int]],
        meta: Metadata,
        user_id: str | None,
        custom: str | None,
        tags: list[tuple[str, ...]] | None,
        condition: AppendCondition | None,
    ) -> AppendResult | None:
        """A tagged or conditional append into several streams (or into one stream with a
        check of another) in one pass (migration 0019): its result, or its typed failure
        raised; None when append_events_tagged must answer (an event id is stored
        already, or this role may not call append_tagged_streams)."""
        args = (
            *_events_args(batch, checks, meta, user_id, custom),
            *_tag_condition_args(tags, condition),
            CARRIED_READ_LIMIT + 1,
        )
        rows: Any = None
        if self._tagged_streams_direct:
            keys = _lock_key_args(batch, tags, condition)
            rows = await self._send_append(
                pool,
                self._q.append_tagged_streams_direct,
                (*args, *keys),
                checks,
                batch,
                lean=True,
                rows=True,
            )
        if not self._tagged_streams_direct and self._append_tagged_streams:
            rows = await self._send_append(
                pool, self._q.append_tagged_streams, args, checks, batch, lean=True, rows=True
            )
        if not rows:
            return None
        first, streams, versions, matched = rows[0][0], rows[0][1], rows[0][2], rows[0][3]
        if first is not None:
            return self._written(batch, first, list(zip(streams, versions, strict=True)))
        if matched is not None and matched > 0 and condition is not None:
            raise self._condition_failed(condition, matched, [tuple(r)[10:] for r in rows[1:]])
        if streams is not None:
            conflict = ConcurrencyConflict(zip(streams, rows[0][4], versions, strict=True))
            if rows[0][5] is not None:
                conflict._set_tail(checks, zip(*rows[0][5:10], strict=True))
            raise conflict
        return None  # an event id is stored: a replay or a duplicate

    def _condition_failed(
        self, condition: AppendCondition, matched: int, read: list[tuple[Any, ...]]
    ) -> ConditionFailed:
        """The failure of ``condition`` (its first match at ``matched``) with the read a
        retry would make, when ``read`` (read_query's rows: the head row, then the events)
        carries all of it."""
        failed = ConditionFailed(condition.after, matched)
        if 0 < len(read) <= CARRIED_READ_LIMIT + 1:
            # What read_query(condition.query, after=condition.after) returns now.
            events = self._wrap([r[1:] for r in read[1:]])
            failed.read = QueryResult(events, max(read[0][0], 0))
        return failed

    async def _send_append(
        self,
        pool: asyncpg.Pool | ConnectionPool,
        query: str,
        args: tuple[Any, ...],
        checks: list[tuple[str, int]],
        batch: list[tuple[str, str, bytes, Any]],
        *,
        lean: bool = False,
        rows: bool = False,
    ) -> Any:
        """Run one append statement (the events of ``batch``) and return its row.

        ``lean``: the statement is a plain append (see _append_plain) or
        append_tagged_stream, which leave a stored event id to append_events
        (append_events_tagged): its unique violation returns None (nothing was written),
        as does a refusal for lack of privilege (the store's path moves on). ``rows``:
        return every row of the answer (a list), not only the first.
        """
        row: Any = None
        for attempt in range(3):
            sent = None  # ``batch`` once the request may reach the server (see _sent_ids)
            try:
                async with pool.acquire() as conn:
                    sent = batch
                    try:
                        if type(pool) is ConnectionPool:  # its watchdog keeps the time limit
                            fetch = conn.fetch if rows else conn.fetchrow
                            row = await pool.statement(conn, fetch, query, args)
                        else:
                            row = await (conn.fetch if rows else conn.fetchrow)(query, *args)
                    except pgbase.InternalClientError:
                        conn.terminate()  # protocol state unknown: never reuse it
                        raise
                break
            except pgerr.UniqueViolationError as exc:
                if exc.constraint_name == "events_event_id_key":
                    if lean:
                        return None
                    if attempt < 2:
                        continue  # the same ids committed concurrently: re-run sees them
                if exc.constraint_name == "events_stream_version_key":
                    raise await self._conflict_from_data(checks, batch) from exc
                raise translate(exc, "append") from exc
            except asyncpg.PostgresError as exc:
                sqlstate = getattr(exc, "sqlstate", None)
                if lean and isinstance(exc, pgerr.InsufficientPrivilegeError):
                    # A role that may not write the tables takes append_stream; one
                    # granted EXECUTE on append_events only (the GRANTs before schema
                    # 13) takes append_events, which does the same work. Likewise
                    # append_events_tagged for append_tagged_stream (0017).
                    if query is self._q.append_tagged_stream:
                        self._append_tagged_stream = False
                    elif query is self._q.append_tagged_streams:
                        self._append_tagged_streams = False  # append_events_tagged (0019)
                    elif query is self._q.append_tagged_streams_direct:
                        self._tagged_streams_direct = False  # append_tagged_streams
                    elif query in self._q.append_tagged_direct.values():
                        self._tagged_direct = False  # 0018: append_tagged_stream instead
                    else:
                        self._plain = "function" if self._plain == "direct" else None
                    return None
                if sqlstate == _IN_CALLERS_TRANSACTION:
                    raise ConfigurationError(
                        "append_events was called inside a transaction that already holds a "
                        "transaction id: an append must run in a transaction of its own "
                        "(its positions and stream order depend on it)"
                    ) from exc
                if sqlstate == _INPUT_REFUSED:
                    raise ValidationError("events", str(exc)) from exc
                raise translate(exc, "append", _sent_ids(sent)) from exc
            except Exception as exc:
                raise translate(exc, "append", _sent_ids(sent)) from exc
        return row

    async def _conflict_from_data(
        self, checks: list[tuple[str, int]], batch: list[tuple[str, str, bytes, Any]]
    ) -> EventCoreError:
        """A ConcurrencyConflict from the current versions (after a unique violation)."""
        wanted = dict(checks)
        for e in batch:
            wanted.setdefault(e[0], -1)
        try:
            current = dict(await self._fetch(self._q.stream_versions, list(wanted)))
        except StoreError as exc:
            return exc
        conflicts = [
            (s, v, current.get(s, 0))
            for s, v in wanted.items()
            if not (v == -1 or (v == -2 and current.get(s, 0) > 0) or v == current.get(s, 0))
        ]
        return ConcurrencyConflict(
            conflicts or [(s, v, current.get(s, 0)) for s, v in wanted.items()]
        )

    # -- reads ---------------------------------------------------------------------

    async def _fetch(self, query: str, *args: Any) -> list[Any]:
        pool = await self._get_pool()
        try:
            return await pool.fetch(query, *args)
        except Exception as exc:
            raise translate(exc, "read") from exc

    async def _fetchrow(self, query: str, *args: Any) -> Any:
        pool = await self._get_pool()
        try:
            return await pool.fetchrow(query, *args)
        except Exception as exc:
            raise translate(exc, "read") from exc

    async def _fetchval(self, query: str, *args: Any) -> Any:
        pool = await self._get_pool()
        try:
            return await pool.fetchval(query, *args)
        except Exception as exc:
            raise translate(exc, "read") from exc

    # -- reads routed to replicas ----------------------------------------------------------

    async def write_token(self) -> int:
        """A WAL write token: the primary's WAL position now (bytes), past every write
        acknowledged before this call, by any store, process or SQL client.

        For a command's own write, use the token its result carries
        (:attr:`ExecutionResult.write_token <eventcore.ExecutionResult.write_token>`, no
        round trip). This one is the barrier for everything else: writes made outside
        commands (SQL, another service) or "everything acknowledged until now" without a
        result at hand. Pass either as ``after=`` to a read (on any store with replicas,
        e.g. in another process): the read waits until its replica has it (at most
        ``replica_wait`` seconds), then reads from the primary instead. This store's own
        reads do it by themselves: after its appends, its next replica read takes a WAL
        token first (one round trip to the primary) and waits for it.
        """
        self._unseen_write = False  # before the query: a later append sets it again
        token = await self._primary_lsn()
        self._own_token = max(self._own_token, token)
        return token

    def read_after(self, token: WriteToken | int) -> None:
        """Make every later read of this store show the write of ``token`` (a command
        result's :class:`~eventcore.recorded.WriteToken`, or a WAL token from
        :meth:`write_token`), as if each took ``after=token``: subscriptions, projection
        catch-up and the CLI read through it. Tokens add up (the newest counts); once a
        replica is known to have one, reads no longer ask. A token of another timeline
        (from before a failover) is ignored: there is nothing on this history to wait for.

        Raises:
            ValidationError: not a token.
        """
        if isinstance(token, WriteToken):
            if not token.timeline or self._timeline in (0, token.timeline):
                self._own_position = max(self._own_position, token.position)
        elif type(token) is int and token >= 0:
            self._own_token = max(self._own_token, token)
        else:
            raise ValidationError("token", "must be a WriteToken or a WAL position (int)", token)

    async def _route(
        self,
        read_from: ReadFrom | None,
        after: int | WriteToken | None,
        *,
        log: bool = False,
        seen: int = 0,
    ) -> Any:
        """The pool one read uses: a replica's when routed there and one has what the
        read must see (``after``, and this store's own writes); ``log``: a read of the
        global log (a token's position must be below the replica's horizon); ``seen``: a
        head the replica must be known to be past (else the primary, at once)."""
        if read_from is not None and read_from not in ("primary", "replica"):
            raise ValidationError("read_from", "must be 'primary' or 'replica'", read_from)
        position = 0
        elsewhere = False  # a token of another timeline: written before a failover
        if isinstance(after, WriteToken):
            position, timeline, after = after.position, after.timeline, None
            elsewhere = bool(position and timeline and self._timeline not in (0, timeline))
        elif after is not None and (type(after) is not int or after < 0):
            raise ValidationError("after", "must be a WriteToken or a WAL position (int)", after)
        primary = await self._get_pool()
        replicas = self._replicas
        if replicas is None or (read_from or self.read_from) == "primary":
            return primary
        if elsewhere:
            # This history may not hold the write, or may hold another event at its
            # position: only the primary answers for the log as it is now.
            return primary
        if self._unseen_write:
            await self.write_token()
        token = max(self._own_token, after or 0) or None
        position = max(position, self._own_position)
        return await replicas.pick(token, position, log=log, seen=seen) or primary

    async def _read(self, pool: Any, method: str, query: str, *args: Any) -> Any:
        """``pool.<method>(query, *args)``; a replica that fails for a connection reason
        leaves the rotation and the read goes to the primary."""
        try:
            return await getattr(pool, method)(query, *args)
        except Exception as exc:
            if self._replicas is None or pool is self._pool or not is_replica_failure(exc):
                raise translate(exc, "read") from exc
            self._replicas.failed(pool, exc)
        try:
            return await getattr(await self._get_pool(), method)(query, *args)
        except Exception as exc:
            raise translate(exc, "read") from exc

    async def replica_status(self) -> list[ReplicaStatus]:
        """Every replica probed now: in rotation or not (and why), replayed position, lag
        in bytes (against the primary's WAL position now) and seconds. Empty without
        replicas."""
        if self._replicas is None:
            return []
        return await self._replicas.status()

    async def _primary_lsn(self) -> int:
        return int(await self._fetchval(PRIMARY_LSN))

    def _wrap(self, rows: list[Any]) -> list[RecordedEvent[Any]]:
        # Rows are (position, event id as 16 bytes, stream_id, version, event_type,
        # payload, recorded_at, metadata JSON array or NULL, tags or NULL): the fast
        # builder takes them as they are; the id and the metadata are converted on first
        # access.
        return recorded_events(rows, self.registry)

    async def read_query(
        self, query: Query | Sequence[QueryItem], *, after: int = 0, limit: int | None = None
    ) -> QueryResult:
        """The events after position ``after`` matching ``query``, in position order (at
        most ``limit``), and the position the read is consistent with; see
        :meth:`EventStore.read_query <eventcore.store.EventStore.read_query>`.

        The position is the safe head (see :meth:`head`), read first: every event at or
        below it has committed, so the read that follows sees all matching ones, and an
        event committed later lies above it (an append condition at it catches it). One
        round trip (``read_query()``, migration 0008; the query as arrays since 0014; a
        query of one item with tags as one statement of the same answer, which calls
        ``read_query()`` only while an append is in flight).
        Items with tags walk the tag index; an item with only types walks the type index
        (migration 0011).

        Raises:
            InvalidTag: a tag of the query broke the rules.
            InvalidEventType: a type name of the query broke the rules.
        """
        items = query_arg(query)
        limit = check_limit(limit)
        after = _check_after(after)
        if not items:
            return QueryResult([], await self.head())
        statement = self._q.read_query
        if self._read_direct and len(items) == 1 and 0 < len(items[0][1]) <= DIRECT_READ_TAGS:
            # One item with tags (a decision's): one statement, no function call (see
            # Queries.read_query_direct).
            statement = self._q.read_query_direct[len(items[0][1]), bool(items[0][0])]
        rows = await self._fetch(statement, *query_arrays(items), after, limit)
        if rows[0][0] is None:  # an append in flight: read_query's own rows follow
            rows = rows[1:]
        head = rows[0][0]
        events = self._wrap([tuple(r)[1:] for r in rows[1:]])
        position = events[-1].position if limit and len(events) == limit else max(head, 0)
        return QueryResult(events, position)

    async def read_fold(self, streams: Sequence[str]) -> tuple[FoldRows, list[int]]:
        """Every visible event of ``streams`` as fold rows (global order), and each
        stream's version; see :meth:`EventStore.read_fold`.

        One query reads every stream's version, then its visible events (hidden ones,
        below a truncation or deletion, are not read).
        """
        ids = check_stream_ids(streams)
        statement = self._q.fold_by_count.get(len(ids))
        if statement is not None:
            rows = await self._fetch(statement, *ids)
        else:
            rows = await self._fetch(self._q.fold, ids)
        versions = dict.fromkeys(ids, 0)
        k = 0  # the rows before the events: (stream, NULL, version as 8 bytes)
        while k < len(rows) and rows[k][1] is None:
            versions[rows[k][0]] = int.from_bytes(rows[k][2], "big", signed=True)
            k += 1
        return rows[k:] if k else rows, [versions[s] for s in ids]

    async def read_tail(
        self,
        streams: Sequence[str],
        versions: Sequence[int],
        fold_from: int,
        hint: object = None,
    ) -> tuple[FoldRows, list[int]] | None:
        """The events after ``versions`` as fold rows; see :meth:`EventStore.read_tail`.

        One query reads each stream from its last folded event on: positions come from
        transaction ids, so a late commit can land below an event already folded, and
        then the tail cannot extend the state (``None``: the executor folds in full).
        Without a read when ``hint`` carries the rows: a conflict's tail from these
        versions on, or the tail a snapshot load read with exactly these versions.
        """
        ids = check_stream_ids(streams)
        if len(versions) != len(ids):
            raise ValueError("versions must have one entry per stream")
        after = dict(zip(ids, versions, strict=True))
        rows: Any = None
        if isinstance(hint, ConcurrencyConflict) and hint.tail_base is not None:
            # The conflicting append returned every checked stream's events from its
            # expected version on: when those were these versions, no read is needed.
            base = hint.tail_base
            if all(base.get(s, (-1, 0))[0] == v for s, v in after.items()):
                last = set(ids[fold_from:])
                rows = [(s, "", b"", v, p) for s, (v, p) in base.items() if p and s in last]
                rows += [r for r in hint.tail or () if r[0] in after]
        if rows is None:
            # Each stream from its last folded event on (also for streams of earlier
            # discovery rounds: that row says when the stream was last truncated); read
            # with the snapshot this state came from, when it did.
            if (
                isinstance(hint, SnapshotTail)
                and hint.streams == tuple(ids)
                and hint.versions == tuple(versions)
            ):
                rows = hint.rows
            else:
                rows = await self._fetch(self._q.fold_tail, ids, list(versions))
            for row in rows:
                if row[5] > after[row[0]]:
                    return None  # truncated since the state was folded: it may hold hidden events
        slot = {sid: i for i, sid in enumerate(ids)}
        now = dict(after)
        seen: set[str] = set()  # streams whose last folded event was found
        folded_up_to = 0  # the highest position already folded (of the last round)
        tail: list[Any] = []
        for row in rows:
            sid, version, position = row[0], row[3], row[4]
            if version <= after[sid]:
                seen.add(sid)
                if slot[sid] >= fold_from:
                    folded_up_to = max(folded_up_to, position)
                continue
            if slot[sid] < fold_from:
                return None  # an earlier round's stream moved: discovery may differ
            now[sid] = max(now[sid], version)
            tail.append((row[0], row[1], row[2], row[3], row[4]))
        if any(after[sid] and sid not in seen for sid in ids[fold_from:]):
            return None  # fewer events than the state was folded from
        if tail and tail[0][4] <= folded_up_to:
            return None  # a late commit landed below an event already folded
        return tail, [now[s] for s in ids]

    async def read_stream(
        self,
        stream_id: str,
        *,
        after_version: int = 0,
        limit: int | None = None,
        read_from: ReadFrom | None = None,
        after: int | WriteToken | None = None,
    ) -> list[RecordedEvent[Any]]:
        """Events of one stream with version > ``after_version``, oldest first.

        ``read_from``/``after`` (every read takes them): where this read goes (default
        :attr:`read_from`) and a write it must see: a command result's
        :class:`~eventcore.recorded.WriteToken` or a WAL token from :meth:`write_token`.
        """
        sid = validate_stream_id(stream_id)
        pool = await self._route(read_from, after)
        rows = await self._read(
            pool, "fetch", self._q.read_stream, sid, after_version, check_limit(limit)
        )
        return self._wrap(rows)

    async def read_streams(
        self,
        stream_ids: Sequence[str],
        *,
        after_version: int = 0,
        limit: int | None = None,
        read_from: ReadFrom | None = None,
        after: int | WriteToken | None = None,
    ) -> list[RecordedEvent[Any]]:
        """Events of several streams with version > ``after_version``, in global order."""
        ids = check_stream_ids(stream_ids)
        pool = await self._route(read_from, after)
        rows = await self._read(
            pool, "fetch", self._q.read_streams, ids, after_version, check_limit(limit)
        )
        return self._wrap(rows)

    async def read_stream_backwards(
        self,
        stream_id: str,
        *,
        before_version: int | None = None,
        limit: int | None = None,
        read_from: ReadFrom | None = None,
        after: int | WriteToken | None = None,
    ) -> list[RecordedEvent[Any]]:
        """Events of one stream with version < ``before_version``, newest first."""
        sid = validate_stream_id(stream_id)
        pool = await self._route(read_from, after)
        rows = await self._read(
            pool, "fetch", self._q.read_stream_backwards, sid, before_version, check_limit(limit)
        )
        return self._wrap(rows)

    async def read_all(
        self,
        *,
        after_position: int = 0,
        limit: int | None = None,
        event_types: Sequence[str] | None = None,
        stream_prefix: str | None = None,
        read_from: ReadFrom | None = None,
        after: int | WriteToken | None = None,
    ) -> list[RecordedEvent[Any]]:
        """The global log after ``after_position``, in position order, optionally filtered.

        Only events below the safe bound are returned (see the module docstring): a
        reader resuming from the last position it saw never skips an event that commits
        later. ``event_types`` keeps only those types; ``stream_prefix`` only streams whose
        id starts with it.
        """
        types = check_event_types(event_types)
        limit = check_limit(limit)
        pool = await self._route(read_from, after, log=True, seen=self._log_seen)
        # Below the cluster's xmin first (one plain statement: a page of a reader that
        # catches up ends here); the rest up to the horizon through read_all_page. On a
        # replica both bounds come from its own snapshot (log_horizon), each safe alone.
        rows = await self._read(
            pool, "fetch", self._q.read_all_below_xmin, after_position, limit, types, stream_prefix
        )
        if limit is None or len(rows) < limit:
            rows += await self._read(
                pool,
                "fetch",
                self._q.read_all,
                rows[-1][0] if rows else after_position,
                None if limit is None else limit - len(rows),
                types,
                stream_prefix,
            )
        return self._wrap(rows)

    async def iter_all(
        self,
        *,
        after_position: int = 0,
        page_size: int = 1000,
        event_types: Sequence[str] | None = None,
        stream_prefix: str | None = None,
        read_from: ReadFrom | None = None,
        after: int | WriteToken | None = None,
    ) -> AsyncIterator[RecordedEvent[Any]]:
        """Iterate the global log from ``after_position`` in pages of ``page_size``.

        Same order and filters as :meth:`read_all`; only one page is held in memory. Ends
        when it reaches the safe head.
        """
        if page_size < 1:
            raise ValidationError("page_size", "must be at least 1", page_size)
        cursor = after_position
        while True:
            page = await self.read_all(
                after_position=cursor,
                limit=page_size,
                event_types=event_types,
                stream_prefix=stream_prefix,
                read_from=read_from,
                after=after,
            )
            for recorded in page:
                yield recorded
            if len(page) < page_size:
                return
            cursor = page[-1].position

    async def read_events_by_id(
        self,
        event_ids: Sequence[uuid.UUID | int],
        *,
        read_from: ReadFrom | None = None,
        after: int | WriteToken | None = None,
    ) -> list[RecordedEvent[Any]]:
        """The stored events with these ids, in position order; ids not stored are left out.

        One query on the event-id index; not held back like :meth:`read_all`. Read from
        the primary unless ``read_from="replica"`` is passed (whatever the store's
        default): the executor looks a command's idempotency key up here, and a replica
        that has not replayed the first run would let the command run twice.
        """
        ids = [as_uuid(i) for i in event_ids]
        pool = await self._route(read_from or "primary", after)
        return self._wrap(await self._read(pool, "fetch", self._q.read_by_ids, ids))

    async def stream_version(
        self,
        stream_id: str,
        *,
        read_from: ReadFrom | None = None,
        after: int | WriteToken | None = None,
    ) -> int:
        """A stream's version: its number of events, plus one per truncation (0 = no stream)."""
        sid = validate_stream_id(stream_id)
        pool = await self._route(read_from, after)
        version = await self._read(pool, "fetchval", self._q.stream_version, sid)
        return int(version or 0)

    # -- stream lifecycle (eventcore.store.StreamLifecycle, migration 0006) ---------------

    async def _truncate(self, stream_id: str, before: int | None, expected: int) -> int:
        sid = validate_stream_id(stream_id)
        row = await self._fetchrow(self._q.truncate_stream, sid, before, expected)
        status, version = row[0], int(row[1])
        if status == "conflict":
            raise ConcurrencyConflict([(sid, expected, version)])
        if status == "range":
            raise out_of_range(sid, before or 0, version)
        return version

    async def delete_stream(self, stream_id: str, *, expected: int = -1) -> int:
        """Hide every event ``stream_id`` has now (a soft delete); its version.

        See :class:`~eventcore.store.StreamLifecycle`: the version stays, an append
        recreates the stream, the global log keeps the events until they are purged. The
        application role may call it (EXECUTE on ``truncate_stream``).

        Raises:
            ConcurrencyConflict: ``expected`` (as for an append) did not match.
        """
        return await self._truncate(stream_id, None, check_expected(expected))

    async def truncate_stream(
        self, stream_id: str, before_version: int, *, expected: int = -1
    ) -> int:
        """Hide the events of ``stream_id`` below ``before_version``; its version.

        Raises:
            ConcurrencyConflict: ``expected`` did not match; nothing hidden.
            ValidationError: ``before_version`` is not between 1 and the version + 1.
        """
        check_expected(expected)
        return await self._truncate(stream_id, check_before(before_version), expected)

    async def stream_bounds(self, stream_id: str) -> StreamBounds:
        """The first visible version and the version of ``stream_id``."""
        row = await self._fetchrow(self._q.stream_bounds, validate_stream_id(stream_id))
        if row is None:
            return StreamBounds(1, 0, False)
        return StreamBounds(int(row[0]), int(row[1]), bool(row[2]))

    async def purge_stream(self, stream_id: str, *, actor: str, reason: str) -> PurgeRecord:
        """Erase the hidden events of ``stream_id`` and record who, when, what and why.

        Runs the schema owner's ``purge_stream`` function: the application role may not
        (no EXECUTE), so connect as the owner (or a role it granted EXECUTE to) for it.
        The global log skips the erased positions from then on; their event ids are
        forgotten.

        Raises:
            StoreError: this connection's role may not purge.
        """
        check_purge(actor, reason)
        sid = validate_stream_id(stream_id)
        try:
            pool = await self._get_pool()
            row = await pool.fetchrow(self._q.purge_stream, sid, actor, reason)
        except pgerr.InsufficientPrivilegeError as exc:
            raise StoreError(
                "only the schema's owner may purge events (the application role has no"
                f" EXECUTE on purge_stream): {exc}"
            ) from exc
        except Exception as exc:
            raise translate(exc, "purge") from exc
        return PurgeRecord(*row)

    async def purge_log(self, stream_id: str | None = None) -> list[PurgeRecord]:
        """Every purge's audit record (of ``stream_id`` only), oldest first (the owner's
        table: the application role may not read it)."""
        rows = await self._fetch(self._q.purge_log, stream_id)
        return [PurgeRecord(*r) for r in rows]

    async def head(
        self, *, read_from: ReadFrom | None = None, after: int | WriteToken | None = None
    ) -> int:
        """The highest position a reader of the global log may safely read up to (0: none).

        Events committed above it (by appends newer than the oldest append of this store
        still in flight) become readable, in position order, once that append ends.
        """
        pool = await self._route(read_from, after, log=True)
        head = int(await self._read(pool, "fetchval", self._q.head))
        if self._replicas is not None:
            self._replicas.served(pool, head)
            self._log_seen = max(self._log_seen, head)
        return head

    async def log_holdback(self) -> LogHoldback | None:
        """The oldest append of this store still in flight (None: none is).

        :meth:`head` and :meth:`read_all` wait for it: while it runs, events committed by
        later appends are withheld (never skipped). A normal append is in flight for
        milliseconds; one that stays (a direct SQL caller's transaction left open, a
        prepared transaction) is named here with its age, for ``status()`` and alerts.
        Unrelated transactions, in this database or another, never hold the log back.
        ``started`` is None when ``pg_stat_activity`` hides another role's session
        (grant ``pg_read_all_stats`` to see it).
        """
        row = await self._fetchrow(self._q.holdback)
        if row is None:
            return None
        return LogHoldback(int(row[0]), row[1], row[2], row[3], int(row[4]))

    async def latest_position(self) -> int:
        """The highest committed position, which :meth:`read_all` may not reach yet."""
        return int(await self._fetchval(self._q.last_position))

    async def list_streams(
        self,
        *,
        prefix: str | None = None,
        after: str | None = None,
        limit: int | None = None,
        read_from: ReadFrom | None = None,
    ) -> list[tuple[str, int]]:
        """``(stream id, version)`` pairs sorted by stream id (code points), by prefix."""
        pool = await self._route(read_from, None)
        rows = await self._read(
            pool, "fetch", self._q.list_streams, prefix, after, check_limit(limit)
        )
        return [(r[0], r[1]) for r in rows]

    # -- what projections need (eventcore.store.ProjectionStore) --------------------

    @property
    def dense_positions(self) -> bool:
        """False: positions come from transaction ids (increasing, with gaps)."""
        return False

    async def count_events(self, after_position: int, upto: int) -> int:
        """How many events lie in ``(after_position, upto]`` (exact; capped at 10 million)."""
        if upto <= after_position:
            return 0
        pool = await self._route(None, None)
        return int(await self._read(pool, "fetchval", self._q.count_between, after_position, upto))

    async def read_columns(
        self, after_position: int, limit: int, known_types: int, known_streams: int
    ) -> ColumnBuffers | None:
        """None: columnar pages are built from :meth:`read_all`'s events."""
        return None

    def checkpoint_store(self) -> PostgresCheckpointStore:
        """Checkpoints, dead letters and leader leases in this store's schema."""
        from eventcore.postgres.checkpoint import PostgresCheckpointStore

        return PostgresCheckpointStore(self)

    async def subscribe_notifications(self) -> bool:
        """LISTEN for appends on a dedicated connection; False if that failed (polling).

        :meth:`wait_for_append` calls it; a lost listener is re-established on the next
        wait, and polling every :attr:`poll_interval` seconds covers the gap.
        """
        return await self._listener.subscribe()

    async def wait_for_append(self, after_position: int, timeout: float) -> int:
        """Wait until :meth:`head` passes ``after_position`` or ``timeout`` seconds pass.

        Wakes on the NOTIFY a store sends after its appends commit (any process); polls
        every :attr:`poll_interval` seconds as a fallback (e.g. for writers that call the
        ``append_events`` function directly: it sends no NOTIFY). Returns the head
        (``<= after_position`` on timeout).
        """
        return await self._listener.wait(after_position, timeout, self.poll_interval)

    # -- connections for the package (leases, LISTEN, NOTIFY, transactions) ----------

    @property
    def _owns_connections(self) -> bool:
        """Whether the store opens connections itself (from a DSN), not only a borrowed pool."""
        return self._dsn is not None

    @property
    def _has_sessions(self) -> bool:
        """Whether a connection of ours keeps its session (not one PgBouncer multiplexes)."""
        return not self.pgbouncer or self._direct_dsn is not None

    def _borrow(self) -> AbstractAsyncContextManager[asyncpg.Connection]:
        """A connection of the pool for the length of an ``async with`` block."""
        return _Borrowed(self, lend=False)

    def _lend(self) -> AbstractAsyncContextManager[asyncpg.Connection]:
        """A pool connection for user code (``apply_in_transaction``) for an ``async with``
        block; its session state is reset before the pool reuses it (an asyncpg pool
        resets every connection it takes back)."""
        return _Borrowed(self, lend=True)

    async def _connect(self, application_name: str) -> asyncpg.Connection:
        """A new connection of its own, outside the pool (the store must have a DSN)."""
        direct = self._direct_dsn
        return await asyncpg.connect(
            direct or self._dsn,
            timeout=self._connect_timeout,
            server_settings={"application_name": application_name},
            **({"statement_cache_size": 0} if self.pgbouncer and not direct else {}),
        )

    async def _dedicated_connection(self) -> tuple[asyncpg.Connection, bool]:
        """A connection kept for long (LISTEN, a session lock): opened from the DSN, or
        borrowed from a pool the store was given; and whether it was borrowed."""
        if not self._has_sessions:
            raise ConfigurationError(
                "LISTEN and leader leases need a session of their own: through PgBouncer, "
                "give PostgresStore(direct_dsn=...) a direct connection to the primary"
            )
        if self._owns_connections:
            return await self._connect("eventcore-listen"), False
        return await (await self._get_pool()).acquire(), True

    async def _release_dedicated(self, conn: asyncpg.Connection, borrowed: bool) -> None:
        """Give back (or close) a connection from :meth:`_dedicated_connection`."""
        try:
            if borrowed and self._pool is not None:
                await self._pool.release(conn)
            else:
                await conn.close(timeout=5)
        except Exception:
            conn.terminate()


class _Borrowed:
    """``async with store._borrow() as conn``: a pool connection, given back at the end."""

    __slots__ = ("_lease", "_lend", "_store")

    def __init__(self, store: PostgresStore, *, lend: bool) -> None:
        self._store = store
        self._lend = lend
        self._lease: Any = None

    async def __aenter__(self) -> asyncpg.Connection:
        pool = await self._store._get_pool()
        lend = self._lend and isinstance(pool, ConnectionPool)
        self._lease = pool.lend() if lend else pool.acquire()
        return await self._lease.__aenter__()

    async def __aexit__(self, *exc: Any) -> None:
        lease, self._lease = self._lease, None
        await lease.__aexit__(*exc)
