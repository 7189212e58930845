"""``eventcore migrate``, ``streams``, ``read`` and ``tail``: look into a store."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from typing import Any

import click
import msgspec
from rich.console import Console
from rich.table import Table

from eventcore._core import validate_stream_id
from eventcore.cli._store import (
    Failure,
    OpenStore,
    Options,
    open_store,
    run,
    store_options,
    token_option,
)
from eventcore.errors import EventCoreError
from eventcore.recorded import WriteToken

_TAIL_PAGE = 1000


def payload_of(event: Any) -> Any:
    """An event's payload as JSON-compatible data.

    Decoded with the registry when the type is registered there (import your app with
    ``--app`` so it is), else decoded generically (MessagePack, then JSON), else hex.
    """
    try:
        return msgspec.to_builtins(event.data)
    except (EventCoreError, TypeError):
        pass
    payload = event.payload
    for decode in (msgspec.msgpack.decode, msgspec.json.decode):
        try:
            return msgspec.to_builtins(decode(payload))
        except (msgspec.MsgspecError, TypeError, ValueError):
            continue
    return {"hex": payload.hex()}


def event_json(event: Any) -> dict[str, Any]:
    """One recorded event as a JSON-compatible dict (the ``--json`` line format)."""
    meta = event.metadata
    metadata: dict[str, Any] = {}
    if meta.causation_id is not None:
        metadata["causation_id"] = str(meta.causation_id)
    if meta.correlation_id is not None:
        metadata["correlation_id"] = str(meta.correlation_id)
    if meta.user_id is not None:
        metadata["user_id"] = meta.user_id
    if meta.custom:
        metadata["custom"] = dict(meta.custom)
    return {
        "position": event.position,
        "stream_id": event.stream_id,
        "version": event.version,
        "event_type": event.event_type,
        "event_version": event.event_version,
        "event_id": str(event.event_id),
        "recorded_at": event.recorded_at.isoformat(),
        "metadata": metadata,
        "data": payload_of(event),
    }


def _compact(data: Any, width: int = 60) -> str:
    text = json.dumps(data, separators=(",", ":"), default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def events_table(events: list[Any], *, title: str | None = None, stream: bool = True) -> Table:
    """A rich table of recorded events."""
    table = Table(title=title, show_lines=False)
    table.add_column("position", justify="right")
    if stream:
        table.add_column("stream")
    table.add_column("version", justify="right")
    table.add_column("type")
    table.add_column("recorded at (UTC)")
    table.add_column("data", overflow="fold")
    for e in events:
        row = [str(e.position)]
        if stream:
            row.append(e.stream_id)
        row += [
            str(e.version),
            e.event_type if e.event_version == 1 else f"{e.event_type} (v{e.event_version})",
            e.recorded_at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3],
            _compact(payload_of(e)),
        ]
        table.add_row(*row)
    return table


def _json_lines(events: list[Any]) -> None:
    for e in events:
        click.echo(json.dumps(event_json(e), default=str))


@click.command()
@store_options
def migrate(dsn: str | None, schema: str, app: str | None) -> None:
    """Apply the PostgreSQL store's migrations and show the schema version.

    Idempotent, and safe to run from several processes at once.

    \b
    Examples:
      eventcore migrate --dsn postgresql://app@db:5432/app
      EVENTCORE_DSN=postgresql://app@db/app eventcore migrate --schema billing
    """

    async def go() -> None:
        opts = Options(dsn, schema, app)
        async with open_store(opts, create=True) as opened:
            if opened.sqlite is not None:
                click.echo(f"{opened.label}: tables created (an SQLite store makes them on open)")
                return
            if opened.postgres is None:
                click.echo(f"{opened.label}: the in-memory store needs no migrations")
                return
            latest = opened.postgres.latest_schema_version()
            version = await opened.postgres.migrate()
            click.echo(
                f"{opened.label}: schema version {version} (latest known: {latest}); "
                "migrations applied"
            )

    run(go())


@click.command()
@store_options
@click.option("--prefix", help="Only streams whose id starts with this.")
@click.option("--after", help="Only streams whose id sorts after this (paging).")
@click.option("--limit", type=click.IntRange(min=0), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def streams(
    dsn: str | None,
    schema: str,
    app: str | None,
    prefix: str | None,
    after: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """List streams with their versions (number of events), sorted by id.

    \b
    Examples:
      eventcore streams --dsn postgresql://app@db/app --prefix account-
      eventcore streams --app myapp.ops:app --limit 20 --json
    """

    async def go() -> None:
        async with open_store(Options(dsn, schema, app)) as opened:
            rows = await opened.list_streams(prefix=prefix, after=after, limit=limit)
        if as_json:
            for stream_id, version in rows:
                click.echo(json.dumps({"stream_id": stream_id, "version": version}))
            return
        table = Table(title=f"streams in {opened.label}")
        table.add_column("stream")
        table.add_column("version", justify="right")
        for stream_id, version in rows:
            table.add_row(stream_id, str(version))
        console = Console()
        console.print(table)
        more = " (--after the last id for more)" if limit and len(rows) == limit else ""
        console.print(f"{len(rows)} stream{'s' if len(rows) != 1 else ''}{more}")

    run(go())


@click.command()
@click.argument("stream")
@store_options
@click.option("--after-version", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--limit", type=click.IntRange(min=0), default=None, help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
@token_option
def read(
    stream: str,
    dsn: str | None,
    schema: str,
    app: str | None,
    after_version: int,
    limit: int | None,
    as_json: bool,
    after_token: WriteToken | None,
) -> None:
    """Print the events of STREAM, oldest first (a table, or JSON lines with --json).

    Payloads are decoded with your event types when --app imports them, else generically.
    Exits with 1 when the stream does not exist.

    \b
    Examples:
      eventcore read account-42 --dsn postgresql://app@db/app
      eventcore read account-42 --app myapp.ops:app --json | jq .data
      eventcore read account-42 --dsn postgresql://app@db/app --after-token 1:7784628224
    """

    async def go() -> None:
        stream_id = validate_stream_id(stream)
        async with open_store(Options(dsn, schema, app)) as opened:
            token = opened.token_args(after_token)
            version = await opened.store.stream_version(stream_id, **token)
            if version == 0:
                raise Failure(f"stream {stream_id!r} not found in {opened.label}")
            events = await opened.store.read_stream(
                stream_id, after_version=after_version, limit=limit, **token
            )
        if as_json:
            _json_lines(events)
            return
        Console().print(
            events_table(events, title=f"{stream_id} (version {version})", stream=False)
        )

    run(go())


async def _last_events(opened: OpenStore, count: int, token: dict[str, Any]) -> list[Any]:
    """The last ``count`` events of the global log (``token``: the first read's
    ``after=``, see :meth:`OpenStore.token_args`).

    Positions are dense in memory but sparse in PostgreSQL, so the window before the head
    grows until it holds ``count`` events (or reaches the start).
    """
    store = opened.store
    head = await store.head(**token)
    if count == 0 or head == 0:
        return []
    window = count
    while True:
        after = max(0, head - window)
        events: list[Any] = await store.read_all(after_position=after, **token)
        if len(events) >= count or after == 0:
            return events[-count:]
        window *= 8


@click.command()
@store_options
@click.option(
    "-n",
    "--lines",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Show the last N events first.",
)
@click.option(
    "--after",
    "after_position",
    type=click.IntRange(min=0),
    default=None,
    help="Start after this global position instead of the last N events.",
)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events as they arrive.")
@click.option(
    "--stop-after",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="With --follow: stop after this many seconds (default: until Ctrl-C).",
)
@click.option("--prefix", help="Only streams whose id starts with this.")
@click.option("--type", "event_types", multiple=True, help="Only this event type (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="JSON lines instead of a table.")
@token_option
def tail(
    dsn: str | None,
    schema: str,
    app: str | None,
    lines: int,
    after_position: int | None,
    follow: bool,
    stop_after: float | None,
    prefix: str | None,
    event_types: tuple[str, ...],
    as_json: bool,
    after_token: WriteToken | None,
) -> None:
    """Print the end of the global log, and with --follow every new event, live.

    \b
    Examples:
      eventcore tail --dsn postgresql://app@db/app -n 50
      eventcore tail -f --json --type bank.Deposited | jq .data.amount
    """
    console = Console()
    types = list(event_types) or None

    def show(events: list[Any]) -> None:
        if prefix is not None or types is not None:
            events = [
                e
                for e in events
                if (prefix is None or e.stream_id.startswith(prefix))
                and (types is None or e.event_type in types)
            ]
        if not events:
            return
        if as_json:
            _json_lines(events)
        else:
            console.print(events_table(events))

    async def go() -> None:
        async with open_store(Options(dsn, schema, app)) as opened:
            store = opened.store
            token = opened.token_args(after_token)
            if after_position is None:
                events = await _last_events(opened, lines, token)
                position = events[-1].position if events else await store.head()
            else:
                events = await store.read_all(
                    after_position=after_position, limit=lines or None, **token
                )
                position = events[-1].position if events else after_position
            show(events)
            if not follow:
                return
            if not as_json:
                console.print(f"[dim]following {opened.label} after position {position}…[/]")
            deadline = None if stop_after is None else time.monotonic() + stop_after
            while True:
                remaining = 1.0 if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    return
                head = await opened.wait_for_append(position, min(remaining, 1.0))
                while head > position:
                    page = await store.read_all(after_position=position, limit=_TAIL_PAGE)
                    if not page:
                        break
                    show(page)
                    position = page[-1].position
                    sys_flush()

    try:
        run(go())
    except click.Abort:
        if not follow:
            raise
        # Ctrl-C is how --follow ends: exit quietly with 0


def sys_flush() -> None:
    """Flush stdout so a pipe (``| jq``) sees each event at once."""
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
