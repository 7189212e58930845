"""``eventcore replicas``: the read replicas of a PostgreSQL store, their lag and rotation."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from eventcore.cli._store import Failure, Options, open_store, replica_dsns, run, store_options


@click.command()
@store_options
@click.option(
    "--replica",
    "replica",
    multiple=True,
    metavar="DSN",
    help="A read replica (repeat for several). Default: EVENTCORE_REPLICAS (DSNs separated "
    "by spaces or commas), which every command's reads also use.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per replica.")
def replicas(
    dsn: str | None, schema: str, app: str | None, replica: tuple[str, ...], as_json: bool
) -> None:
    """Show each read replica: in rotation or not (and why), lag in bytes and seconds.

    \b
    Examples:
      eventcore replicas --dsn postgresql://app@primary/app --replica postgresql://app@replica/app
      EVENTCORE_REPLICAS="postgresql://app@r1/app postgresql://app@r2/app" eventcore replicas
    """

    async def go() -> None:
        opts = Options(dsn, schema, app)
        if replica:
            opts.replicas = replica_dsns(" ".join(replica))
        async with open_store(opts) as opened:
            if opened.postgres is None:
                raise Failure(f"{opened.label} is not a PostgreSQL store: it has no replicas")
            statuses = await opened.postgres.replica_status()
        if not statuses:
            raise Failure("no replicas given (--replica or EVENTCORE_REPLICAS)")
        if as_json:
            for s in statuses:
                click.echo(
                    json.dumps(
                        {
                            "replica": s.replica,
                            "in_rotation": s.in_rotation,
                            "replay_lsn": s.replay_lsn,
                            "lag_bytes": s.lag_bytes,
                            "lag_seconds": s.lag_seconds,
                            "error": s.error,
                        }
                    )
                )
            return
        table = Table(title="replicas")
        for column in ("replica", "in rotation", "lag (bytes)", "lag (s)", "why out"):
            table.add_column(column)
        for s in statuses:
            table.add_row(
                s.replica,
                "yes" if s.in_rotation else "no",
                "?" if s.lag_bytes is None else str(s.lag_bytes),
                "?" if s.lag_seconds is None else f"{s.lag_seconds:.3f}",
                s.error or "",
            )
        Console().print(table)

    run(go())
