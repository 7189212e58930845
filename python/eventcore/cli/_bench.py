"""``eventcore bench``: the headline workloads, with progress bars and a table (or JSON).

The workloads are small copies of those in the repository's ``benches/core.py`` (which
also runs a baseline library and is not installed with the package): the same bank
domain, median rate over repetitions after a warmup, cyclic GC off while timing.
"""

from __future__ import annotations

import gc
import json
import platform
import secrets
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import eventcore
from eventcore.cli._store import OpenStore, Options, open_store, run, store_options
from eventcore.examples import bank
from eventcore.executor import execute, execute_sync
from eventcore.memory import MemoryStore
from eventcore.recorded import NewEvent
from eventcore.stream import StreamId

_perf = time.perf_counter


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


@dataclass
class Result:
    """One workload's measured rates."""

    name: str
    unit: str
    note: str
    rates: list[float] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The result as a JSON-compatible dict."""
        return {
            "value": statistics.median(self.rates),
            "unit": self.unit,
            "min": min(self.rates),
            "max": max(self.rates),
            "reps": len(self.rates),
            "note": self.note,
        }


class Bench:
    """Runs the workloads on one opened store."""

    def __init__(self, opened: OpenStore, sizes: Sizes) -> None:
        self.opened = opened
        self.sizes = sizes
        self.run_id = secrets.token_hex(3)
        self.counter = 0
        self.enc = bank.registry.encode

    def ids(self, n: int) -> list[StreamId]:
        """``n`` stream ids never used before in this run."""
        self.counter += 1
        return [StreamId(f"bench-{self.run_id}-{self.counter}-{i}") for i in range(n)]

    def store(self) -> Any:
        """A fresh in-memory store, or the PostgreSQL store."""
        if self.opened.memory is not None:
            return MemoryStore(registry=bank.registry)
        return self.opened.store

    async def fill(self, store: Any, ids: list[StreamId], per_stream: int) -> None:
        """Give every stream ``per_stream`` events: opened, then deposits."""
        events = [self.enc(bank.AccountOpened("owner"))] + [
            self.enc(bank.Deposited(100)) for _ in range(per_stream - 1)
        ]
        batch: list[NewEvent] = []
        for s in ids:
            batch.extend(NewEvent(s, name, payload) for name, payload in events)
            if len(batch) >= 1000:
                await _append(store, batch)
                batch = []
        if batch:
            await _append(store, batch)

    async def cold(self) -> tuple[float, float]:
        """OpenAccount on fresh streams."""
        store, ids = self.store(), self.ids(self.sizes.commands)
        open_account = bank.OpenAccount
        if isinstance(store, MemoryStore):
            with _timing() as t:
                for s in ids:
                    execute_sync(store, open_account(account=s, owner="owner"))
        else:
            with _timing() as t:
                for s in ids:
                    await execute(store, open_account(account=s, owner="owner"))
        return len(ids), t.seconds

    async def warm(self) -> tuple[float, float]:
        """Deposit on streams of 100 events whose state is cached (warmed untimed first)."""
        n = max(1, self.sizes.commands // 4)
        store, ids = self.store(), self.ids(n)
        await self.fill(store, ids, 100)
        deposit, amount = bank.Deposit, bank.Money(100)
        if isinstance(store, MemoryStore):
            for s in ids:
                execute_sync(store, deposit(account=s, amount=amount))
            with _timing() as t:
                for s in ids:
                    execute_sync(store, deposit(account=s, amount=amount))
        else:
            for s in ids:
                await execute(store, deposit(account=s, amount=amount))
            with _timing() as t:
                for s in ids:
                    await execute(store, deposit(account=s, amount=amount))
        return len(ids), t.seconds

    async def transfer(self) -> tuple[float, float]:
        """Transfer between two streams of 2 events: one atomic write to both."""
        n = max(1, self.sizes.commands // 2)
        store, ids = self.store(), self.ids(2 * n)
        await self.fill(store, ids, 2)
        transfer, amount = bank.Transfer, bank.Money(1)
        pairs = list(zip(ids[0::2], ids[1::2], strict=True))
        if isinstance(store, MemoryStore):
            with _timing() as t:
                for a, b in pairs:
                    execute_sync(store, transfer(source=a, target=b, amount=amount))
        else:
            with _timing() as t:
                for a, b in pairs:
                    await execute(store, transfer(source=a, target=b, amount=amount))
        return len(pairs), t.seconds

    async def append_batch(self) -> tuple[float, float]:
        """Appends of 1000 events to one stream each."""
        store = self.store()
        name, payload = self.enc(bank.Deposited(100))
        batches = [
            [NewEvent(s, name, payload) for _ in range(1000)] for s in self.ids(self.sizes.batches)
        ]
        with _timing() as t:
            for batch in batches:
                await _append(store, batch)
        return 1000 * len(batches), t.seconds

    async def read(self) -> tuple[float, float]:
        """read_stream of streams of 1000 events (decoding the payloads)."""
        store, ids = self.store(), self.ids(self.sizes.reads)
        await self.fill(store, ids, 1000)
        count = 0
        if isinstance(store, MemoryStore):
            with _timing() as t:
                for s in ids:
                    for e in store.read_stream(s):
                        _ = e.data
                        count += 1
        else:
            with _timing() as t:
                for s in ids:
                    for e in await store.read_stream(s):
                        _ = e.data
                        count += 1
        return count, t.seconds

    def workloads(self) -> list[tuple[str, str, str, Callable[[], Awaitable[tuple[float, float]]]]]:
        """``(name, unit, note, run once)`` for every workload."""
        kind = "memory" if self.opened.memory is not None else "postgres"
        if self.opened.sqlite is not None:
            kind = "sqlite"
        return [
            (f"{kind}.command.cold", "commands/s", "OpenAccount on a fresh stream", self.cold),
            (
                f"{kind}.command.warm100",
                "commands/s",
                "Deposit on a stream of 100 events, state cached",
                self.warm,
            ),
            (f"{kind}.transfer", "commands/s", "two streams, one atomic write", self.transfer),
            (
                f"{kind}.append.batch1000",
                "events/s",
                "1000 events in one append",
                self.append_batch,
            ),
            (f"{kind}.read.1000", "events/s", "read + decode a 1000-event stream", self.read),
        ]


class _Timer:
    seconds = 0.0


class _timing:
    """Time a block with the cyclic GC collected before and disabled during it."""

    def __enter__(self) -> _Timer:
        gc.collect()
        gc.disable()
        self.timer = _Timer()
        self.started = _perf()
        return self.timer

    def __exit__(self, *exc: object) -> None:
        self.timer.seconds = _perf() - self.started
        gc.enable()


async def _append(store: Any, batch: list[NewEvent]) -> None:
    if isinstance(store, MemoryStore):
        store.append(batch)
    else:
        await store.append(batch)


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
            registry=bank.registry,
            create=True,
        ) as opened:
            if opened.postgres is not None or opened.sqlite is not None:
                if opened.postgres is not None:
                    await opened.postgres.migrate()
                sizes = POSTGRES_QUICK if quick else POSTGRES_FULL  # durable commits: fewer
            else:
                sizes = QUICK if quick else FULL
            results = await _measure(Bench(opened, sizes), sizes, only)
        machine = {
            "eventcore": eventcore.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "store": opened.label,
            "mode": "quick" if quick else "full",
        }
        if as_json:
            doc = {"machine": machine, "workloads": {r.name: r.as_json() for r in results}}
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
            data = r.as_json()
            table.add_row(r.name, _fmt(data["value"]), _fmt(data["min"]), _fmt(data["max"]), r.unit)
        console = Console()
        console.print(table)
        for r in results:
            console.print(f"[dim]{r.name}: {r.note}[/]")

    run(go())


async def _measure(b: Bench, sizes: Sizes, only: str) -> list[Result]:
    chosen = [w for w in b.workloads() if only in w[0]]
    if not chosen:
        raise click.BadParameter(f"no workload name contains {only!r}", param_hint="--only")
    results = []
    progress = Progress(
        TextColumn("[bold]{task.description:<26}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )
    with progress:
        for name, unit, note, once in chosen:
            result = Result(name, unit, note)
            task = progress.add_task(name, total=sizes.warmup + sizes.reps, rate="")
            for i in range(sizes.warmup + sizes.reps):
                units, seconds = await once()
                rate = units / seconds if seconds > 0 else float("inf")
                if i >= sizes.warmup:
                    result.rates.append(rate)
                progress.update(task, advance=1, rate=f"{_fmt(rate)} {unit}")
            results.append(result)
    return results


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if v >= 1000 else f"{v:,.1f}"
