"""The click group behind the ``eventcore`` console script (see :mod:`eventcore.cli`)."""

from __future__ import annotations

import click

import eventcore
from eventcore.cli._bench import bench
from eventcore.cli._check import check
from eventcore.cli._demo import demo
from eventcore.cli._inspect import migrate, read, streams, tail
from eventcore.cli._partitions import partitions
from eventcore.cli._projections import projections
from eventcore.cli._replicas import replicas

__all__ = ["cli"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(eventcore.__version__, prog_name="eventcore")
def cli() -> None:
    """eventcore: inspect, migrate and operate an eventcore event store.

    \b
    Stores: --dsn postgresql://user:password@host:port/db (or EVENTCORE_DSN);
            --dsn sqlite:///path/to/events.db is a SQLite file (relative; //// absolute);
            --dsn memory:// is a fresh in-memory store (demo and bench use one by default).
    Your app: --app module:attr (or EVENTCORE_APP) imports your code, so payloads decode
            with your event types, and names your projections (and, without --dsn, a store);
            see `eventcore projections --help`.

    \b
    Examples:
      eventcore demo
      eventcore migrate --dsn postgresql://app@localhost/app
      eventcore streams --prefix account- --dsn postgresql://app@localhost/app
      eventcore read account-42 --json
      eventcore tail -f
      eventcore check --app myapp.ops:app
      eventcore projections status --app myapp.ops:app
      eventcore bench --quick

    Exit codes: 0 ok, 1 failure (server unreachable, unknown stream, store error),
    2 bad usage (unknown option, bad DSN, no store given).
    """


for command in (migrate, streams, read, tail, projections, bench, demo, replicas):
    cli.add_command(command)
cli.add_command(check)
cli.add_command(partitions)
