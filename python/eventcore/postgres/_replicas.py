"""Read replicas of a PostgreSQL store: routing, read-your-writes, lag and rotation.

A :class:`ReplicaSet` holds one connection pool per streaming replica (hot standby).
Reads routed to replicas take the next replica in rotation (round robin). A read that
must see a write waits until the replica has reached it, for at most ``wait`` seconds,
and otherwise goes to the primary. Two kinds of token say what to reach:

- a :class:`~eventcore.recorded.WriteToken` (every command result carries one): the
  write's last global position. Positions are ``transaction id * 2**20 + index``. A read
  of the global log (``read_all``, ``head``) needs the replica's log horizon
  (``log_horizon()``, on a hot standby its snapshot's xmin) past the position: the
  commit is replayed and no older writer is open, so it shows the write and never skips
  an event before it. A stream read needs only the transaction visible in the
  replica's snapshot (``pg_visible_in_snapshot``): a long transaction on the primary
  holds a standby's xmin back, and with it every global-log read, not the stream reads;
- a WAL position of the primary (an int, :meth:`PostgresStore.write_token`): replayed
  up to it.

Rotation: a replica whose read failed for a connection reason, whose replay lags more
than ``max_lag`` seconds, or that is no longer in recovery (promoted) leaves the
rotation; a background probe, at most every ``probe_interval`` seconds, measures every
replica (replayed position, lag in bytes and seconds) and puts a healthy one back. Reads
never wait for a probe: they use what the last one saw.

Lag in seconds: ``now() - pg_last_xact_replay_timestamp()`` while the replica has
received WAL it has not replayed yet, else 0 (an idle primary sends nothing to replay,
and the timestamp's age is then no lag).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Literal
from urllib.parse import urlsplit

import asyncpg

from eventcore.observe import report_replica_status
from eventcore.postgres._errors import _NOT_UNAVAILABLE, _UNAVAILABLE
from eventcore.postgres._pool import ConnectionPool
from eventcore.postgres._sql import POSITION_SHIFT

__all__ = ["ReadFrom", "ReplicaSet", "ReplicaStatus"]

ReadFrom = Literal["primary", "replica"]
"""Where a read goes: the primary, or a replica in rotation (the primary when none is)."""

# WAL positions as plain integers (bytes since 0/0): comparable, and a token is an int.
# The horizon as a position: every position below it is final on the replica. On a hot
# standby log_horizon() (migration 0003) is its snapshot's xmin; that expression here
# needs no schema (a replica has it before the store's migration reaches it).
HORIZON = f"pg_snapshot_xmin(pg_current_snapshot())::text::bigint * {POSITION_SHIFT}"
REACHED = (
    f"SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint, {HORIZON},"
    f" pg_visible_in_snapshot(($1::bigint / {POSITION_SHIFT})::text::xid8,"
    " pg_current_snapshot())"
)
PRIMARY_LSN = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint"
# The primary's timeline (the first 8 hex digits of its current WAL file's name; a
# promotion starts a new one); 0 on a standby.
TIMELINE = (
    "SELECT CASE WHEN pg_is_in_recovery() THEN 0"
    " ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int END"
)
PROBE = (
    """
SELECT pg_is_in_recovery(),
       (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint,
       CASE WHEN pg_last_wal_receive_lsn() IS NULL
              OR pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8
       END,
       """
    + HORIZON
)


def describe(dsn: str) -> str:
    """``host:port/database`` of a DSN: no user or password (for status and errors)."""
    parts = urlsplit(dsn)
    return f"{parts.netloc.rpartition('@')[2]}{parts.path}"


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """One replica as the last probe saw it.

    Attributes:
        replica: ``host:port/database`` (no credentials).
        in_rotation: whether reads go to it now.
        replay_lsn: the WAL position it has replayed (bytes; None: unknown).
        lag_bytes: WAL the primary has written that it has not replayed (None: unknown).
        lag_seconds: age of the oldest transaction it has received but not replayed
            (0: nothing pending; None: unknown).
        error: why it is out of rotation (None: it is in).
    """

    replica: str
    in_rotation: bool
    replay_lsn: int | None
    lag_bytes: int | None
    lag_seconds: float | None
    error: str | None


class _Replica:
    __slots__ = (
        "dsn",
        "error",
        "horizon",
        "lag_bytes",
        "lag_seconds",
        "pool",
        "probed_at",
        "probing",
        "replay_lsn",
    )

    def __init__(self, dsn: str, pool: ConnectionPool) -> None:
        self.dsn = dsn
        self.pool = pool
        self.error: str | None = None  # set: out of rotation
        self.replay_lsn: int | None = None
        self.horizon = 0  # positions below it are final there (0: not known)
        self.lag_seconds: float | None = None
        self.lag_bytes: int | None = None
        self.probed_at = 0.0
        self.probing: asyncio.Task[None] | None = None


class ReplicaSet:
    """The replicas of one store (see the module docstring).

    Args:
        dsns: one libpq URL per replica.
        connect: opens a connection to a DSN with the store's settings.
        primary_lsn: the primary's WAL position now (for the lag in bytes).
        max_size: each replica pool's maximum number of connections.
        wait: seconds a read with a write token waits for a replica to replay it.
        max_lag: replay lag in seconds beyond which a replica leaves the rotation.
        probe_interval: seconds between probes of each replica.
    """

    def __init__(
        self,
        dsns: Sequence[str],
        connect: Callable[[str], Awaitable[asyncpg.Connection]],
        primary_lsn: Callable[[], Awaitable[int]],
        *,
        max_size: int,
        wait: float,
        max_lag: float,
        probe_interval: float = 1.0,
    ) -> None:
        self._replicas = [
            _Replica(dsn, ConnectionPool(partial(connect, dsn), min_size=0, max_size=max_size))
            for dsn in dsns
        ]
        self._primary_lsn = primary_lsn
        self.wait = wait
        self.max_lag = max_lag
        self.probe_interval = probe_interval
        self._next = 0

    def __len__(self) -> int:
        return len(self._replicas)

    # -- routing -----------------------------------------------------------------------

    async def pick(
        self, lsn: int | None = None, position: int = 0, *, log: bool = False, seen: int = 0
    ) -> ConnectionPool | None:
        """A replica's pool for one read (None: read from the primary).

        ``lsn``: a WAL position the replica must have replayed; ``position``: a global
        position it must show (0: none), to a read of the global log (``log``: its horizon
        past it) or of streams (its transaction visible). The chosen replica is polled
        until it has both, for at most :attr:`wait` seconds (then None). ``seen``: a head
        this store has read; only a replica known to be past it may serve (never waited
        for: else the primary).
        """
        now = time.monotonic()
        for replica in self._replicas:
            if now - replica.probed_at >= self.probe_interval and replica.probing is None:
                replica.probing = asyncio.get_running_loop().create_task(self._probe(replica))
        live = [r for r in self._replicas if r.error is None and (not seen or r.horizon > seen)]
        if not live:
            return None
        self._next = (self._next + 1) % len(live)
        if lsn is None and not position:
            return live[self._next].pool
        ready = [r for r in live if self._has(r, lsn, position, False)]
        if ready:
            return ready[self._next % len(ready)].pool
        # Wait for the replica known to be furthest along.
        best = max(live, key=lambda r: (r.horizon, r.replay_lsn or 0))
        return await self._wait_for(best, lsn, position, log)

    def served(self, pool: ConnectionPool, head: int) -> None:
        """A replica's pool answered :meth:`PostgresStore.head` with ``head``: its horizon
        is past it (what a later read that must reach that head checks)."""
        for replica in self._replicas:
            if replica.pool is pool and replica.error is None:
                replica.horizon = max(replica.horizon, head + 1)

    @staticmethod
    def _has(replica: _Replica, lsn: int | None, position: int, visible: bool) -> bool:
        """Whether the replica covers the token: what it was last seen to have, and
        ``visible`` (the token's transaction in its snapshot now, for a stream read)."""
        if lsn is not None and (replica.replay_lsn is None or replica.replay_lsn < lsn):
            return False
        return not position or replica.horizon > position or visible

    async def _wait_for(
        self, replica: _Replica, lsn: int | None, position: int, log: bool
    ) -> ConnectionPool | None:
        deadline = time.monotonic() + self.wait
        pause = 0.001
        while True:
            try:
                row = await replica.pool.fetchrow(REACHED, position)
            except Exception as exc:
                self.failed(replica.pool, exc)
                return None
            if row[0] is not None:
                replica.replay_lsn = max(replica.replay_lsn or 0, row[0])
            replica.horizon = max(replica.horizon, row[1])
            if self._has(replica, lsn, position, row[2] and not log):
                return replica.pool
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 0.02)

    def failed(self, pool: ConnectionPool, exc: BaseException) -> None:
        """A read on ``pool`` failed for a connection reason: out of rotation until a
        probe succeeds."""
        for replica in self._replicas:
            if replica.pool is pool:
                replica.error = f"{type(exc).__name__}: {exc}"
                replica.probed_at = time.monotonic()  # the next probe after an interval

    # -- probes ------------------------------------------------------------------------

    async def _probe(self, replica: _Replica) -> None:
        """Measure one replica, update its place in the rotation, tell the hooks."""
        try:
            primary: int | None = await self._primary_lsn()
        except Exception:
            primary = None  # the primary is down: the replica can still be measured
        try:
            row = await asyncio.wait_for(replica.pool.fetchrow(PROBE), self.probe_interval * 5)
        except Exception as exc:
            replica.error = f"{type(exc).__name__}: {exc}"
        else:
            in_recovery, lsn, lag = row[0], row[1], row[2]
            replica.replay_lsn = lsn
            replica.horizon = row[3]
            replica.lag_seconds = lag
            replica.lag_bytes = None if primary is None or lsn is None else max(0, primary - lsn)
            if not in_recovery:
                replica.error = "not a replica any more (promoted?)"
            elif lag is not None and lag > self.max_lag:
                replica.error = f"replay lag {lag:.1f} s > max {self.max_lag} s"
            else:
                replica.error = None
        finally:
            replica.probed_at = time.monotonic()
            replica.probing = None
        report_replica_status(self._status_of(replica))

    @staticmethod
    def _status_of(r: _Replica) -> ReplicaStatus:
        return ReplicaStatus(
            describe(r.dsn), r.error is None, r.replay_lsn, r.lag_bytes, r.lag_seconds, r.error
        )

    async def status(self) -> list[ReplicaStatus]:
        """Probe every replica now; their status."""
        for replica in self._replicas:
            if replica.probing is not None:
                with contextlib.suppress(Exception):
                    await replica.probing
            await self._probe(replica)
        return [self._status_of(r) for r in self._replicas]

    # -- closing -----------------------------------------------------------------------

    async def close(self) -> None:
        """Stop the probes and close every replica pool."""
        for replica in self._replicas:
            task, replica.probing = replica.probing, None
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            try:
                await asyncio.wait_for(replica.pool.close(), 10)
            except Exception:
                replica.pool.terminate()


def is_replica_failure(exc: BaseException) -> bool:
    """Whether a read's failure on a replica sends it to the primary (connection lost,
    the server refusing, or a query cancelled by a conflict with recovery)."""
    return isinstance(exc, _UNAVAILABLE) and not isinstance(exc, _NOT_UNAVAILABLE)
