"""``eventcore partitions``: a PostgreSQL store's events table partitioned by position
range (list, convert, add ahead, detach to archive, attach again)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from eventcore.cli._store import Failure, Options, open_store, run, store_options


def _on_postgres(opts: Options, work: Callable[[Any], Awaitable[None]]) -> None:
    async def go() -> None:
        async with open_store(opts) as opened:
            if opened.postgres is None:
                raise Failure(f"{opened.label} is not a PostgreSQL store: it has no partitions")
            await work(opened.postgres)

    run(go())


@click.group()
def partitions() -> None:
    """Partition a PostgreSQL store's events table by position range, and manage it.

    Run as the schema's owner. See the production guide ("A log that outgrows one
    table") for the design and what it costs.

    \b
    Examples:
      eventcore partitions convert --span 5000000 --dsn postgresql://owner@db/app
      eventcore partitions add --ahead 2          # from a daily job
      eventcore partitions list
      eventcore partitions detach events_from_0   # then pg_dump -t it, and drop it
    """


@partitions.command("list")
@store_options
@click.option("--json", "as_json", is_flag=True, help="One JSON object per partition.")
def list_partitions(dsn: str | None, schema: str, app: str | None, as_json: bool) -> None:
    """List the partitions: bounds (positions), attached or not, estimated rows, sizes."""
    from eventcore.postgres.partition import partitions as listing

    async def work(store: Any) -> None:
        found = await listing(store)
        if not found:
            raise Failure("the events table is not partitioned (see `partitions convert`)")
        if as_json:
            for p in found:
                click.echo(json.dumps(p.__dict__))
            return
        table = Table(title="partitions of events")
        for column in ("name", "from", "to", "attached", "rows (est.)", "table", "indexes"):
            table.add_column(column)
        for p in found:
            table.add_row(
                p.name,
                "default" if p.is_default else ("start" if p.lower is None else str(p.lower)),
                "default" if p.is_default else ("end" if p.upper is None else str(p.upper)),
                "yes" if p.attached else "no",
                str(p.rows),
                f"{p.table_bytes / 2**20:.1f} MiB",
                f"{p.index_bytes / 2**20:.1f} MiB",
            )
        Console().print(table)

    _on_postgres(Options(dsn, schema, app), work)


@partitions.command()
@store_options
@click.option(
    "--span",
    type=click.IntRange(min=1),
    required=True,
    help="Transaction ids per partition (positions are transaction id * 2^20 + index).",
)
@click.option("--ahead", type=click.IntRange(1, 1000), default=2, show_default=True)
def convert(dsn: str | None, schema: str, app: str | None, span: int, ahead: int) -> None:
    """Turn the events table into a partitioned one (the existing table becomes the
    first partition; appends wait while it runs). Restart the applications after it."""
    from eventcore.postgres.partition import partition_events

    async def work(store: Any) -> None:
        for name in await partition_events(store, span=span, ahead=ahead):
            click.echo(f"made {name}")

    _on_postgres(Options(dsn, schema, app), work)


@partitions.command()
@store_options
@click.option("--ahead", type=click.IntRange(1, 1000), default=2, show_default=True)
@click.option("--span", type=click.IntRange(min=1), default=None, help="Default: the newest one's.")
def add(dsn: str | None, schema: str, app: str | None, ahead: int, span: int | None) -> None:
    """Create the partitions the next --ahead spans of transaction ids need."""
    from eventcore.postgres.partition import add_partitions

    async def work(store: Any) -> None:
        made = await add_partitions(store, ahead=ahead, span=span)
        for name in made:
            click.echo(f"made {name}")
        if not made:
            click.echo("enough partitions exist")

    _on_postgres(Options(dsn, schema, app), work)


@partitions.command()
@store_options
@click.argument("name")
@click.option(
    "--force", is_flag=True, help="Also when stream reads still return some of its events."
)
def detach(dsn: str | None, schema: str, app: str | None, name: str, force: bool) -> None:
    """Detach partition NAME (wholly in the past) to archive it; it stays a table."""
    from eventcore.postgres.partition import detach_partition

    async def work(store: Any) -> None:
        await detach_partition(store, name, force=force)
        click.echo(f"detached {name}: archive it (pg_dump -t) and drop it, or attach it again")

    _on_postgres(Options(dsn, schema, app), work)


@partitions.command()
@store_options
@click.argument("name")
def attach(dsn: str | None, schema: str, app: str | None, name: str) -> None:
    """Attach partition NAME again, at the range it was detached from."""
    from eventcore.postgres.partition import attach_partition

    async def work(store: Any) -> None:
        await attach_partition(store, name)
        click.echo(f"attached {name}")

    _on_postgres(Options(dsn, schema, app), work)
