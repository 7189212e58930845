"""``eventcore check``: does every stored event decode with the current event types?"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from eventcore.cli._store import EXIT_FAILURE, Options, open_store, run, store_options
from eventcore.errors import SerializationError
from eventcore.registry import EventRegistry

_PAGE = 1000


@dataclass
class KeyReport:
    """What the scan found for one stored type key."""

    stored_type: str
    name: str
    version: int
    count: int = 0
    checked: int = 0
    failed: int = 0
    first_failure: str | None = None
    positions: list[int] = field(default_factory=list)  # the first few failing positions

    @property
    def ok(self) -> bool:
        """Whether every checked event of this key decoded."""
        return self.failed == 0

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` line of this key."""
        return {
            "stored_type": self.stored_type,
            "event_type": self.name,
            "event_version": self.version,
            "count": self.count,
            "checked": self.checked,
            "failed": self.failed,
            "decodes": self.ok,
            "failing_positions": self.positions,
            "error": self.first_failure,
        }


async def scan(store: Any, registry: EventRegistry, sample: int | None) -> list[KeyReport]:
    """Read the whole global log; decode every event (or the first ``sample`` of each
    stored key) with ``registry``. One report per stored key, in order of first sight."""
    reports: dict[str, KeyReport] = {}
    after = 0
    while True:
        events = await store.read_all(after_position=after, limit=_PAGE)
        for e in events:
            key = e.stored_type
            report = reports.get(key)
            if report is None:
                name, version = registry.resolve(key)
                report = reports[key] = KeyReport(key, name, version)
            report.count += 1
            if sample is not None and report.checked >= sample:
                continue
            report.checked += 1
            try:
                registry.decode(key, e.payload)
            except SerializationError as exc:
                report.failed += 1
                if len(report.positions) < 5:
                    report.positions.append(e.position)
                if report.first_failure is None:
                    placed = getattr(exc, "at", None)
                    if placed is not None:
                        exc = placed(stream_id=e.stream_id, version=e.version, position=e.position)
                    report.first_failure = str(exc)
        if len(events) < _PAGE:
            return list(reports.values())
        after = events[-1].position


@click.command()
@store_options
@click.option(
    "--sample",
    type=click.IntRange(min=1),
    default=None,
    help="Decode at most this many events of each stored type and version (all are counted).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per stored type.")
def check(dsn: str | None, schema: str, app: str | None, sample: int | None, as_json: bool) -> None:
    """Check that every stored event decodes with your current event types.

    Lists each stored (type, version) with its count and whether it decodes with the
    registry (import your event types with --app; an app's `registry` attribute is used
    when it has one, else the default registry). Exits 1 when any does not: run it in CI
    before a deploy that changes event classes.

    \b
    Examples:
      eventcore check --dsn postgresql://app@db/app --app myapp.ops:app
      eventcore check --app myapp.ops:app --sample 100 --json
    """

    async def go() -> list[KeyReport]:
        opts = Options(dsn, schema, app)
        registry = getattr(opts.app_object(), "registry", None)
        async with open_store(opts, registry=registry) as opened:
            return await scan(opened.store, opened.store.registry, sample)

    reports = run(go())
    if as_json:
        for r in reports:
            click.echo(json.dumps(r.as_json()))
    else:
        table = Table(title="stored event types")
        for column in ("type", "version", "stored as", "events", "checked", "decodes"):
            table.add_column(column, justify="right" if column in ("events", "checked") else "left")
        for r in reports:
            table.add_row(
                r.name,
                str(r.version),
                r.stored_type,
                str(r.count),
                str(r.checked),
                "yes" if r.ok else f"[red]NO ({r.failed} failed)[/red]",
            )
        console = Console()
        console.print(table)
        for r in reports:
            if not r.ok:
                console.print(f"[red]{r.first_failure}[/red]", highlight=False)
        bad = sum(not r.ok for r in reports)
        total = sum(r.count for r in reports)
        console.print(
            f"{total} events of {len(reports)} stored types; "
            + (f"{bad} do not decode" if bad else "all decode")
        )
    if any(not r.ok for r in reports):
        raise SystemExit(EXIT_FAILURE)
