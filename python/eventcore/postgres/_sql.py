"""SQL text of the PostgreSQL store: migrations shipped in the package, and the queries.

The schema name is the only thing ever formatted into SQL, and only after it matched
:data:`SCHEMA_NAME`; every value is a bind parameter.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

from eventcore.errors import ConfigurationError

SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,47}")
"""What a schema name may be: an SQL identifier of at most 48 ASCII letters, digits, ``_``."""

POSITION_SHIFT = 1 << 20
"""Positions are ``transaction id * POSITION_SHIFT + index within the transaction``."""

MAX_POSITION = (1 << 63) - 1
"""The largest position (bigint): the upper bound of a range that has none."""

VERSION_TABLE_COMMENT = "eventcore schema versions"
"""Marks the ``schema_version`` table as ours (a same-named foreign table has no such mark)."""

OUR_OBJECTS = (
    "events",
    "streams",
    "schema_version",
    "projection_checkpoints",
    "projection_dead_letters",
    "snapshots",
    "subject_keys",
    "purges",
    "event_tags",
    "detached_partitions",
)
"""Relation names a migration creates: a foreign one with such a name stops the migration."""


SYSTEM_SCHEMAS = re.compile(r"(?i)pg_.*|information_schema")
"""Schema names PostgreSQL keeps for itself (``pg_catalog``, ``pg_toast``, ``pg_temp_3``...)."""


def check_schema_name(schema: str) -> str:
    """Return ``schema`` if it may hold a store, else raise ConfigurationError.

    It must be an SQL identifier of at most 48 ASCII letters, digits and ``_``, and not
    a system schema (``information_schema`` or any ``pg_*`` name, in any letter case).
    """
    if not isinstance(schema, str) or not SCHEMA_NAME.fullmatch(schema):
        raise ConfigurationError(
            f"schema: must be an SQL identifier: [A-Za-z_][A-Za-z0-9_]*, at most 48 chars "
            f"(got {schema!r})"
        )
    if SYSTEM_SCHEMAS.fullmatch(schema):
        raise ConfigurationError(
            f"schema: {schema!r} is a PostgreSQL system schema; choose a schema of your own"
        )
    return schema


def quote(schema: str) -> str:
    """The schema name as a quoted identifier (it was validated, so no escaping is needed)."""
    return f'"{check_schema_name(schema)}"'


def channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel an append on ``schema`` notifies."""
    return f"{check_schema_name(schema)}_events"


def query_arrays(
    items: Sequence[tuple[Sequence[str], Sequence[str]]],
) -> tuple[list[str], list[int], list[str], list[int]]:
    """A query's ``(types, tags)`` items as the four arrays the SQL functions take
    (migration 0014): every item's types in one list and where each item's run ends
    (1-based, inclusive), then the same for tags."""
    types: list[str] = []
    type_ends: list[int] = []
    tags: list[str] = []
    tag_ends: list[int] = []
    for item_types, item_tags in items:
        types += item_types
        type_ends.append(len(types))
        tags += item_tags
        tag_ends.append(len(tags))
    return types, type_ends, tags, tag_ends


def projection_lock_key(schema: str, name: str) -> int:
    """The advisory-lock key of projection ``name`` in ``schema`` (a positive bigint)."""
    return (0x50524F4A << 31) | zlib.crc32(f"{schema}\x00{name}".encode())


# A NOTIFY takes a transaction id, so its commit writes a WAL record; waiting for that
# record's flush (synchronous_commit) would add one flush per notification to the ones
# the appends wait for. Notifications are not durable anyway: this one commits without
# waiting (SET LOCAL, so a borrowed pool's connection keeps its settings).
NOTIFY = "SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, $2)"
"""Announce a committed position ($2) on a channel ($1)."""

# A connection that LISTENs on a store's channel holds this shared session lock (key: the
# channel), so a notifier finds out in pg_locks whether anyone listens, and sends nothing
# while nobody does.
LISTENING = "SELECT pg_advisory_lock_shared(hashtext('eventcore.listen'), hashtext($1))"
"""Mark this session as a listener of a channel ($1) until it ends or unlocks."""
NOT_LISTENING = "SELECT pg_advisory_unlock_shared(hashtext('eventcore.listen'), hashtext($1))"
"""Undo :data:`LISTENING` (a borrowed connection going back to its pool)."""
LISTENED = (
    "SELECT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory'"
    " AND l.database = (SELECT d.oid FROM pg_database d WHERE d.datname = current_database())"
    " AND l.classid = hashtext('eventcore.listen')::oid AND l.objid = hashtext($1)::oid"
    " AND l.objsubid = 2 AND l.granted)"
)
"""Whether any session listens on a channel ($1) (see :data:`LISTENING`)."""

TRY_LOCK = "SELECT pg_try_advisory_lock($1)"
"""Take a session-level advisory lock (a projection's leadership) if it is free."""

UNLOCK_ALL = "SELECT pg_advisory_unlock_all()"
"""Release every session-level advisory lock of the connection."""

PING = "SELECT 1"
"""Check that a connection is alive."""


def migration_lock_key(schema: str) -> int:
    """The advisory-lock key that serializes migrations of ``schema`` (a positive bigint)."""
    return (0x45434F52 << 32) | zlib.crc32(schema.encode())


@dataclass(frozen=True)
class Migration:
    """One versioned SQL migration shipped in ``eventcore/postgres/migrations``."""

    version: int
    name: str
    template: str

    def sql(self, schema: str) -> str:
        """The migration's SQL for ``schema``."""
        return self.template.replace("__SCHEMA__", quote(schema)).replace(
            "__CHANNEL__", channel(schema)
        )


_MIGRATION_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@cache
def migrations() -> tuple[Migration, ...]:
    """Every shipped migration, in version order (versions are 1, 2, 3, ... without gaps)."""
    folder = resources.files("eventcore.postgres") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_FILE.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"eventcore migrations are not numbered 1..N: {found!r}")
    return tuple(found)


def _direct_append(s: str, *, one: bool, update: bool) -> str:
    """append_stream's work (migration 0016) as one statement; ``s``: the quoted schema.

    In the order append_stream keeps: the shared locks of the written types and the whole
    log (lock_written's keys, sorted), then the stream lock, all in a MATERIALIZED CTE
    that the write reads before it writes; the write statement holds the events table's
    lock from its start and takes the transaction id with its first row, so the id comes
    after every lock (the never-skipping log). Nothing is written in a caller's
    transaction that holds an id already (stream_conflict then raises EC001).
    ``update``: the expected version is a number above 0 or "exists" (an UPDATE of the
    stream row); else "none", 0 or "any" (an upsert). ``one``: one event, whose id, type
    and payload are parameters 3 to 5 themselves rather than arrays of one.
    """
    # The keys of migrations 0008 and 0001, as their SQL spells them (quoted schema).
    dcb = f"pg_catalog.hashtext('eventcore.dcb.{s}')"
    streams = f"pg_catalog.hashtext('eventcore.streams.{s}')"
    if one:  # $3, $4, $5: the event's id, type and payload (no arrays to build and read)
        n = "1"
        ids = "ARRAY[$3::uuid]"
        type_key = "pg_catalog.hashtext('type:' || $4::text)"
        all_key = "pg_catalog.hashtext('all:')"
        locks = (
            f"SELECT pg_catalog.pg_advisory_xact_lock_shared({dcb}, least({type_key}, {all_key})),"
            f" pg_catalog.pg_advisory_xact_lock_shared({dcb}, greatest({type_key}, {all_key})),"
        )
        rows = ""
        position = f"pg_catalog.pg_current_xact_id()::text::bigint * {POSITION_SHIFT}"
        values = "$3::uuid, $1::text, st.version, $4::text, $5::bytea"
    else:
        n = "pg_catalog.cardinality($3::uuid[])"
        ids = "$3::uuid[]"
        locks = (
            f"WITH k AS MATERIALIZED (SELECT pg_catalog.count("
            f"pg_catalog.pg_advisory_xact_lock_shared({dcb}, x.key)) FROM (SELECT DISTINCT"
            f" pg_catalog.hashtext('type:' || t) AS key FROM pg_catalog.unnest($4::text[]) t"
            f" UNION SELECT pg_catalog.hashtext('all:') ORDER BY 1) x) SELECT"
        )
        rows = (
            ", ROWS FROM (pg_catalog.unnest($3::uuid[]), pg_catalog.unnest($4::text[]),"
            " pg_catalog.unnest($5::bytea[])) WITH ORDINALITY AS y(id, t, p, i)"
        )
        position = f"pg_catalog.pg_current_xact_id()::text::bigint * {POSITION_SHIFT} + y.i - 1"
        values = f"y.id, $1::text, st.version - {n} + y.i, y.t, y.p"
    lock = (
        f"{locks} pg_catalog.pg_current_xact_id_if_assigned() IS NULL AS free,"
        f" pg_catalog.pg_advisory_xact_lock({streams}, pg_catalog.hashtext($1::text))"
        + (" FROM k" if not one else "")
    )
    if update:
        write = (
            f"UPDATE {s}.streams st SET version = st.version + {n} FROM a"
            " WHERE a.free AND st.stream_id = $1::text AND (st.version = $2::bigint"
            " OR ($2::bigint = -2 AND st.version > 0)) RETURNING st.version"
        )
    else:
        write = (
            f"INSERT INTO {s}.streams AS st (stream_id, version) SELECT $1::text, {n} FROM a"
            f" WHERE a.free ON CONFLICT (stream_id) DO UPDATE SET version = st.version + {n}"
            " WHERE $2::bigint = -1 OR st.version = 0 RETURNING st.version"
        )
    return (
        f"WITH a AS MATERIALIZED ({lock}), st AS ({write}), ev AS ("
        f"INSERT INTO {s}.events (position, event_id, stream_id, version, event_type, payload,"
        " causation_id, correlation_id, user_id, custom)"
        f" SELECT {position}, {values}, $6::uuid, $7::uuid, $8::text, $9::jsonb FROM st{rows}"
        " RETURNING position, version)"
        " SELECT w.first, w.last, CASE WHEN w.last IS NULL THEN"
        f" {s}.stream_conflict($1::text, $2::bigint, {ids}, NOT a.free) END"
        " FROM a, (SELECT min(ev.position) AS first, max(ev.version) AS last FROM ev) w"
    )


def _direct_tagged_append(s: str, *, one: bool, update: bool, inline: bool) -> str:
    """append_tagged_stream's work (migration 0018) as one statement for a store whose role
    may write the tables; ``s``: the quoted schema; ``one`` and ``update`` as for
    :func:`_direct_append`, whose statement this is with tags and a condition.

    Parameters: append_tagged_stream's 17 (one event's id, type and payload as scalars
    when ``one``), then the advisory keys as text ($18, ``kind:value`` as migration 0008
    spells them) and whether each is taken exclusive ($19). In the order of
    append_tagged_stream: the keys hashed, each once (exclusive if any entry is), sorted,
    then the stream lock, all in MATERIALIZED CTEs the write reads first; then the
    condition through ``condition_match`` (a VOLATILE function: its statements read a
    snapshot taken after the locks, where this statement's own was taken before them);
    then, only when it matched nothing, the write with the tag rows (the events table's
    lock held from the statement's start, the transaction id taken by the first row
    written). Rows: first position, new version, the condition's match (-1: it matched and
    an event id is stored, a replay), stream_conflict's row when nothing was written
    otherwise; after a failed condition read_query's rows (head row first) in columns 5 on.

    ``inline``: the condition is one item with one tag (a decision's), checked in the
    statement itself with its own snapshot when that snapshot is as good as a fresh one:
    when no transaction it does not see (running when it was taken, or given an id after
    it: below this append's own id, taken here after the locks) has committed since. A
    writer of a locked key that committed before the locks were granted is one of those;
    a writer still to come waits for this one's locks. Otherwise, and when the check
    matched (to tell a replay apart with a fresh snapshot), condition_match answers.
    More than 64 ids handed out meanwhile: condition_match too, without looking.
    """
    dcb = f"pg_catalog.hashtext('eventcore.dcb.{s}')"
    streams = f"pg_catalog.hashtext('eventcore.streams.{s}')"
    if one:
        n, ids = "1", "ARRAY[$3::uuid]"
        rows, position = "", f"pg_catalog.pg_current_xact_id()::text::bigint * {POSITION_SHIFT}"
        values = "$3::uuid, $1::text, st.version, $4::text, $5::bytea"
    else:
        n, ids = "pg_catalog.cardinality($3::uuid[])", "$3::uuid[]"
        rows = (
            ", ROWS FROM (pg_catalog.unnest($3::uuid[]), pg_catalog.unnest($4::text[]),"
            " pg_catalog.unnest($5::bytea[])) WITH ORDINALITY AS y(id, t, p, i)"
        )
        position = f"pg_catalog.pg_current_xact_id()::text::bigint * {POSITION_SHIFT} + y.i - 1"
        values = f"y.id, $1::text, st.version - {n} + y.i, y.t, y.p"
    match = (
        f"{s}.condition_match($12::text[], $13::integer[], $14::text[], $15::integer[],"
        f" $16::bigint, {ids})"
    )
    # Any other query calls condition_match. Checking it inline too would be exact (the
    # commit check below does not depend on the query's shape: a writer of any event the
    # query matches holds a key the condition's exclusive keys exclude), but a search of
    # every shape in one statement measured no cheaper than the call (issue 19, 0019).
    check = f"CASE WHEN $13::integer[] IS NOT NULL THEN {match} END"
    if inline:
        snap = "pg_catalog.pg_current_snapshot()"
        xmax = f"pg_catalog.pg_snapshot_xmax({snap})::text::bigint"
        own = "pg_catalog.pg_current_xact_id()::text::bigint"
        # Both subqueries name a column of a: a subquery that does not would be an InitPlan,
        # run when m starts, before a's locks are taken.
        hit = (
            f"(SELECT t0.position FROM {s}.event_tags t0 WHERE a.free IS NOT NULL"
            " AND t0.tag = ($14::text[])[1]"
            " AND t0.position > $16::bigint AND (pg_catalog.cardinality($12::text[]) = 0"
            f" OR EXISTS (SELECT 1 FROM {s}.events e WHERE e.position = t0.position"
            " AND e.event_type = ANY ($12::text[]))) ORDER BY t0.position LIMIT 1)"
        )
        unseen = (
            f"(SELECT pg_catalog.pg_snapshot_xip({snap}) AS x UNION ALL SELECT g::text::xid8"
            # This append's own id, as a subquery of a: a call among a function's
            # arguments is run by the planner to estimate the rows (pg_current_xact_id is
            # STABLE), which would take the id while planning, before the locks.
            " FROM pg_catalog.generate_series("
            f"{xmax}, (SELECT {own} - 1 WHERE a.free IS NOT NULL)) g)"
        )
        check = (
            f"CASE WHEN {hit} IS NOT NULL THEN {match} WHEN {own} - {xmax} > 64"
            f" OR EXISTS (SELECT 1 FROM {unseen} c WHERE a.free IS NOT NULL"
            f" AND pg_catalog.pg_xact_status(c.x) = 'committed') THEN {match} END"
        )
    locks = (
        "k AS MATERIALIZED (SELECT pg_catalog.count(CASE WHEN z.x THEN"
        f" pg_catalog.pg_advisory_xact_lock({dcb}, z.k) ELSE"
        f" pg_catalog.pg_advisory_xact_lock_shared({dcb}, z.k) END) FROM (SELECT"
        " pg_catalog.hashtext(u.w) AS k, pg_catalog.bool_or(u.x) AS x FROM ROWS FROM"
        " (pg_catalog.unnest($18::text[]), pg_catalog.unnest($19::boolean[])) u(w, x)"
        " GROUP BY 1 ORDER BY 1) z),"
        " a AS MATERIALIZED (SELECT pg_catalog.pg_current_xact_id_if_assigned() IS NULL AS free,"
        f" pg_catalog.pg_advisory_xact_lock({streams}, pg_catalog.hashtext($1::text)) FROM k),"
        f" m AS MATERIALIZED (SELECT {check} AS matched FROM a)"
    )
    if update:
        write = (
            f"UPDATE {s}.streams st SET version = st.version + {n} FROM a, m"
            " WHERE a.free AND m.matched IS NULL AND st.stream_id = $1::text"
            " AND (st.version = $2::bigint OR ($2::bigint = -2 AND st.version > 0))"
            " RETURNING st.version"
        )
    else:
        write = (
            f"INSERT INTO {s}.streams AS st (stream_id, version) SELECT $1::text, {n} FROM a, m"
            " WHERE a.free AND m.matched IS NULL ON CONFLICT (stream_id) DO UPDATE"
            f" SET version = st.version + {n} WHERE $2::bigint = -1 OR st.version = 0"
            " RETURNING st.version"
        )
    nulls = ", NULL::bigint" * 2 + ", NULL::bytea, NULL::text, NULL::bigint, NULL::text"
    nulls += ", NULL::bytea, NULL::timestamptz, NULL::text, NULL::text[]"
    return (
        f"WITH {locks}, st AS ({write}), ev AS ("
        f"INSERT INTO {s}.events (position, event_id, stream_id, version, event_type, payload,"
        " causation_id, correlation_id, user_id, custom)"
        f" SELECT {position}, {values}, $6::uuid, $7::uuid, $8::text, $9::jsonb FROM st{rows}"
        " RETURNING position, version),"
        " w AS (SELECT pg_catalog.min(ev.position) AS first, pg_catalog.max(ev.version) AS last"
        " FROM ev),"
        # The store sends each event's tags checked (each once): no DISTINCT needed.
        f" tg AS (INSERT INTO {s}.event_tags (tag, position) SELECT g.tag, w.first + g.i - 1"
        " FROM w, ROWS FROM (pg_catalog.unnest($10::text[]), pg_catalog.unnest($11::integer[]))"
        " g(tag, i) WHERE w.first IS NOT NULL)"
        " SELECT w.first, w.last, m.matched, CASE WHEN w.last IS NULL AND m.matched IS NULL"
        f" THEN {s}.stream_conflict($1::text, $2::bigint, {ids}, NOT a.free) END{nulls}"
        " FROM a, m, w"
        " UNION ALL SELECT NULL, NULL, NULL, NULL, r.* FROM m, LATERAL"
        f" {s}.read_query($12::text[], $13::integer[], $14::text[], $15::integer[], $16::bigint,"
        " $17::bigint) r WHERE m.matched > 0 AND $17::bigint > 0"
    )


def _direct_tagged_streams_append(s: str) -> str:
    """append_tagged_streams' work (migration 0019) as one statement for a store whose role
    may write the tables (and call write_tagged_streams); ``s``: the quoted schema.

    Parameters: append_tagged_streams' 18, then the advisory keys as text ($19,
    ``kind:value`` as migration 0008 spells them) and whether each is taken exclusive
    ($20). In the order of append_tagged_streams, each in a MATERIALIZED CTE the next
    reads: the keys hashed, each once (exclusive if any entry is), sorted; the stream
    locks (written exclusive, only checked shared), sorted; the condition through
    ``condition_match``; then, only when it matched nothing, write_tagged_streams, whose
    statement reads a snapshot taken after the locks (this statement's own was taken
    before them) and takes the transaction id after the events table's lock. The
    condition is never checked inline here: that check takes this transaction's id, which
    must come after the events table's lock, and this statement does not write the events
    itself. Rows: append_tagged_streams'.
    """
    dcb = f"pg_catalog.hashtext('eventcore.dcb.{s}')"
    streams = f"pg_catalog.hashtext('eventcore.streams.{s}')"
    tail = ", ".join(
        f"(w.r).{c}" for c in ("conflict_expected", "tail_streams", "tail_types", "tail_payloads")
    )
    tail += ", (w.r).tail_versions, (w.r).tail_positions"
    nulls = ", NULL::bigint" * 2 + ", NULL::bytea, NULL::text, NULL::bigint, NULL::text"
    nulls += ", NULL::bytea, NULL::timestamptz, NULL::text, NULL::text[]"
    return (
        "WITH k AS MATERIALIZED (SELECT pg_catalog.count(CASE WHEN z.x THEN"
        f" pg_catalog.pg_advisory_xact_lock({dcb}, z.k) ELSE"
        f" pg_catalog.pg_advisory_xact_lock_shared({dcb}, z.k) END) FROM (SELECT"
        " pg_catalog.hashtext(u.w) AS k, pg_catalog.bool_or(u.x) AS x FROM ROWS FROM"
        " (pg_catalog.unnest($19::text[]), pg_catalog.unnest($20::boolean[])) u(w, x)"
        " GROUP BY 1 ORDER BY 1) z),"
        # k is one row, read before the first stream lock whichever side of the join it is.
        " a AS MATERIALIZED (SELECT pg_catalog.count(CASE WHEN z.x THEN"
        f" pg_catalog.pg_advisory_xact_lock({streams}, z.k) ELSE"
        f" pg_catalog.pg_advisory_xact_lock_shared({streams}, z.k) END) AS n FROM k, (SELECT"
        " pg_catalog.hashtext(u.s) AS k, pg_catalog.bool_or(u.w) AS x FROM (SELECT s, true AS w"
        " FROM pg_catalog.unnest($4::text[]) s UNION ALL SELECT s, false"
        " FROM pg_catalog.unnest($1::text[]) s) u GROUP BY 1 ORDER BY 1) z),"
        " m AS MATERIALIZED (SELECT CASE WHEN $14::integer[] IS NOT NULL THEN"
        f" {s}.condition_match($13::text[], $14::integer[], $15::text[], $16::integer[],"
        " $17::bigint, $3::uuid[]) END AS matched FROM a),"
        " w AS MATERIALIZED (SELECT CASE WHEN m.matched IS NULL THEN"
        f" {s}.write_tagged_streams($1::text[], $2::bigint[], $3::uuid[], $4::text[],"
        " $5::text[], $6::bytea[], $7::uuid, $8::uuid, $9::text, $10::jsonb, $11::text[],"
        " $12::integer[]) END AS r FROM m)"
        f" SELECT (w.r).first_position, (w.r).streams, (w.r).versions, m.matched, {tail}{nulls}"
        " FROM m, w"
        " UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, r.*"
        f" FROM m, LATERAL {s}.read_query($13::text[], $14::integer[], $15::text[],"
        " $16::integer[], $17::bigint, $18::bigint) r WHERE m.matched > 0 AND $18::bigint > 0"
    )


DIRECT_READ_TAGS = 4
"""The most tags of the one query item a direct query read takes (see :func:`_direct_read`)."""

FOLD_BY_COUNT = 4
"""The most streams a fold reads with one text parameter each (see ``Queries.fold_by_count``)."""


def _direct_read(s: str, *, tags: int, typed: bool) -> str:
    """read_query's answer (migration 0014) for a query of ONE item with ``tags`` tags
    (``typed``: and types) as one statement; ``s``: the quoted schema. The same parameters
    and rows: the head row first, then the events.

    The head is the newest event when it lies below the statement snapshot's xmin: every
    transaction below xmin has ended, so every event up to it is final and visible to this
    very snapshot, which also reads the events (safe_head's first answer, without a
    function call or a second snapshot). Otherwise (an append in flight) the head row's
    head is NULL and read_query itself answers in the same statement: its own rows follow.
    """
    others = "".join(
        f" AND EXISTS (SELECT 1 FROM {s}.event_tags t{k} WHERE t{k}.position = t0.position"
        f" AND t{k}.tag = ($3::text[])[{k + 1}])"
        for k in range(1, tags)
    )
    of_types = " AND e.event_type = ANY ($1::text[])" if typed else ""
    return (
        "WITH h AS MATERIALIZED (SELECT CASE WHEN m.p < pg_snapshot_xmin(pg_current_snapshot())"
        f"::text::bigint * {POSITION_SHIFT} THEN m.p END AS head"
        f" FROM (SELECT coalesce(max(e.position), 0) AS p FROM {s}.events e) m)"
        " SELECT h.head, NULL::bigint, NULL::bytea, NULL::text, NULL::bigint, NULL::text,"
        " NULL::bytea, NULL::timestamptz, NULL::text, NULL::text[] FROM h"
        " UNION ALL (SELECT NULL, e.position, uuid_send(e.event_id), e.stream_id::text,"
        " e.version, e.event_type, e.payload, e.recorded_at, CASE WHEN e.causation_id IS NULL"
        " AND e.correlation_id IS NULL AND e.user_id IS NULL AND e.custom IS NULL THEN NULL"
        " ELSE json_build_array(e.causation_id, e.correlation_id, e.user_id, e.custom)::text"
        f" END, ARRAY(SELECT t.tag::text FROM {s}.event_tags t WHERE t.position = e.position"
        " ORDER BY t.tag)"
        f" FROM h, {s}.event_tags t0 JOIN {s}.events e ON e.position = t0.position"
        " WHERE h.head > $5::bigint AND t0.tag = ($3::text[])[1] AND t0.position > $5::bigint"
        f" AND t0.position <= h.head{of_types}{others}"
        " ORDER BY t0.position LIMIT $6::bigint)"
        f" UNION ALL SELECT r.* FROM h, LATERAL {s}.read_query($1::text[], $2::integer[],"
        " $3::text[], $4::integer[], $5::bigint, $6::bigint) r WHERE h.head IS NULL"
    )


class Queries:
    """Every statement the store runs, formatted once for one schema."""

    def __init__(self, schema: str) -> None:
        s = quote(schema)
        # The columns RecordedEvent is built from, in its order. The event id as its 16
        # bytes (uuid_send): asyncpg's UUID objects are tracked by Python's cyclic GC and
        # bytes are not; with one UUID less per event a read of the log spends about a
        # third less time in collections (RecordedEvent.event_id converts on access). The
        # metadata as ONE column, NULL when the event has none (most): see
        # Metadata.from_json_array.
        cols = (
            "position, uuid_send(event_id), stream_id, version, event_type, payload,"
            " recorded_at,"
            " CASE WHEN causation_id IS NULL AND correlation_id IS NULL AND user_id IS NULL"
            " AND custom IS NULL THEN NULL ELSE"
            " json_build_array(causation_id, correlation_id, user_id, custom)::text END"
        )
        # The reads of whole events end with the event's tags, sorted (NULL: none), read
        # in the same statement (its snapshot: migration 0011).
        tagged = (
            f"{cols}, (SELECT array_agg(t.tag::text ORDER BY t.tag) FROM {s}.event_tags t"
            " WHERE t.position = events.position)"
        )
        self._tagged = tagged
        # On a conflict the last five columns carry the events after the expected
        # versions of the conflicting streams (migration 0005), NULL when too many.
        self.append = (
            "SELECT status, positions, streams, versions, conflict_expected, duplicate_id,"
            " detail, tail_streams, tail_types, tail_payloads, tail_versions, tail_positions"
            f" FROM {s}.append_events($1::text[], $2::bigint[], $3::uuid[], $4::text[],"
            " $5::text[], $6::bytea[], $7::uuid, $8::uuid, $9::text, $10::jsonb)"
        )
        # One stream, no tags, no condition (migration 0013): the first position and the
        # new version; on a conflict NULL and the stream's version, then its tail (as
        # append_events' last four columns); both NULL: append_events must answer.
        self.append_stream = (
            "SELECT first_position, version, tail_types, tail_payloads, tail_versions,"
            f" tail_positions FROM {s}.append_stream($1::text, $2::bigint, $3::uuid[],"
            " $4::text[], $5::bytea[], $6::uuid, $7::uuid, $8::text, $9::jsonb)"
        )
        # The same append as append_stream, sent as ONE statement by a store whose role may
        # write the tables (migration 0016: see PostgresStore._append_plain): the same
        # parameters (one event's as scalars); the first position and the new version, or
        # NULL and stream_conflict's row (called only when nothing was written).
        # Keyed by (one event, an UPDATE of an existing stream row).
        self.append_direct = {
            (one, update): _direct_append(s, one=one, update=update)
            for one in (True, False)
            for update in (True, False)
        }
        # Tags and conditions (migration 0008); a query as four arrays (migration 0014:
        # see query_arrays).
        self.append_tagged = (
            "SELECT status, positions, streams, versions, conflict_expected, duplicate_id,"
            " detail, tail_streams, tail_types, tail_payloads, tail_versions, tail_positions"
            f" FROM {s}.append_events_tagged($1::text[], $2::bigint[], $3::uuid[], $4::text[],"
            " $5::text[], $6::bytea[], $7::uuid, $8::uuid, $9::text, $10::jsonb,"
            " $11::text[], $12::integer[], $13::text[], $14::integer[], $15::text[],"
            " $16::integer[], $17::bigint)"
        )
        # One stream with tags and/or a condition (migration 0017). The first row:
        # append_stream's two columns, the condition's first match, then append_stream's
        # conflict tail; all NULL: append_events_tagged must answer. After a failed
        # condition, read_query's rows (columns 8 on) after the condition's position.
        self.append_tagged_stream = (
            f"SELECT * FROM {s}.append_tagged_stream($1::text, $2::bigint, $3::uuid[],"
            " $4::text[], $5::bytea[], $6::uuid, $7::uuid, $8::text, $9::jsonb, $10::text[],"
            " $11::integer[], $12::text[], $13::integer[], $14::text[], $15::integer[],"
            " $16::bigint, $17::bigint)"
        )
        # Tags and/or a condition, events into several streams (migration 0019): the
        # parameters of append_events_tagged and the carried read's limit. The first row:
        # the first position, the streams and their versions (on a conflict: the failed
        # checks, their expected versions, then append_events' tail columns), the
        # condition's first match; all NULL: append_events_tagged must answer. After a
        # failed condition, read_query's rows (columns 11 on).
        self.append_tagged_streams = (
            f"SELECT * FROM {s}.append_tagged_streams($1::text[], $2::bigint[], $3::uuid[],"
            " $4::text[], $5::text[], $6::bytea[], $7::uuid, $8::uuid, $9::text, $10::jsonb,"
            " $11::text[], $12::integer[], $13::text[], $14::integer[], $15::text[],"
            " $16::integer[], $17::bigint, $18::bigint)"
        )
        # The same append as append_tagged_streams, sent as ONE statement by a store whose
        # role may write the tables (see _direct_tagged_streams_append).
        self.append_tagged_streams_direct = _direct_tagged_streams_append(s)
        # The same append as append_tagged_stream, sent as ONE statement by a store whose
        # role may write the tables (migration 0018: see _direct_tagged_append), keyed as
        # append_direct and by whether the condition is one item with one tag.
        self.append_tagged_direct = {
            (one, update, inline): _direct_tagged_append(s, one=one, update=update, inline=inline)
            for one in (True, False)
            for update in (True, False)
            for inline in (True, False)
        }
        self.read_query = (
            f"SELECT * FROM {s}.read_query($1::text[], $2::integer[], $3::text[],"
            " $4::integer[], $5, $6)"
        )
        # The same read of a one-item query with 1 to DIRECT_READ_TAGS tags as one
        # statement (see _direct_read), keyed by (tags, with types).
        self.read_query_direct = {
            (n, typed): _direct_read(s, tags=n, typed=typed)
            for n in range(1, DIRECT_READ_TAGS + 1)
            for typed in (True, False)
        }
        # -- stream lifecycle (migration 0006) --
        self.truncate_stream = f"SELECT o_status, o_version FROM {s}.truncate_stream($1, $2, $3)"
        purge_cols = (
            "stream_id, events, from_version, to_version, first_position, last_position,"
            " actor, database_user, reason, purged_at"
        )
        self.purge_stream = f"SELECT {purge_cols} FROM {s}.purge_stream($1, $2, $3)"
        self.purge_log = (
            f"SELECT {purge_cols} FROM {s}.purges WHERE $1::text IS NULL OR stream_id = $1"
            " ORDER BY id"
        )
        # A page of the global log, first below the statement snapshot's xmin: every
        # transaction below it has ended, so this bound is safe with no lock scan and no
        # function call (a reader catching up fills its pages here). The bound is applied
        # to the page, not inside it: there the bound's range makes the planner expect a
        # handful of rows and sort the whole table instead of walking the index.
        xmin = f"(SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint * {POSITION_SHIFT})"
        self.read_all_below_xmin = (
            f"SELECT * FROM (SELECT {tagged} FROM {s}.events WHERE position > $1"
            " AND ($3::text[] IS NULL OR event_type = ANY($3::text[]))"
            " AND ($4::text IS NULL OR starts_with(stream_id, $4::text))"
            f" ORDER BY position LIMIT $2) page WHERE position < {xmin} ORDER BY position"
        )
        # The rest of a page goes through functions (migration 0003) that compute the
        # horizon (the oldest in-flight append of THIS store) in one statement and read
        # below it in a second one, with a snapshot taken after the horizon: see the
        # module docstring of eventcore.postgres.store.
        self.read_all = f"SELECT * FROM {s}.read_all_page($1, $2, $3::text[], $4::text)"
        self.head = f"SELECT {s}.safe_head()"
        self.holdback = (
            "SELECT transaction_id::text::bigint, pid, started,"
            " extract(epoch FROM clock_timestamp() - started)::float8, xid_age"
            f" FROM {s}.log_holdback() LIMIT 1"
        )
        self.last_position = f"SELECT coalesce(max(position), 0) FROM {s}.events"
        # Events in a range of positions, for a projection's lag and progress.
        self.count_between = (
            f"SELECT count(*) FROM (SELECT 1 FROM {s}.events"
            " WHERE position > $1 AND position <= $2 LIMIT 10000000) c"
        )
        # By event id: the unique index on event_id answers it (idempotency-key lookups).
        self.read_by_ids = (
            f"SELECT {tagged} FROM {s}.events WHERE event_id = ANY($1::uuid[]) ORDER BY position"
        )
        self.stream_version = f"SELECT version FROM {s}.streams WHERE stream_id = $1"
        self.stream_versions = (
            f"SELECT stream_id, version FROM {s}.streams WHERE stream_id = ANY($1::text[])"
        )
        self.list_streams = (
            f"SELECT stream_id, version FROM {s}.streams WHERE version > 0"
            " AND ($1::text IS NULL OR starts_with(stream_id, $1::text))"
            " AND ($2::text IS NULL OR stream_id > $2::text)"
            " ORDER BY stream_id LIMIT $3"
        )
        # -- snapshots (migration 0004, eventcore.postgres._snapshot) --
        self.load_snapshot = (
            "SELECT schema_version, streams, versions, fold_from, rounds, state,"
            f" extract(epoch FROM taken_at)::float8, checksum FROM {s}.snapshots WHERE key = $1"
        )
        # Kept unless the new one folds more events or has another schema version (two
        # instances writing the same key: the one that folded more wins).
        self.save_snapshot = (
            f"INSERT INTO {s}.snapshots AS t (key, schema_version, streams, versions,"
            " fold_from, rounds, events, state, taken_at, checksum) VALUES ($1, $2,"
            " $3::text[], $4::bigint[], $5, $6, $7, $8, to_timestamp($9), $10)"
            " ON CONFLICT (key) DO UPDATE SET schema_version = EXCLUDED.schema_version,"
            " streams = EXCLUDED.streams, versions = EXCLUDED.versions,"
            " fold_from = EXCLUDED.fold_from, rounds = EXCLUDED.rounds,"
            " events = EXCLUDED.events,"
            " state = EXCLUDED.state, taken_at = EXCLUDED.taken_at,"
            " checksum = EXCLUDED.checksum"
            " WHERE t.schema_version <> EXCLUDED.schema_version OR t.events < EXCLUDED.events"
        )
        self.is_partitioned = (
            f"SELECT coalesce((SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass("
            f"'{s}.events')), false)"
        )
        self.partitioned = False
        """Whether the stream reads bound positions (set by :meth:`bound_stream_reads`)."""
        self._s = s
        self.bound_stream_reads(False)
        # --
        self.version_table = f"{s}.schema_version"
        self.schema_version = f"SELECT coalesce(max(version), 0) FROM {s}.schema_version"
        self.create_schema = f"CREATE SCHEMA IF NOT EXISTS {s}"
        self.create_version_table = (
            f"CREATE TABLE {s}.schema_version (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now());"
            f" COMMENT ON TABLE {s}.schema_version IS '{VERSION_TABLE_COMMENT}'"
        )
        self.record_version = f"INSERT INTO {s}.schema_version (version, name) VALUES ($1, $2)"
        self.relations = (
            "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = $1 AND c.relname = ANY($2::text[])"
        )

    def bound_stream_reads(self, partitioned: bool) -> None:
        """(Re)make the statements that read streams by id: with position bounds for a
        partitioned events table (migration 0012), without them otherwise (there the
        bounds would only tempt the planner into a scan of the position index)."""
        s, tagged = self._s, self._tagged
        self.partitioned = partitioned

        # A partitioned store (migration 0012) keeps on each streams row a position range
        # holding all of the stream's events (NULL: unbounded, as on an unpartitioned
        # store); bounding position by it lets the planner skip every other partition at
        # run time. A stream without a row has no events.
        def within(e: str, st: str) -> str:
            if not partitioned:
                return ""
            return (
                f" AND {e}.position >= coalesce({st}.first_position, 0)"
                f" AND {e}.position <= coalesce({st}.last_position, {MAX_POSITION})"
            )

        def span(which: str) -> str:
            if not partitioned:
                return ""
            rows = f"FROM {s}.streams b WHERE b.stream_id {which}"
            return (
                f" AND position >= coalesce((SELECT min(coalesce(b.first_position, 0)) {rows}), 0)"
                f" AND position <= coalesce((SELECT max(coalesce(b.last_position, {MAX_POSITION}))"
                f" {rows}), -1)"
            )

        # A fold: first one (stream_id, NULL, version as 8 bytes, 0, 0) row per stream
        # that has a row (its version: hidden events are not read, so not counted), then
        # its visible events (migration 0006: versions above hidden_upto), in log order,
        # as 5-item fold rows (a decode error names the version and position).
        def fold(streams: str) -> str:
            return (
                "SELECT sid, typ, payload, ver, pos FROM ("
                " WITH st AS MATERIALIZED (SELECT stream_id, version, hidden_upto,"
                f" first_position, last_position FROM {s}.streams WHERE stream_id {streams})"
                " SELECT st.stream_id AS sid, NULL::text AS typ, int8send(st.version) AS"
                " payload, 0::bigint AS ver, 0::bigint AS pos FROM st"
                " UNION ALL SELECT e.stream_id, e.event_type, e.payload, e.version, e.position"
                f" FROM st JOIN {s}.events e ON e.stream_id = st.stream_id"
                f" AND e.version > st.hidden_upto{within('e', 'st')}) f ORDER BY pos"
            )

        self.fold = fold("= ANY($1::text[])")
        # The same for 1 to FOLD_BY_COUNT streams, one text parameter each. PostgreSQL
        # plans a prepared statement afresh on every run (custom plans) while its generic
        # plan's estimate is above theirs, and it cannot know an array parameter's length
        # in a generic plan: on tables with statistics `fold` kept being planned for
        # every cold command (pg_prepared_statements: 0 generic, 460 custom plans of 460),
        # which cost more than its run. With one parameter per stream both estimates
        # agree and the generic plan is kept.
        self.fold_by_count = {
            n: fold(f"IN ({', '.join(f'${i}::text' for i in range(1, n + 1))})")
            for n in range(1, FOLD_BY_COUNT + 1)
        }
        # A cached state's tail: each stream's last event at or before version $2[i] (the
        # last one folded, for its position: a truncation's version has no event) and the
        # events after it, with the version the stream's last truncation took (a state
        # folded before it cannot be extended).
        self.fold_tail = (
            "SELECT e.stream_id, e.event_type, e.payload, e.version, e.position,"
            " st.truncated_at FROM unnest($1::text[], $2::bigint[]) AS t(sid, v)"
            f" JOIN {s}.streams st ON st.stream_id = t.sid CROSS JOIN LATERAL ("
            f"(SELECT * FROM {s}.events l WHERE l.stream_id = t.sid AND l.version <= t.v"
            f"{within('l', 'st')} ORDER BY l.version DESC LIMIT 1) UNION ALL"
            f" (SELECT * FROM {s}.events n WHERE n.stream_id = t.sid AND n.version > t.v"
            f"{within('n', 'st')})) e"
            " ORDER BY e.position"
        )
        # The snapshot row (k = 0), then the events after its versions (k = 1) as
        # fold_tail reads them (each stream's last folded event on, with the version of
        # its last truncation), at most $2 of them: a cold command started from a
        # snapshot folds its tail without a second round trip. Bounded like fold_tail.
        nulls = "NULL::text, NULL::text, NULL::bytea, NULL::bigint, NULL::bigint, NULL::bigint"
        self.load_snapshot_tail = (
            "SELECT 0 AS k, schema_version, streams, versions, fold_from, rounds, state,"
            f" extract(epoch FROM taken_at)::float8, checksum, {nulls}"
            f" FROM {s}.snapshots WHERE key = $1"
            " UNION ALL SELECT * FROM (SELECT 1, NULL::integer, NULL::text[], NULL::bigint[],"
            " NULL::integer, NULL::integer, NULL::bytea, NULL::float8, NULL::bytea,"
            " e.stream_id, e.event_type, e.payload, e.version, e.position, st.truncated_at"
            f" FROM {s}.snapshots sn CROSS JOIN LATERAL unnest(sn.streams, sn.versions)"
            f" AS t(sid, v) JOIN {s}.streams st ON st.stream_id = t.sid CROSS JOIN LATERAL ("
            f"(SELECT * FROM {s}.events l WHERE l.stream_id = t.sid AND l.version <= t.v"
            f"{within('l', 'st')} ORDER BY l.version DESC LIMIT 1) UNION ALL"
            f" (SELECT * FROM {s}.events n WHERE n.stream_id = t.sid AND n.version > t.v"
            f"{within('n', 'st')})) e"
            " WHERE sn.key = $1 ORDER BY e.position LIMIT $2) tail ORDER BY 1, 14"
        )
        # Stream reads skip hidden versions (migration 0006).
        hidden = (
            f"coalesce((SELECT h.hidden_upto FROM {s}.streams h"
            " WHERE h.stream_id = events.stream_id), 0)"
        )
        self.read_stream = (
            f"SELECT {tagged} FROM {s}.events WHERE stream_id = $1 AND version > $2"
            f" AND version > {hidden}{span('= $1')} ORDER BY version LIMIT $3"
        )
        self.read_streams = (
            f"SELECT {tagged} FROM {s}.events WHERE stream_id = ANY($1::text[]) AND version > $2"
            f" AND version > {hidden}{span('= ANY($1::text[])')} ORDER BY position LIMIT $3"
        )
        self.read_stream_backwards = (
            f"SELECT {tagged} FROM {s}.events"
            " WHERE stream_id = $1 AND ($2::bigint IS NULL OR version < $2)"
            f" AND version > {hidden}{span('= $1')} ORDER BY version DESC LIMIT $3"
        )
        # A stream's visible versions (migration 0006).
        self.stream_bounds = (
            f"SELECT st.hidden_upto + 1, st.version, st.hidden_upto > 0 AND NOT EXISTS"
            f" (SELECT 1 FROM {s}.events e WHERE e.stream_id = st.stream_id"
            f" AND e.version > st.hidden_upto{within('e', 'st')}) FROM {s}.streams st"
            " WHERE st.stream_id = $1"
        )


class CheckpointQueries:
    """The statements of projection checkpoints and dead letters (migration 0002)."""

    def __init__(self, schema: str) -> None:
        s = quote(schema)
        self.tables_exist = (
            f"SELECT to_regclass('{s}.projection_checkpoints') IS NOT NULL"
            f" AND to_regclass('{s}.projection_dead_letters') IS NOT NULL"
        )
        self.load = f"SELECT position FROM {s}.projection_checkpoints WHERE name = $1"
        self.save = (
            f"INSERT INTO {s}.projection_checkpoints (name, position) VALUES ($1, $2)"
            " ON CONFLICT (name) DO UPDATE SET position = EXCLUDED.position, updated_at = now()"
        )
        # A compare-and-set: the row is made if missing, then moved only from $2.
        self.create = (
            f"INSERT INTO {s}.projection_checkpoints (name, position) VALUES ($1, $2)"
            " ON CONFLICT (name) DO NOTHING"
        )
        self.move = (
            f"UPDATE {s}.projection_checkpoints SET position = $3, updated_at = now()"
            " WHERE name = $1 AND position = $2 RETURNING 1"
        )
        self.add_dead_letter = (
            f"INSERT INTO {s}.projection_dead_letters"
            " (projection, position, event_id, stream_id, event_type, error, failed_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7)"
        )
        self.dead_letters = (
            "SELECT projection, position, event_id, stream_id, event_type, error, failed_at"
            f" FROM {s}.projection_dead_letters WHERE projection = $1 ORDER BY id"
        )
