"""``eventcore bench``: the headline workloads, with progress bars and a table (or JSON).

The workloads, their timing and the repeat loop are :mod:`eventcore._bench`'s, the ones
``benches/headline.py`` (which also runs a peer library and is not installed with the
package) times for its ``memory.*`` keys: the shipped bank example, the median over
repetitions after a warm-up, the cyclic GC off while timing.
"""

from __future__ import annotations

import asyncio
import json
import platform
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

import eventcore
from eventcore._bench import DC, BankWorkloads, Body, Figure, fmt, measure, rate
from eventcore.cli._store import OpenStore, Options, open_store, run, store_options


@dataclass
class Sizes:
    """How much work one repetition does, and how many repetitions."""

    reps: int
    warmup: int
    commands: int
    batches: int
    reads: int


QUICK = Sizes(reps=3, warmup=1, commands=3_000, batches=10, reads=5)
FULL = Sizes(reps=7, warmup=2, commands=20_000, batches=50, reads=20)
POSTGRES_QUICK = Sizes(reps=3, warmup=1, commands=200, batches=3, reads=3)
POSTGRES_FULL = Sizes(reps=5, warmup=1, commands=1_000, batches=10, reads=10)

Workload = tuple[Figure, Callable[[], Awaitable[Body]]]


def workloads(opened: OpenStore, sizes: Sizes) -> list[Workload]:
    """A figure and its preparation for every workload, on fresh in-memory stores or on
    the opened PostgreSQL/SQLite store (streams ``bench-<run>-...``)."""
    kind = "memory" if opened.memory is not None else "postgres"
    if opened.sqlite is not None:
        kind = "sqlite"
    prefix = f"bench-{secrets.token_hex(3)}"
    bank = (
        BankWorkloads(DC, prefix=prefix)
        if opened.memory is not None
        else BankWorkloads(DC, lambda: opened.store, prefix=prefix)
    )
    n = sizes.commands
    return [
        (
            Figure(f"{kind}.command.cold", "commands/s", note="OpenAccount on a fresh stream"),
            lambda: bank.prepare_cold(n),
        ),
        (
            Figure(
                f"{kind}.command.warm100",
                "commands/s",
                note="Deposit on a stream of 100 events, state cached",
            ),
            lambda: bank.prepare_warm(max(1, n // 4)),
        ),
        (
            Figure(f"{kind}.transfer", "commands/s", note="two streams, one atomic write"),
            lambda: bank.prepare_transfer(max(1, n // 2)),
        ),
        (
            Figure(f"{kind}.append.batch1000", "events/s", note="1000 events in one append"),
            lambda: bank.prepare_append_batch(sizes.batches),
        ),
        (
            Figure(f"{kind}.read.1000", "events/s", note="read + decode a 1000-event stream"),
            lambda: bank.prepare_read(sizes.reads),
        ),
    ]


@click.command()
@store_options
@click.option("--quick", is_flag=True, help="Smaller sizes and fewer repetitions (seconds).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
@click.option("--only", default="", help="Run only workloads whose name contains this.")
def bench(
    dsn: str | None, schema: str, app: str | None, quick: bool, as_json: bool, only: str
) -> None:
    """Run the headline benchmarks (commands, transfers, appends, reads) and print a table.

    Runs on fresh in-memory stores by default. With --dsn it runs on PostgreSQL and
    WRITES benchmark streams (bench-*) into --schema: use a scratch database or schema.
    Progress bars go to stderr, so --json output can be piped.

    \b
    Examples:
      eventcore bench --quick
      eventcore bench --json > bench.json
      eventcore bench --dsn postgresql://app@localhost/scratch --schema bench --quick
    """

    async def go() -> None:
        async with open_store(
            Options(dsn, schema, app if dsn else None),
            default_memory=True,
            registry=DC.registry,
            create=True,
        ) as opened:
            if opened.postgres is not None or opened.sqlite is not None:
                if opened.postgres is not None:
                    await opened.postgres.migrate()
                sizes = POSTGRES_QUICK if quick else POSTGRES_FULL  # durable commits: fewer
            else:
                sizes = QUICK if quick else FULL
            chosen = [w for w in workloads(opened, sizes) if only in w[0].name]
            if not chosen:
                raise click.BadParameter(f"no workload name contains {only!r}", param_hint="--only")
            # The repetitions run on this loop; the repeat loop waits in a thread.
            loop = asyncio.get_running_loop()
            results = await asyncio.to_thread(_measure, loop, chosen, sizes)
        machine = {
            "eventcore": eventcore.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "store": opened.label,
            "mode": "quick" if quick else "full",
        }
        if as_json:
            doc = {"machine": machine, "workloads": {r.name: _as_json(r) for r in results}}
            click.echo(json.dumps(doc, indent=2))
            return
        table = Table(
            title=f"eventcore {machine['eventcore']} on {opened.label}, "
            f"python {machine['python']}, {machine['mode']} run"
        )
        table.add_column("workload", no_wrap=True)
        for column in ("median", "min", "max"):
            table.add_column(column, justify="right")
        table.add_column("unit")
        for r in results:
            table.add_row(r.name, fmt(r.value), fmt(min(r.samples)), fmt(max(r.samples)), r.unit)
        console = Console()
        console.print(table)
        for r in results:
            console.print(f"[dim]{r.name}: {r.note}[/]")

    run(go())


def _measure(loop: asyncio.AbstractEventLoop, chosen: list[Workload], sizes: Sizes) -> list[Figure]:
    """Time each workload on ``loop`` (from another thread), drawing progress bars."""
    progress = Progress(
        TextColumn("[bold]{task.description:<26}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )

    def repetition(prepare: Callable[[], Awaitable[Body]]) -> Callable[[], float]:
        async def once() -> float:
            return await rate(await prepare())

        return lambda: asyncio.run_coroutine_threadsafe(once(), loop).result()

    with progress:
        for fig, prepare in chosen:
            task = progress.add_task(fig.name, total=sizes.warmup + sizes.reps, rate="")

            def shown(f: Figure, sample: float | None, task: TaskID = task) -> None:
                shown_rate = f"{fmt(sample)} {f.unit}" if sample is not None else ""
                progress.update(task, advance=1, rate=shown_rate)

            measure([(fig, repetition(prepare))], sizes.reps, sizes.warmup, on_sample=shown)
    return [fig for fig, _ in chosen]


def _as_json(fig: Figure) -> dict[str, object]:
    """The fields ``eventcore bench --json`` prints per workload."""
    return {
        "value": fig.value,
        "unit": fig.unit,
        "min": min(fig.samples),
        "max": max(fig.samples),
        "reps": len(fig.samples),
        "note": fig.note,
    }
